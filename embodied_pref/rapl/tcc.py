"""Temporal cycle consistency (TCC; Dwibedi et al. 2019), the self-supervised objective XIRL
trains its encoder with on unlabeled demonstrations.

For embeddings U (T, D), V (T', D) of two videos and each frame u_i: the soft nearest
neighbour ṽ = Σ_j α_j v_j with α = softmax(−‖u_i − v_j‖² / τ); cycling back,
β = softmax(−‖ṽ − u_k‖² / τ) and the cycle-back regression loss
(i − μ)² / σ² + λ log σ with μ = Σ_k β_k k, σ² = Σ_k β_k (k − μ)².
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from embodied_pref.rapl.training import OptimConfig, fit


@dataclass(frozen=True)
class TCCConfig:
    """TCC loss and optimization."""

    temperature: float = 0.1
    """Softmax temperature τ of both soft nearest-neighbour steps."""
    variance_weight: float = 0.001
    """λ of the log σ term."""
    normalize: bool = True
    """L2-normalize embeddings before distances."""
    frames_per_video: int = 0
    """Frames drawn (sorted, at random) from each video per step; 0 uses all."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=4, learning_rate=1e-4))
    """Epochs, batch size (videos, ≥ 2), learning rate, device, checkpoints."""


def tcc_loss(embeddings: torch.Tensor, temperature: float = 0.1, variance_weight: float = 0.001, normalize: bool = True) -> torch.Tensor:
    """Mean cycle-back regression loss over all ordered pairs of videos: embeddings (B, T, D), B >= 2."""
    b, t, _ = embeddings.shape
    if b < 2:
        raise ValueError(f"embeddings: expected at least 2 videos, found shape {tuple(embeddings.shape)}")
    emb = F.normalize(embeddings.float(), dim=-1) if normalize else embeddings.float()
    first, second = zip(*[(i, j) for i in range(b) for j in range(b) if i != j])
    u, v = emb[list(first)], emb[list(second)]                       # (P, T, D)
    alpha = torch.softmax(-torch.cdist(u, v) ** 2 / temperature, dim=-1)   # (P, T, T)
    nearest = alpha @ v                                                 # (P, T, D)
    beta = torch.softmax(-torch.cdist(nearest, u) ** 2 / temperature, dim=-1)
    steps = torch.arange(t, dtype=emb.dtype, device=emb.device)
    mu = beta @ steps
    var = (beta * (steps.view(1, 1, t) - mu.unsqueeze(-1)) ** 2).sum(-1).clamp_min(1e-6)
    loss = (steps.view(1, t) - mu) ** 2 / var + variance_weight * 0.5 * torch.log(var)
    return loss.mean()


def train_tcc(model: nn.Module, videos: torch.Tensor, config: TCCConfig = TCCConfig()) -> list[dict]:
    """Trains `model` (videos (B, T, …) -> embeddings (B, T, D)) with TCC on `videos` (N, T, …),
    e.g. uint8 demonstration frames (N, T, H, W, 3). Returns the per-epoch history."""
    if len(videos) < 2:
        raise ValueError(f"videos: TCC needs at least 2 videos, found {len(videos)}")
    generator = torch.Generator().manual_seed(config.optim.seed)

    def batch_loss(net: nn.Module, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if len(indices) < 2:
            indices = torch.cat([indices, (indices + 1) % len(videos)])
        batch = videos[indices.cpu()]
        if 0 < config.frames_per_video < batch.shape[1]:
            keep = torch.randperm(batch.shape[1], generator=generator)[: config.frames_per_video].sort().values
            batch = batch[:, keep]
        emb = net(batch.to(indices.device))
        return tcc_loss(emb, config.temperature, config.variance_weight, config.normalize), {}

    return fit(model, batch_loss, len(videos), config.optim, desc="tcc")
