import math

import pytest
import torch

from embodied_pref.preference import PartialReturnModel


def test_probability_is_sigmoid_of_return_difference_over_temperature():
    ra = torch.tensor([[1.0, 2.0, 0.5]])
    rb = torch.tensor([[0.0, 1.0, 0.5]])
    for temperature in (0.5, 1.0, 3.0):
        p = PartialReturnModel(temperature).probability(ra, rb)
        assert p.item() == pytest.approx(1 / (1 + math.exp(-2.0 / temperature)), rel=1e-6)


def test_equal_returns_give_one_half_and_swap_gives_complement():
    model = PartialReturnModel()
    ra, rb = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.allclose(model.probability(ra, ra), torch.full((5,), 0.5))
    assert torch.allclose(model.probability(ra, rb) + model.probability(rb, ra), torch.ones(5))


def test_tie_target_loss_is_minimal_at_equal_returns():
    model = PartialReturnModel()
    delta = torch.zeros(1, requires_grad=True)
    loss = model.loss((delta + 1.0).view(1, 1), torch.ones(1, 1), torch.tensor([0.5]))
    loss.backward()
    assert abs(delta.grad.item()) < 1e-7
    assert model.loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([0.5])) > loss


def test_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        PartialReturnModel(0.0)
