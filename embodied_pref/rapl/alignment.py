"""Representation alignment (RAPL): fit the encoder so that the OT reward against the
positive video ranks the neutral video above the negative one.

With r(o; o⁺) = −<P*, C> and P = exp r(o_neu) / (exp r(o_neu) + exp r(o_neg)) (both against
o⁺), RAPL's loss is 1 − P, and (0.5 − P)² for triplets whose neutral and negative are equal;
the Bradley-Terry option is −log P (binary cross-entropy with target 0.5 for equal).
Gradients flow through Sinkhorn into the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from embodied_pref.rapl.ot_reward import OTRewardConfig, ot_returns
from embodied_pref.rapl.training import OptimConfig, fit
from embodied_pref.rapl.triplets import Triplets

LOSSES = ("rapl", "bradley_terry")


@dataclass(frozen=True)
class AlignmentConfig:
    """Loss, OT reward and optimization of alignment training."""

    loss: str = "rapl"
    """"rapl" (1 − P, equal: (0.5 − P)²) or "bradley_terry" (−log P, equal: target 0.5)."""
    ot: OTRewardConfig = field(default_factory=OTRewardConfig)
    """Cost and Sinkhorn settings of the reward being aligned."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Epochs, batch size, learning rate, device, checkpoints."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"field 'loss': expected one of {LOSSES}, found {self.loss!r}")


def alignment_loss(r_neutral: torch.Tensor, r_negative: torch.Tensor, equal: torch.Tensor, kind: str = "rapl") -> torch.Tensor:
    """Per-triplet loss: r_neutral, r_negative (K,) OT returns against the positive; equal (K,) bool."""
    logit = (r_neutral - r_negative).float()
    p = torch.sigmoid(logit)
    if kind == "rapl":
        return torch.where(equal, (0.5 - p) ** 2, 1.0 - p)
    if kind == "bradley_terry":
        target = torch.where(equal, torch.full_like(p, 0.5), torch.ones_like(p))
        return F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    raise ValueError(f"loss: expected one of {LOSSES}, found {kind!r}")


def triplet_returns(model: nn.Module, videos: torch.Tensor, triplets: Triplets, ot: OTRewardConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """OT returns of the neutral and negative videos against the positive one.

    model: videos (B, T, …) -> embeddings (B, T, D); videos: (N, T, …) -> two (K,) tensors.
    """
    device = next(model.parameters()).device
    rows = torch.as_tensor(list(triplets.positive) + list(triplets.neutral) + list(triplets.negative))
    emb = model(videos[rows].to(device))
    e_pos, e_neu, e_neg = emb.float().chunk(3)
    with torch.autocast(device.type, enabled=False):
        returns = ot_returns(torch.cat([e_neu, e_neg]), torch.cat([e_pos, e_pos]), ot)
    return returns.chunk(2)


@torch.no_grad()
def triplet_accuracy(model: nn.Module, videos: torch.Tensor, triplets: Triplets, ot: OTRewardConfig = OTRewardConfig()) -> float:
    """Fraction of non-equal triplets with r(neutral; positive) > r(negative; positive)."""
    keep = ~triplets.equal
    if not keep.any():
        return float("nan")
    r_neu, r_neg = triplet_returns(model, videos, triplets[keep], ot)
    return float((r_neu > r_neg).float().mean())


def train_alignment(model: nn.Module, videos: torch.Tensor, triplets: Triplets, config: AlignmentConfig = AlignmentConfig()) -> list[dict]:
    """Aligns `model` (videos (B, T, …) -> embeddings (B, T, D)) on ranked triplets of `videos`
    (N, T, …): frames (uint8 (N, T, H, W, 3)) for full fine-tuning, or precomputed backbone
    features ((N, T, F) float) with a projection-only model. Returns the per-epoch history
    (loss, triplet accuracy on the batch)."""
    if len(triplets) == 0:
        raise ValueError("triplets: expected at least one triplet, found none")

    def batch_loss(net: nn.Module, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        batch = triplets[indices.cpu().numpy()]
        r_neu, r_neg = triplet_returns(net, videos, batch, config.ot)
        equal = torch.as_tensor(batch.equal, device=indices.device)
        loss = alignment_loss(r_neu, r_neg, equal, config.loss).mean()
        accuracy = float((r_neu > r_neg)[~equal].float().mean()) if (~equal).any() else float("nan")
        return loss, {"accuracy": accuracy}

    return fit(model, batch_loss, len(triplets), config.optim, desc="alignment")
