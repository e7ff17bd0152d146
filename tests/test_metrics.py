import math
import warnings

import numpy as np
import pytest

from embodied_pref.metrics import epic_distance, pearson, preference_accuracy, spearman

D, A, GAMMA = 4, 2, 0.9


def random_reward(seed: int):
    """A random wiggly reward R(s, a, s'): sixteen random sinusoidal features, mixed."""
    rng = np.random.default_rng(seed)
    w_in = rng.normal(size=(2 * D + A, 16)) * 2.0
    phase = rng.uniform(0, 2 * np.pi, size=16)
    w_out = rng.normal(size=16)

    def reward(obs, acts, next_obs):
        return np.sin(np.concatenate([obs, acts, next_obs], axis=1) @ w_in + phase) @ w_out

    return reward


def potential(states):
    return np.sin(states).sum(1) + 0.5 * (states**2).sum(1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 1000
    transitions = (rng.normal(size=(n, D)), rng.uniform(-1, 1, size=(n, A)), rng.normal(size=(n, D)))
    return dict(
        transitions=transitions,
        state_samples=rng.normal(size=(200, D)),
        action_samples=rng.uniform(-1, 1, size=(200, A)),
        gamma=GAMMA,
        n_mean_samples=64,
    )


def test_epic_ignores_positive_scaling_and_potential_shaping(data):
    reward = random_reward(1)

    def shaped(obs, acts, next_obs):
        return 2.5 * reward(obs, acts, next_obs) + GAMMA * potential(next_obs) - potential(obs)

    assert epic_distance(reward, shaped, **data) < 0.02


def test_epic_of_negation_is_one(data):
    reward = random_reward(2)
    assert epic_distance(reward, lambda o, a, n: -reward(o, a, n), **data) == pytest.approx(1.0, abs=1e-6)


def test_epic_of_unrelated_rewards_is_near_sqrt_half(data):
    assert epic_distance(random_reward(3), random_reward(4), **data) == pytest.approx(
        math.sqrt(0.5), abs=0.05
    )


def test_epic_is_symmetric(data):
    r1, r2 = random_reward(5), random_reward(6)
    assert epic_distance(r1, r2, **data) == pytest.approx(epic_distance(r2, r1, **data), abs=1e-12)


def test_epic_batches_reward_calls(data):
    sizes = []
    reward = random_reward(7)

    def counted(obs, acts, next_obs):
        sizes.append(len(obs))
        return reward(obs, acts, next_obs)

    small = dict(data, batch_size=1000)
    assert epic_distance(counted, reward, **small) == pytest.approx(
        epic_distance(reward, reward, **data), abs=1e-9
    )
    assert max(sizes) <= 1000


def test_epic_rejects_bad_reward_shape(data):
    with pytest.raises(ValueError, match="returned shape"):
        epic_distance(lambda o, a, n: np.zeros((len(o), 1)), random_reward(8), **data)


def test_preference_accuracy_with_ties():
    prob = np.array([0.9, 0.2, 0.5, 0.6, 0.7, 0.4])
    targets = np.array([1.0, 0.0, 1.0, 0.0, 0.5, 0.5])
    result = preference_accuracy(prob, targets)
    assert result.n_decisive == 4
    assert result.n_ties == 2
    assert result.accuracy == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert result.tie_mae == pytest.approx(0.15)


def test_preference_accuracy_without_ties_or_decisive():
    assert math.isnan(preference_accuracy(np.array([0.8]), np.array([1.0])).tie_mae)
    assert math.isnan(preference_accuracy(np.array([0.8]), np.array([0.5])).accuracy)
    with pytest.raises(ValueError, match="targets"):
        preference_accuracy(np.array([0.8]), np.array([0.3]))


def test_spearman_of_monotone_transform_is_one():
    x = np.random.default_rng(0).normal(size=200)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)


def test_correlations_of_constant_input_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(pearson(np.ones(10), np.arange(10)))
        assert math.isnan(spearman(np.arange(10), np.zeros(10)))
        assert math.isnan(pearson(np.array([1.0]), np.array([2.0])))
