import math

import numpy as np
import ot
import pytest
import torch

from embodied_pref.rapl import sinkhorn
from embodied_pref.rapl.sinkhorn import SinkhornConfig, cosine_cost, euclidean_cost, pairwise_cost, sinkhorn_plan


def _cosine_problems(batch: int, n: int, m: int, seed: int = 0) -> torch.Tensor:
    """Cosine costs (batch, n, m) float64 between random 4-dim embeddings: range/ε ≤ 2/ε."""
    g = torch.Generator().manual_seed(seed)
    return cosine_cost(torch.randn(batch, n, 4, generator=g, dtype=torch.float64),
                       torch.randn(batch, m, 4, generator=g, dtype=torch.float64))


def _pot_log_domain(cost: np.ndarray, epsilon: float) -> np.ndarray:
    """POT's log-domain plan of one (n, m) problem with uniform marginals, run to 1e-13."""
    n, m = cost.shape
    return ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), cost, reg=epsilon, method="sinkhorn_log",
                       numItermax=100_000, stopThr=1e-13)


@pytest.mark.parametrize("shape,epsilon", [((7, 9), 1.0), ((12, 5), 0.1), ((20, 20), 0.05)])
def test_plan_matches_pot(shape, epsilon):
    rng = np.random.default_rng(0)
    cost = rng.uniform(0, 2, size=shape)
    n, m = shape
    expected = ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), cost, reg=epsilon, numItermax=10_000, stopThr=1e-12)
    plan = sinkhorn_plan(torch.tensor(cost), SinkhornConfig(epsilon=epsilon, max_iterations=10_000, tolerance=1e-12))
    np.testing.assert_allclose(plan.numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(plan.sum(1).numpy(), np.full(n, 1 / n), atol=1e-8)
    np.testing.assert_allclose(plan.sum(0).numpy(), np.full(m, 1 / m), atol=1e-8)


# ε = 1 and 0.1 take the plain kernel, 0.01 the stabilized one (range/ε ≈ 200). float32 plans stop
# at 1e-6, near float32's rounding, and land within 3e-7 of POT's float64 plans.
@pytest.mark.parametrize("dtype,tolerance,atol", [(torch.float64, 1e-13, 1e-10), (torch.float32, 1e-6, 1e-6)])
@pytest.mark.parametrize("epsilon", [1.0, 0.1, 0.01])
def test_plans_match_pot_sinkhorn_and_solve_batch(epsilon, dtype, tolerance, atol):
    cost = _cosine_problems(3, 9, 7)
    one_at_a_time = np.stack([_pot_log_domain(c, epsilon) for c in cost.numpy()])
    batched = ot.solve_batch(cost, reg=epsilon, method="log_sinkhorn", max_iter=100_000, tol=1e-13).plan
    plan = sinkhorn_plan(cost.to(dtype), SinkhornConfig(epsilon=epsilon, max_iterations=100_000, tolerance=tolerance))
    assert plan.dtype == dtype
    np.testing.assert_allclose(plan.double().numpy(), one_at_a_time, atol=atol, rtol=0)
    torch.testing.assert_close(plan.double(), batched, atol=atol, rtol=0)


def _stabilized_kernels(monkeypatch) -> list:
    """Records every stabilized kernel exp((f + g − C) / ε) that `sinkhorn_plan` builds."""
    built, kernel = [], sinkhorn._kernel

    def spy(*args):
        built.append(args)
        return kernel(*args)

    monkeypatch.setattr(sinkhorn, "_kernel", spy)
    return built


def test_narrow_cost_range_takes_the_plain_path(monkeypatch):
    built = _stabilized_kernels(monkeypatch)
    cost = _cosine_problems(4, 10, 8)
    config = SinkhornConfig(epsilon=1.0, max_iterations=1000, tolerance=1e-12)
    plain = sinkhorn_plan(cost, config)
    assert built == []
    monkeypatch.setattr(sinkhorn, "PLAIN_KERNEL_RANGE", 0.0)
    torch.testing.assert_close(sinkhorn_plan(cost, config), plain, atol=1e-12, rtol=0)
    assert built


def test_wide_cost_range_takes_the_stabilized_path(monkeypatch):
    built = _stabilized_kernels(monkeypatch)
    # Row 0 lies 1.5 above the rest: with ε = 0.01 its plain float32 kernel underflows to 0.
    cost = 2 * torch.rand(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cost[0] += 1.5
    expected = _pot_log_domain(cost.numpy(), 0.01)
    config = SinkhornConfig(epsilon=0.01, max_iterations=10_000, tolerance=1e-6)
    np.testing.assert_allclose(sinkhorn_plan(cost.float(), config).double().numpy(), expected, atol=1e-6, rtol=0)
    assert built
    monkeypatch.setattr(sinkhorn, "PLAIN_KERNEL_RANGE", math.inf)
    plain = sinkhorn_plan(cost.float(), SinkhornConfig(epsilon=0.01, max_iterations=100, tolerance=1e-6))
    assert not np.allclose(plain.double().numpy(), expected, atol=1e-3)


def test_plain_kernel_is_taken_relative_to_the_cost_minimum():
    # exp(−1000) underflows even in float64; the plan does not depend on a constant offset.
    cost = _cosine_problems(2, 6, 5)
    config = SinkhornConfig(epsilon=1.0, max_iterations=1000, tolerance=1e-12)
    torch.testing.assert_close(sinkhorn_plan(cost + 1000.0, config), sinkhorn_plan(cost, config), atol=1e-12, rtol=0)


def test_plan_is_the_same_with_and_without_autograd():
    # Without a graph the plan is scaled into the kernel's buffer in place; the cost is untouched.
    cost = _cosine_problems(3, 8, 6)
    before = cost.clone()
    config = SinkhornConfig(epsilon=0.5)
    with torch.no_grad():
        plan = sinkhorn_plan(cost, config)
    assert torch.equal(sinkhorn_plan(cost.clone().requires_grad_(), config).detach(), plan)
    assert torch.equal(cost, before)


def test_batched_plan_equals_one_problem_at_a_time():
    torch.manual_seed(0)
    cost = cosine_cost(torch.randn(5, 8, 4, dtype=torch.float64), torch.randn(5, 6, 4, dtype=torch.float64))
    config = SinkhornConfig(epsilon=0.2, max_iterations=2000, tolerance=1e-12)
    batched = sinkhorn_plan(cost, config)
    for b in range(5):
        torch.testing.assert_close(batched[b], sinkhorn_plan(cost[b], config), atol=1e-10, rtol=0)


def test_gradcheck_small_problem():
    torch.manual_seed(0)
    cost = torch.rand(1, 4, 3, dtype=torch.float64, requires_grad=True)
    config = SinkhornConfig(epsilon=0.5, max_iterations=30, tolerance=0.0)
    assert torch.autograd.gradcheck(lambda c: (sinkhorn_plan(c, config) * c).sum(), (cost,))
    assert torch.autograd.gradcheck(lambda c: sinkhorn_plan(c, config), (cost,))


def test_gradcheck_through_absorptions(monkeypatch):
    cost = (2 * torch.rand(2, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).requires_grad_()
    config = SinkhornConfig(epsilon=0.02, max_iterations=40, tolerance=0.0)  # range/ε ≈ 90: stabilized
    expected = sinkhorn_plan(cost, config).detach()
    monkeypatch.setattr(sinkhorn, "ABSORB_AT", 0.5)  # absorb at nearly every iteration
    torch.testing.assert_close(sinkhorn_plan(cost, config).detach(), expected, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda c: (sinkhorn_plan(c, config) * c).sum(), (cost,))
    assert torch.autograd.gradcheck(lambda c: sinkhorn_plan(c, config), (cost,))


def test_costs_and_errors():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    y = torch.tensor([[[2.0, 0.0]]])
    torch.testing.assert_close(cosine_cost(x, y), torch.tensor([[[0.0], [1.0]]]))
    torch.testing.assert_close(euclidean_cost(x, y), torch.tensor([[[1.0], [8.0 ** 0.5]]]))
    with pytest.raises(ValueError, match="cost"):
        pairwise_cost("manhattan", x, y)
    with pytest.raises(ValueError, match="epsilon"):
        SinkhornConfig(epsilon=0)
