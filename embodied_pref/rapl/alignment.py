"""Representation alignment (RAPL): fit the encoder so that the OT reward against the
positive video ranks the neutral video above the negative one.

With r(o; o⁺) = −<P*, C> and P = exp r(o_neu) / (exp r(o_neu) + exp r(o_neg)) (both against
o⁺), RAPL's loss is 1 − P, and (0.5 − P)² for triplets whose neutral and negative are equal;
the Bradley-Terry option is −log P (binary cross-entropy with target 0.5 for equal).
Gradients flow through Sinkhorn into the encoder.

The anchor of that comparison is each triplet's positive video (the paper's loss). The reward
deployed afterwards compares videos with a reference demonstration instead; `anchor="reference"`
applies the same loss to the three pairs of each triplet scored against that reference
(positive ≻ neutral ≻ negative), and `"both"` sums the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied_pref.rapl.ot_reward import OTRewardConfig, ot_returns
from embodied_pref.rapl.training import OptimConfig, fit
from embodied_pref.rapl.triplets import Triplets

LOSSES = ("rapl", "bradley_terry")
Anchor = Literal["positive", "reference", "both"]
ANCHORS: tuple[str, ...] = get_args(Anchor)


@dataclass(frozen=True)
class AlignmentConfig:
    """Loss, OT reward and optimization of alignment training."""

    loss: str = "rapl"
    """"rapl" (1 − P, equal: (0.5 − P)²) or "bradley_terry" (−log P, equal: target 0.5)."""
    ot: OTRewardConfig = field(default_factory=OTRewardConfig)
    """Cost and Sinkhorn settings of the reward being aligned."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Epochs, batch size, learning rate, device, checkpoints."""
    anchor: Anchor = "positive"
    """What the videos are compared with: each triplet's "positive" video (the paper), the
    "reference" demonstration of the deployed reward, or "both" (the two losses summed)."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"field 'loss': expected one of {LOSSES}, found {self.loss!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"field 'anchor': expected one of {ANCHORS}, found {self.anchor!r}")


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


def _embeddings(model: nn.Module, videos: torch.Tensor, triplets: Triplets, reference: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Embeddings (K, T, D) of each triplet's positive, neutral and negative video, and of
    `reference` (T, D) when given; every distinct video goes through `model` once."""
    device = next(model.parameters()).device
    rows, slots = np.unique(np.concatenate([triplets.positive, triplets.neutral, triplets.negative]), return_inverse=True)
    batch = videos[torch.as_tensor(rows)]
    if reference is not None:
        batch = torch.cat([batch, reference[None].to(batch.device)])
    emb = model(batch.to(device)).float()
    e_pos, e_neu, e_neg = emb[torch.as_tensor(slots, device=device)].chunk(3)
    return e_pos, e_neu, e_neg, emb[-1] if reference is not None else None


def _against_positive(e_pos: torch.Tensor, e_neu: torch.Tensor, e_neg: torch.Tensor, ot: OTRewardConfig) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast(e_pos.device.type, enabled=False):
        return ot_returns(torch.cat([e_neu, e_neg]), torch.cat([e_pos, e_pos]), ot).chunk(2)


def triplet_returns(model: nn.Module, videos: torch.Tensor, triplets: Triplets, ot: OTRewardConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """OT returns of the neutral and negative videos against the positive one.

    model: videos (B, T, …) -> embeddings (B, T, D); videos: (N, T, …) -> two (K,) tensors.
    """
    e_pos, e_neu, e_neg, _ = _embeddings(model, videos, triplets)
    return _against_positive(e_pos, e_neu, e_neg, ot)


def _against_reference(e_pos: torch.Tensor, e_neu: torch.Tensor, e_neg: torch.Tensor, e_ref: torch.Tensor,
                       ot: OTRewardConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.autocast(e_pos.device.type, enabled=False):
        return ot_returns(torch.cat([e_pos, e_neu, e_neg]), e_ref, ot).chunk(3)


def reference_returns(model: nn.Module, videos: torch.Tensor, reference: torch.Tensor, triplets: Triplets,
                      ot: OTRewardConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OT returns against `reference` (T, …) of each triplet's positive, neutral and negative
    video: three (K,) tensors."""
    *embeddings, e_ref = _embeddings(model, videos, triplets, reference)
    return _against_reference(*embeddings, e_ref, ot)


@torch.no_grad()
def triplet_accuracy(model: nn.Module, videos: torch.Tensor, triplets: Triplets, ot: OTRewardConfig = OTRewardConfig(),
                     reference: torch.Tensor | None = None) -> float:
    """Fraction of non-equal triplets with r(neutral) > r(negative), against each triplet's
    positive video, or against `reference` (T, …) when given."""
    keep = ~triplets.equal
    if not keep.any():
        return float("nan")
    if reference is None:
        r_neu, r_neg = triplet_returns(model, videos, triplets[keep], ot)
    else:
        _, r_neu, r_neg = reference_returns(model, videos, reference, triplets[keep], ot)
    return float((r_neu > r_neg).float().mean())


def train_alignment(model: nn.Module, videos: torch.Tensor, triplets: Triplets, config: AlignmentConfig = AlignmentConfig(),
                    reference: torch.Tensor | None = None) -> list[dict]:
    """Aligns `model` (videos (B, T, …) -> embeddings (B, T, D)) on ranked triplets of `videos`
    (N, T, …): frames (uint8 (N, T, H, W, 3)) for full fine-tuning, or precomputed backbone
    features ((N, T, F) float) with a projection-only model; `reference` (T, …), in the same
    form, is needed with `config.anchor` "reference" or "both". Returns the per-epoch history
    (loss, triplet accuracy on the batch)."""
    if len(triplets) == 0:
        raise ValueError("triplets: expected at least one triplet, found none")
    if config.anchor != "positive" and reference is None:
        raise ValueError(f"reference: anchor {config.anchor!r} needs the reference video, found None")

    def batch_loss(net: nn.Module, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        batch = triplets[indices.cpu().numpy()]
        equal = torch.as_tensor(batch.equal, device=indices.device)
        e_pos, e_neu, e_neg, e_ref = _embeddings(net, videos, batch, None if config.anchor == "positive" else reference)
        loss = torch.zeros((), device=indices.device)
        if config.anchor != "reference":
            r_neu, r_neg = _against_positive(e_pos, e_neu, e_neg, config.ot)
            loss = loss + alignment_loss(r_neu, r_neg, equal, config.loss).mean()
        if e_ref is not None:  # the three pairs of each triplet, scored against the reference
            r_pos, r_neu, r_neg = _against_reference(e_pos, e_neu, e_neg, e_ref, config.ot)
            loss = loss + alignment_loss(torch.cat([r_pos, r_pos, r_neu]), torch.cat([r_neu, r_neg, r_neg]),
                                         torch.cat([torch.zeros_like(equal), torch.zeros_like(equal), equal]), config.loss).mean()
        accuracy = float((r_neu > r_neg)[~equal].float().mean()) if (~equal).any() else float("nan")
        return loss, {"accuracy": accuracy}

    return fit(model, batch_loss, len(triplets), config.optim, desc="alignment")
