"""Bradley-Terry over partial return, the classic RLHF / PbRL preference model.

P(σ_a ≻ σ_b) = sigmoid((Σ_t r(σ_a)_t − Σ_t r(σ_b)_t) / T). Ties carry the target 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PartialReturnModel:
    """Bradley-Terry preference model whose segment score is the summed reward."""

    temperature: float = 1.0
    """Divides the return difference; larger means noisier, flatter preferences."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature: expected > 0, found {self.temperature}")

    def logits(self, rewards_a: torch.Tensor, rewards_b: torch.Tensor) -> torch.Tensor:
        """Log-odds that the first segment is preferred.

        rewards_a, rewards_b: (..., L) per-step rewards -> (...)
        """
        return (rewards_a.sum(-1) - rewards_b.sum(-1)) / self.temperature

    def probability(self, rewards_a: torch.Tensor, rewards_b: torch.Tensor) -> torch.Tensor:
        """P(first ≻ second): (..., L), (..., L) -> (...)."""
        return torch.sigmoid(self.logits(rewards_a, rewards_b))

    def loss(
        self, rewards_a: torch.Tensor, rewards_b: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy against targets (N,) in [0, 1]; 0.5 encodes a tie."""
        return F.binary_cross_entropy_with_logits(self.logits(rewards_a, rewards_b), targets)
