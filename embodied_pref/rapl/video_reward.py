"""Rewards of a growing video, for RL: embed each new frame once, score the prefix seen so far.

`VideoReward.embed(frames (N, H, W, 3) uint8) -> (N, D)` and `.prefix_return(embeddings
(T, D)) -> float` are all an RL wrapper needs: the reward of step t is the change in prefix
return, so an episode's rewards sum to (final return − return of the first frame).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import nn

from embodied_pref.rapl.ot_reward import OTRewardConfig, ot_step_rewards


class VideoReward(Protocol):
    """Scores videos from per-frame embeddings."""

    def embed(self, frames: np.ndarray) -> torch.Tensor: ...

    def prefix_return(self, embeddings: torch.Tensor) -> float: ...


class OTVideoReward:
    """RAPL / OT reward: return −<P*, C> of the prefix against a reference video.

    encoder: frames (N, H, W, 3) uint8 -> (N, D); reference: (M, D) embeddings of o⁺.
    `scale` multiplies the return (OT returns lie in [−2, 0] for the cosine cost).

    With `horizon` (frames in a whole episode's video) a prefix of k frames is matched with the
    reference's first ⌈k·M / horizon⌉ frames, where the demonstration was at the same point of
    its episode, instead of with all of it: a whole video's return is unchanged, but each step
    pays for keeping pace with the demonstration rather than for resembling its end early.
    """

    def __init__(self, encoder: nn.Module, reference: torch.Tensor, config: OTRewardConfig = OTRewardConfig(), scale: float = 1.0,
                 horizon: int | None = None) -> None:
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon: expected a number of frames >= 1, found {horizon!r}")
        self.encoder, self.reference, self.config, self.scale = encoder.eval(), reference.detach().float(), config, scale
        self.horizon = horizon

    @torch.no_grad()
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        return self.encoder(torch.as_tensor(np.ascontiguousarray(frames)).to(device)).float().cpu()

    @torch.no_grad()
    def prefix_return(self, embeddings: torch.Tensor) -> float:
        reference = self.reference
        if self.horizon is not None:
            reference = reference[: math.ceil(len(embeddings) * len(reference) / self.horizon)]
        return self.scale * float(ot_step_rewards(embeddings[None], reference, self.config).sum())


class FrameVideoReward:
    """A per-frame scalar reward (RLHF): the prefix return is the sum of frame rewards.

    model: frames (N, H, W, 3) uint8 -> (N,) rewards.
    """

    def __init__(self, model: nn.Module, scale: float = 1.0) -> None:
        self.model, self.scale = model.eval(), scale

    @torch.no_grad()
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(torch.as_tensor(np.ascontiguousarray(frames)).to(device)).float().cpu().reshape(-1, 1)

    def prefix_return(self, embeddings: torch.Tensor) -> float:
        return self.scale * float(embeddings.sum())
