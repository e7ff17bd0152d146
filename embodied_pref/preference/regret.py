"""Regret preference model (Knox et al., "Models of human preference for learning reward
functions"): people prefer the segment that deviates less from optimal behaviour.

For a segment σ = (s_0, a_0, ..., s_L) under reward r with optimal values V*, Q*, A*:
- general form: regret(σ) = −Σ_t A*(s_t, a_t), A*(s, a) = Q*(s, a) − V*(s) <= 0;
- deterministic form: regret_d(σ) = V*(s_0) − (Σ_t γ^t r_t + γ^L V*(s_L)); with γ = 1 this is
  V*(s_0) − (Σ_t r_t + V*(s_L)). Under deterministic dynamics it equals −Σ_t γ^t A*(s_t, a_t).
P(σ_a ≻ σ_b) = sigmoid((regret(σ_b) − regret(σ_a)) / T). Equal regret gives 0.5; ties carry
the target 0.5. An optimal segment has regret 0.

The functions take torch tensors or numpy arrays alike; nothing here knows a domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def regret_from_advantages(advantages):
    """General form: advantages (..., L) of the steps taken, A*(s_t, a_t) -> regret (...)."""
    return -advantages.sum(-1)


def deterministic_regret(start_values, rewards, end_values, gamma: float = 1.0):
    """Deterministic form: V*(s_0) (...), rewards (..., L), V*(s_L) (...) -> regret (...).

    V*(s_0) − (Σ_t γ^t r_t + γ^L V*(s_L)); γ = 1 gives the undiscounted form of the paper."""
    length = rewards.shape[-1]
    partial_return = sum(gamma**t * rewards[..., t] for t in range(length))
    return start_values - (partial_return + gamma**length * end_values)


@dataclass(frozen=True)
class RegretModel:
    """Bradley-Terry preference model whose segment score is the negated regret."""

    temperature: float = 1.0
    """Divides the regret difference; larger means noisier, flatter preferences."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature: expected > 0, found {self.temperature}")

    def logits(self, regret_a: torch.Tensor, regret_b: torch.Tensor) -> torch.Tensor:
        """Log-odds that the first segment is preferred: regrets (...), (...) -> (...)."""
        return (regret_b - regret_a) / self.temperature

    def probability(self, regret_a: torch.Tensor, regret_b: torch.Tensor) -> torch.Tensor:
        """P(first ≻ second): (...), (...) -> (...)."""
        return torch.sigmoid(self.logits(regret_a, regret_b))

    def loss(self, regret_a: torch.Tensor, regret_b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy against targets (N,) in [0, 1]; 0.5 encodes a tie."""
        return F.binary_cross_entropy_with_logits(self.logits(regret_a, regret_b), targets)
