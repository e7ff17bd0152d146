"""Rewards of a growing video, for RL: embed each new frame once, score the prefix seen so far.

`VideoReward.embed(frames (N, H, W, 3) uint8) -> (N, D)` and `.prefix_return(embeddings
(T, D)) -> float` are all an RL wrapper needs: the reward of step t is the change in prefix
return, so an episode's rewards sum to (final return − return of the first frame).
"""

from __future__ import annotations

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
    """

    def __init__(self, encoder: nn.Module, reference: torch.Tensor, config: OTRewardConfig = OTRewardConfig(), scale: float = 1.0) -> None:
        self.encoder, self.reference, self.config, self.scale = encoder.eval(), reference.detach().float(), config, scale

    @torch.no_grad()
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        return self.encoder(torch.as_tensor(np.ascontiguousarray(frames)).to(device)).float().cpu()

    @torch.no_grad()
    def prefix_return(self, embeddings: torch.Tensor) -> float:
        return self.scale * float(ot_step_rewards(embeddings[None], self.reference, self.config).sum())


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
