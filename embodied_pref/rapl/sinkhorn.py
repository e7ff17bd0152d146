"""Entropic optimal transport between two point clouds with uniform marginals (Sinkhorn),
batched, stabilized where the cost range needs it, differentiable by unrolling its iterations.

For a cost C (B, N, M) and entropic weight ε the plan is

    P* = argmin_P <P, C> − ε H(P)   s.t.  P 1 = 1/N,  Pᵀ 1 = 1/M,

the plan POT's `ot.sinkhorn(a, b, C, reg=ε)` returns for uniform a, b. It has the form
P = diag(u) K diag(v) with the kernel K = exp(−C / ε) and scalings u (B, N), v (B, M); the
stabilized path also carries dual potentials f (B, N), g (B, M) in the kernel,
K = exp((f_i + g_j − C_ij) / ε), so that small ε does not underflow.
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
    """Upper bound on Sinkhorn iterations (each updates both scalings)."""
    tolerance: float = 1e-6
    """Stop once every problem's row marginal is within this L1 distance of 1/N; 0 runs all
    `max_iterations` (a fixed iteration count, e.g. for gradient checks). float32 rounding
    alone leaves about 1e-7, so a smaller tolerance there runs all `max_iterations`."""

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"field 'epsilon': expected a positive float, found {self.epsilon!r}")
        if self.max_iterations < 1:
            raise ValueError(f"field 'max_iterations': expected an int >= 1, found {self.max_iterations!r}")
        if self.tolerance < 0:
            raise ValueError(f"field 'tolerance': expected a float >= 0, found {self.tolerance!r}")


def sinkhorn_plan(cost: torch.Tensor, config: SinkhornConfig = SinkhornConfig()) -> torch.Tensor:
    """The entropic OT plan between uniform marginals.

    cost: (B, N, M) or (N, M) float -> plan of the same shape and dtype; each plan sums to 1,
    its rows to 1/N and its columns to 1/M. Gradients flow to `cost` through the iterations.

    When the cost's range (max C − min C) / ε is at most `PLAIN_KERNEL_RANGE` (a cosine cost
    with ε ≥ 0.1), plain Sinkhorn iterates on the kernel exp((min C − C) / ε) from v = 1.
    Otherwise the potentials start from the hard-min (ε → 0) solution, which keeps every row
    and column of the kernel away from underflow, and the scalings are absorbed into f, g
    whenever |log u| or |log v| exceeds `ABSORB_AT`. Either way the iterations are scalings
    (batched matrix-vector products), so nothing overflows or underflows at the plain speed.
    """
    squeeze = cost.dim() == 2
    if squeeze:
        cost = cost.unsqueeze(0)
    if cost.dim() != 3:
        raise ValueError(f"cost: expected shape (B, N, M) or (N, M), found {tuple(cost.shape)}")
    n, m = cost.shape[1:]
    eps = config.epsilon
    with torch.no_grad():
        low, high = float(cost.amin()), float(cost.amax())
    stabilized = not high - low <= PLAIN_KERNEL_RANGE * eps  # also when the cost holds a NaN
    if stabilized:
        f = eps * -math.log(n) + cost.amin(dim=2, keepdim=True)
        g = eps * -math.log(m) + (cost - f).amin(dim=1, keepdim=True)
        k = _kernel(cost, f, g, eps)
    else:
        k = torch.rsub(cost, low / eps, alpha=1 / eps).exp_()
    # The scalings are row vectors, u (B, 1, N) and v (B, 1, M), so both products are bmm; the
    # marginals are 0-dim tensors, which spares converting a Python number at every use.
    row_mass, column_mass = cost.new_full((), 1.0 / n), cost.new_full((), 1.0 / m)
    kv = k.sum(2).unsqueeze(1)
    for iteration in range(config.max_iterations):
        check_due = 0 < iteration and (iteration <= 2 * CHECK_EVERY or iteration % CHECK_EVERY == 0)
        if config.tolerance > 0 and check_due:
            # After the v update the columns are exact; the rows measure convergence.
            with torch.no_grad():
                if float((u * kv).sub_(row_mass).abs_().sum(2).amax()) < config.tolerance:
                    break
        u = torch.div(row_mass, kv)
        v = torch.div(column_mass, torch.bmm(u, k))
        if stabilized:
            with torch.no_grad():
                absorb = float(torch.maximum(u.log().abs().amax(), v.log().abs().amax())) > ABSORB_AT
            if absorb:
                f, g = f + eps * torch.log(u.mT), g + eps * torch.log(v)
                k = _kernel(cost, f, g, eps)
                u, v = torch.ones_like(u), torch.ones_like(v)
        kv = torch.bmm(v, k.mT)
    if torch.is_grad_enabled() and cost.requires_grad:
        plan = u.mT * k * v
    else:
        plan = k.mul_(u.mT).mul_(v)  # no graph holds k: scale it in place, sparing a B×N×M buffer
    return plan.squeeze(0) if squeeze else plan


def _kernel(cost: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """exp((f_i + g_j − C_ij) / ε): cost (B, N, M), f (B, N, 1), g (B, 1, M) -> (B, N, M)."""
    return (f + g).sub_(cost).div_(eps).exp_()


PLAIN_KERNEL_RANGE = 20.0
"""Largest (max C − min C) / ε iterated on the plain kernel: its entries then lie in
[e^-20, 1] and the scalings spread by about as much, far from float32's limits (e^±87)."""
ABSORB_AT = 30.0
"""Scalings are folded into the log potentials once |log u| or |log v| exceeds this."""
CHECK_EVERY = 4
"""Iterations between convergence checks (each is a reduction and a sync) once the first
2 × CHECK_EVERY, which are all checked, have run: ε = 1 with a cosine cost needs 3 to 5."""


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
