"""The RLHF baseline: a per-frame scalar reward on the same backbone, fit with Bradley-Terry
on summed clip rewards over the three pairwise preferences in each ranked triplet."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied_pref.rapl.encoder import FrameEncoder
from embodied_pref.rapl.training import OptimConfig, fit
from embodied_pref.rapl.triplets import Triplets


class FrameRewardHead(nn.Module):
    """features (…, F) -> per-frame reward (…): Linear(F, hidden) → ReLU → Linear(hidden, 1),
    the same width as RAPL's projection."""

    def __init__(self, feature_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


class PixelReward(nn.Module):
    """frames (…, H, W, 3) uint8 -> per-frame reward (…): encoder backbone + scalar head."""

    def __init__(self, encoder: FrameEncoder, hidden: int = 32) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = FrameRewardHead(encoder.feature_dim, hidden)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(frames))


@dataclass(frozen=True)
class RLHFConfig:
    """Optimization of the RLHF baseline."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    """Epochs, batch size (triplets), learning rate, device, checkpoints."""


def clip_returns(model: nn.Module, videos: torch.Tensor) -> torch.Tensor:
    """Summed per-frame reward: videos (B, T, …) -> (B,)."""
    return model(videos).float().sum(dim=1)


def train_rlhf(model: nn.Module, videos: torch.Tensor, triplets: Triplets, config: RLHFConfig = RLHFConfig()) -> list[dict]:
    """Fits `model` (videos (B, T, …) -> per-frame rewards (B, T)) with Bradley-Terry on the
    pairs (pos, neu), (pos, neg), (neu, neg) of each triplet of `videos` (N, T, …)."""
    if len(triplets) == 0:
        raise ValueError("triplets: expected at least one triplet, found none")

    def batch_loss(net: nn.Module, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        first, second, target = triplets[indices.cpu().numpy()].pairs()
        device = indices.device
        # Each video once, however many of the batch's pairs it is in.
        rows, where = np.unique(np.concatenate([first, second]), return_inverse=True)
        returns = clip_returns(net, videos[torch.as_tensor(rows)].to(device))[torch.as_tensor(where, device=device)]
        logit = returns[: len(first)] - returns[len(first):]
        target_t = torch.as_tensor(target, device=device)
        loss = F.binary_cross_entropy_with_logits(logit, target_t)
        strict = target_t == 1.0
        accuracy = float((logit[strict] > 0).float().mean()) if strict.any() else float("nan")
        return loss, {"accuracy": accuracy}

    return fit(model, batch_loss, len(triplets), config.optim, desc="rlhf")
