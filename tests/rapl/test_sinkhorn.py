import numpy as np
import ot
import pytest
import torch

from embodied_pref.rapl.sinkhorn import SinkhornConfig, cosine_cost, euclidean_cost, pairwise_cost, sinkhorn_plan


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


def test_costs_and_errors():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    y = torch.tensor([[[2.0, 0.0]]])
    torch.testing.assert_close(cosine_cost(x, y), torch.tensor([[[0.0], [1.0]]]))
    torch.testing.assert_close(euclidean_cost(x, y), torch.tensor([[[1.0], [8.0 ** 0.5]]]))
    with pytest.raises(ValueError, match="cost"):
        pairwise_cost("manhattan", x, y)
    with pytest.raises(ValueError, match="epsilon"):
        SinkhornConfig(epsilon=0)
