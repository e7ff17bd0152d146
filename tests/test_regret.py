import numpy as np
import pytest
import torch

from embodied_pref.preference import PartialReturnModel, RegretModel, deterministic_regret, regret_from_advantages
from embodied_pref.teachers import preference_targets
from envs.gridworld import load_shared_mdp, solve_optimal


def optimal_segments(mdp_id: int, n: int, length: int = 3, seed: int = 0):
    """Segments that follow an optimal policy from random start states: states (n, L+1), actions (n, L)."""
    mdp = load_shared_mdp(mdp_id)
    solution = solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing)
    states = np.empty((n, length + 1), dtype=int)
    states[:, 0] = np.random.default_rng(seed).choice(mdp.start_states, n)
    actions = np.empty((n, length), dtype=int)
    for t in range(length):
        actions[:, t] = solution.policy[states[:, t]]
        states[:, t + 1] = mdp.next_state[states[:, t], actions[:, t]]
    return mdp, solution, states, actions


@pytest.mark.parametrize("mdp_id", [100, 114, 131])
def test_an_optimal_segment_has_regret_zero(mdp_id):
    mdp, solution, states, actions = optimal_segments(mdp_id, 50)
    general = regret_from_advantages(solution.advantage[states[:, :-1], actions])
    deterministic = deterministic_regret(solution.values[states[:, 0]], mdp.reward[states[:, :-1], actions],
                                         solution.values[states[:, -1]], gamma=mdp.gamma)
    np.testing.assert_allclose(general, 0.0, atol=1e-9)
    np.testing.assert_allclose(deterministic, 0.0, atol=1e-9)


def test_forms_agree_and_a_detour_has_positive_regret():
    mdp = load_shared_mdp(114)
    solution = solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing)
    rng = np.random.default_rng(1)
    actions = rng.integers(0, 4, size=(500, 3))
    states = mdp.segment_states(rng.choice(mdp.start_states, 500), actions)
    advantages = solution.advantage[states[:, :-1], actions]
    discounts = mdp.gamma ** np.arange(3)
    deterministic = deterministic_regret(solution.values[states[:, 0]], mdp.reward[states[:, :-1], actions],
                                         solution.values[states[:, -1]], gamma=mdp.gamma)
    # Deterministic dynamics: the deterministic form is the discounted sum of −A*.
    np.testing.assert_allclose(deterministic, -(advantages * discounts).sum(1), atol=1e-8)
    general = regret_from_advantages(advantages)
    assert (general >= -1e-12).all() and (general > 1e-6).mean() > 0.5


def test_the_undiscounted_deterministic_form_is_the_papers_formula():
    start, end = torch.tensor([10.0, -3.0]), torch.tensor([4.0, 2.0])
    rewards = torch.tensor([[1.0, 2.0, 0.5], [-1.0, -1.0, -1.0]])
    expected = start - (rewards.sum(-1) + end)
    torch.testing.assert_close(deterministic_regret(start, rewards, end), expected)


def test_equal_regret_gives_probability_one_half():
    model = RegretModel(temperature=0.7)
    regret = torch.tensor([0.0, 3.5, 12.25])
    torch.testing.assert_close(model.probability(regret, regret.clone()), torch.full((3,), 0.5))
    np.testing.assert_array_equal(preference_targets(-regret.numpy(), -regret.numpy()), [0.5, 0.5, 0.5])


def test_lower_regret_is_preferred_and_temperature_flattens():
    low, high = torch.tensor([1.0]), torch.tensor([3.0])
    sharp, flat = RegretModel(0.5), RegretModel(5.0)
    assert sharp.probability(low, high) > flat.probability(low, high) > 0.5
    assert sharp.probability(high, low) < 0.5
    torch.testing.assert_close(sharp.probability(low, high), torch.sigmoid(torch.tensor([4.0])))
    # The regret model is the partial-return model of the segments' advantages.
    advantages_a, advantages_b = torch.tensor([[-1.0, 0.0, -0.5]]), torch.tensor([[0.0, -2.0, 0.0]])
    torch.testing.assert_close(
        sharp.probability(regret_from_advantages(advantages_a), regret_from_advantages(advantages_b)),
        PartialReturnModel(0.5).probability(advantages_a, advantages_b))
    with pytest.raises(ValueError, match="temperature"):
        RegretModel(0.0)


def test_loss_treats_ties_as_one_half():
    model = RegretModel()
    regret_a, regret_b = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0])
    loss = model.loss(regret_a, regret_b, torch.tensor([0.5, 0.0]))
    expected = (-torch.log(torch.tensor(0.5)) - torch.log(1 - torch.sigmoid(torch.tensor(-2.0)))) / 2
    torch.testing.assert_close(loss, expected)


def test_preference_targets_deterministic_and_sampled():
    a, b = np.array([1.0, 0.0, 2.0, 5.0]), np.array([0.0, 1.0, 2.0 + 1e-12, 5.0])
    np.testing.assert_array_equal(preference_targets(a, b), [1.0, 0.0, 0.5, 0.5])
    rng = np.random.default_rng(0)
    n = 20000
    sampled = preference_targets(np.full(n, 1.0), np.zeros(n), temperature=1.0, rng=rng)
    assert abs(sampled.mean() - 1 / (1 + np.exp(-1))) < 0.02
    with pytest.raises(ValueError, match="needs rng"):
        preference_targets(a, b, temperature=1.0)
    with pytest.raises(ValueError, match="one shape"):
        preference_targets(a, b[:2])
