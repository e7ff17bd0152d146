"""RAPL's optimal-transport reward of a video against a reference video.

With embeddings e(o) (T, D) of the video and e(o⁺) (M, D) of the reference, the cost
C_tj = cost(e(o)_t, e(o⁺)_j), the Sinkhorn plan P* (uniform marginals) and the per-step
reward r_t = −Σ_j P*_tj C_tj; the video's return is Σ_t r_t = −<P*, C>.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from embodied_pref.rapl.sinkhorn import SinkhornConfig, pairwise_cost, sinkhorn_plan


@dataclass(frozen=True)
class OTRewardConfig:
    """Cost and solver of the OT reward."""

    cost: str = "cosine"
    """"cosine" (RAPL) or "euclidean"."""
    sinkhorn: SinkhornConfig = field(default_factory=SinkhornConfig)
    """Entropic weight and stopping rule."""


def ot_step_rewards(
    video: torch.Tensor, reference: torch.Tensor, config: OTRewardConfig = OTRewardConfig()
) -> torch.Tensor:
    """Per-step OT rewards r_t = −Σ_j P*_tj C_tj.

    video: (B, T, D) embeddings; reference: (B, M, D) or (M, D) (shared) -> (B, T).
    """
    if video.dim() != 3:
        raise ValueError(f"video: expected embeddings (B, T, D), found {tuple(video.shape)}")
    if reference.dim() == 2:
        reference = reference.unsqueeze(0).expand(video.shape[0], -1, -1)
    if reference.dim() != 3 or reference.shape[0] != video.shape[0] or reference.shape[2] != video.shape[2]:
        raise ValueError(
            f"reference: expected (B, M, D) or (M, D) matching video {tuple(video.shape)}, "
            f"found {tuple(reference.shape)}"
        )
    cost = pairwise_cost(config.cost, video.float(), reference.float())
    plan = sinkhorn_plan(cost, config.sinkhorn)
    return -(plan * cost).sum(dim=2)


def ot_returns(
    video: torch.Tensor, reference: torch.Tensor, config: OTRewardConfig = OTRewardConfig()
) -> torch.Tensor:
    """OT return −<P*, C> per video: video (B, T, D), reference (B, M, D) or (M, D) -> (B,)."""
    return ot_step_rewards(video, reference, config).sum(dim=1)


def best_reference(scores: Sequence[float]) -> int:
    """Index of the reference demonstration: the best-scored of a small set (e.g. the one the
    person prefers, or the highest ground-truth preference return)."""
    if len(scores) == 0:
        raise ValueError("scores: expected at least one candidate demonstration, found none")
    return int(np.argmax(np.asarray(scores, dtype=np.float64)))
