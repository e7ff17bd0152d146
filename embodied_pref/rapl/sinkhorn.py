"""Entropic optimal transport between two point clouds with uniform marginals (Sinkhorn),
batched, log-domain stabilized, differentiable by unrolling its iterations.

For a cost C (B, N, M) and entropic weight ε the plan is

    P* = argmin_P <P, C> − ε H(P)   s.t.  P 1 = 1/N,  Pᵀ 1 = 1/M,

the plan POT's `ot.sinkhorn(a, b, C, reg=ε)` returns for uniform a, b. The dual potentials
f (B, N), g (B, M) carry the scale (see `sinkhorn_plan`), so small ε does not underflow,
and P = exp((f_i + g_j − C_ij) / ε).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SinkhornConfig:
    """How the plan is solved."""

    epsilon: float = 1.0
    """Entropic weight ε (RAPL uses 1 with a cosine cost)."""
    max_iterations: int = 100
    """Upper bound on Sinkhorn iterations (each updates both potentials)."""
    tolerance: float = 1e-6
    """Stop once every problem's row marginal is within this L1 distance of 1/N; 0 runs all
    `max_iterations` (a fixed iteration count, e.g. for gradient checks)."""

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"field 'epsilon': expected a positive float, found {self.epsilon!r}")
        if self.max_iterations < 1:
            raise ValueError(f"field 'max_iterations': expected an int >= 1, found {self.max_iterations!r}")
        if self.tolerance < 0:
            raise ValueError(f"field 'tolerance': expected a float >= 0, found {self.tolerance!r}")


def sinkhorn_plan(cost: torch.Tensor, config: SinkhornConfig = SinkhornConfig()) -> torch.Tensor:
    """The entropic OT plan between uniform marginals.

    cost: (B, N, M) or (N, M) float -> plan of the same shape; each plan sums to 1, its rows
    to 1/N and its columns to 1/M. Gradients flow to `cost` through the iterations.

    The potentials start from the hard-min (ε → 0) solution, which keeps every row and column
    of the stabilized kernel exp((f_i + g_j − C_ij) / ε) away from underflow; the iterations
    then run as scalings u (B, N), v (B, M) of that kernel (batched matrix-vector products),
    absorbed into f, g whenever |log u| or |log v| exceeds `ABSORB_AT` — so nothing
    overflows or underflows, at the speed of the plain algorithm.
    """
    squeeze = cost.dim() == 2
    if squeeze:
        cost = cost.unsqueeze(0)
    if cost.dim() != 3:
        raise ValueError(f"cost: expected shape (B, N, M) or (N, M), found {tuple(cost.shape)}")
    batch, n, m = cost.shape
    eps = config.epsilon
    f = eps * -math.log(n) + cost.amin(dim=2)
    g = eps * -math.log(m) + (cost - f.unsqueeze(2)).amin(dim=1)

    def kernel(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.exp((f.unsqueeze(2) + g.unsqueeze(1) - cost) / eps)

    k = kernel(f, g)
    u = torch.ones(batch, n, dtype=cost.dtype, device=cost.device)
    v = torch.ones(batch, m, dtype=cost.dtype, device=cost.device)
    for iteration in range(config.max_iterations):
        kv = (k * v.unsqueeze(1)).sum(2)
        if config.tolerance > 0 and iteration > 0 and iteration % CHECK_EVERY == 0:
            # After the v update the columns are exact; the rows measure convergence.
            with torch.no_grad():
                if (u * kv - 1.0 / n).abs().sum(dim=1).max() < config.tolerance:
                    break
        u = (1.0 / n) / kv
        v = (1.0 / m) / (k * u.unsqueeze(2)).sum(1)
        with torch.no_grad():
            absorb = bool(torch.maximum(u.abs().log().abs().max(), v.abs().log().abs().max()) > ABSORB_AT)
        if absorb:
            f, g = f + eps * torch.log(u), g + eps * torch.log(v)
            k = kernel(f, g)
            u, v = torch.ones_like(u), torch.ones_like(v)
    plan = u.unsqueeze(2) * k * v.unsqueeze(1)
    return plan.squeeze(0) if squeeze else plan


ABSORB_AT = 30.0
"""Scalings are folded into the log potentials once |log u| or |log v| exceeds this."""
CHECK_EVERY = 5
"""Iterations between convergence checks."""


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity: x (B, N, D), y (B, M, D) -> (B, N, M) in [0, 2]."""
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.nn.functional.normalize(y, dim=-1)
    return 1.0 - x @ y.transpose(-1, -2)


def euclidean_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distance: x (B, N, D), y (B, M, D) -> (B, N, M)."""
    return torch.cdist(x, y)


COSTS = {"cosine": cosine_cost, "euclidean": euclidean_cost}
"""Cost functions by name."""


def pairwise_cost(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cost named `name` ("cosine" or "euclidean") between x (B, N, D) and y (B, M, D)."""
    if name not in COSTS:
        raise ValueError(f"cost: expected one of {sorted(COSTS)}, found {name!r}")
    return COSTS[name](x, y)
