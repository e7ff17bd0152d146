import numpy as np
import pytest

from embodied_pref.tabular_learners import (
    TabularPreferences,
    fit_advantage_table,
    fit_partial_return_reward,
    fit_regret_reward,
    greedy_policy,
    successor_features,
)
from embodied_pref.teachers import preference_targets
from envs.gridworld import (
    load_segment_pairs,
    load_shared_mdp,
    policy_evaluation,
    scaled_return,
    solve_optimal,
    uniform_policy,
)


def labelled(mdp_id: int, n: int, teacher: str, seed: int = 0):
    """The MDP, its optimal solution, and n shared pairs labelled by a noiseless teacher."""
    mdp = load_shared_mdp(mdp_id)
    solution = solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing)
    starts, actions = load_segment_pairs(mdp_id)
    pick = np.random.default_rng(seed).permutation(len(starts))[:n]
    states = mdp.segment_states(starts[pick], actions[pick])
    table = mdp.reward if teacher == "partial_return" else solution.advantage
    scores = table[states[..., :-1], actions[pick]].sum(-1)
    return mdp, solution, TabularPreferences(states, actions[pick], preference_targets(scores[:, 0], scores[:, 1]))


def score(mdp, policy) -> float:
    return scaled_return(mdp.next_state, mdp.reward, mdp.gamma, policy, mdp.start_states, mdp.absorbing)


def planned(mdp, reward) -> np.ndarray:
    return solve_optimal(mdp.next_state, reward, mdp.gamma, mdp.absorbing).policy


@pytest.mark.parametrize("mdp_id", [100, 117])
def test_successor_features_reproduce_policy_values(mdp_id):
    mdp = load_shared_mdp(mdp_id)
    rng = np.random.default_rng(0)
    fixed = rng.integers(0, 4, size=mdp.n_states)
    psi = successor_features(mdp.next_state, mdp.features, fixed[None], mdp.gamma)
    assert psi.shape == (1, mdp.n_states, 6)
    for weights in (mdp.reward_weights, rng.normal(size=6)):
        values = policy_evaluation(mdp.next_state, mdp.features @ weights, mdp.gamma, fixed, mdp.absorbing)
        np.testing.assert_allclose(psi[0] @ weights, values, rtol=0, atol=1e-6)
    stochastic = successor_features(mdp.next_state, mdp.features, uniform_policy(mdp.n_states, 4)[None], mdp.gamma)
    values = policy_evaluation(mdp.next_state, mdp.reward, mdp.gamma, uniform_policy(mdp.n_states, 4), mdp.absorbing)
    np.testing.assert_allclose(stochastic[0] @ mdp.reward_weights, values, rtol=0, atol=1e-6)


def test_partial_return_learner_recovers_an_optimal_policy_from_partial_return_labels():
    mdp, _, prefs = labelled(112, 3000, "partial_return")
    weights = fit_partial_return_reward(mdp.features, prefs)
    assert score(mdp, planned(mdp, mdp.features @ weights)) > 0.99


def test_regret_learner_recovers_an_optimal_policy_from_regret_labels():
    mdp, _, prefs = labelled(113, 1000, "regret")
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(40, 6))
    policies = np.array([planned(mdp, mdp.features @ w) for w in weights])
    psi = successor_features(mdp.next_state, mdp.features, policies, mdp.gamma)
    learned = fit_regret_reward(mdp.features, psi, prefs, mdp.gamma, restarts=1)
    assert learned.shape == (6,)
    assert score(mdp, planned(mdp, mdp.features @ learned)) > 0.99


def test_learned_advantage_is_for_acting_greedily_not_for_planning():
    mdp, solution, prefs = labelled(110, 10000, "regret")
    advantage = fit_advantage_table(mdp.n_states, mdp.n_actions, prefs)
    assert advantage.shape == (mdp.n_states, 4)
    greedy = greedy_policy(advantage)
    assert score(mdp, greedy) > 0.99
    moving = ~mdp.absorbing
    # Greedy actions are optimal ones: A* = 0 there.
    np.testing.assert_allclose(solution.advantage[np.arange(mdp.n_states), greedy][moving], 0.0, atol=1e-9)
    assert score(mdp, planned(mdp, advantage)) < 0.5


def test_tabular_preferences_check_shapes():
    states, actions = np.zeros((4, 2, 4), dtype=int), np.zeros((4, 2, 3), dtype=int)
    assert len(TabularPreferences(states, actions, np.ones(4))[:2]) == 2
    with pytest.raises(ValueError, match="actions"):
        TabularPreferences(states, actions[:, :, :2], np.ones(4))
    with pytest.raises(ValueError, match="targets"):
        TabularPreferences(states, actions, np.full(4, 2.0))
    with pytest.raises(ValueError, match="states"):
        TabularPreferences(states.astype(float), actions, np.ones(4))



def test_regret_loss_gradient_and_its_logits():
    import scipy.optimize

    from embodied_pref.tabular_learners import regret_design, regret_loss, soft_max_values

    mdp, solution, prefs = labelled(111, 300, "regret")
    rng = np.random.default_rng(2)
    policies = np.concatenate([solution.policy[None], rng.integers(0, 4, size=(5, mdp.n_states))])
    psi = successor_features(mdp.next_state, mdp.features, policies, mdp.gamma)
    design = regret_design(mdp.features, prefs, mdp.gamma)
    for weights in (rng.normal(size=6), 0.1 * mdp.reward_weights):
        def loss(w):
            return regret_loss(w, psi, design, prefs.targets, temperature=0.5)

        error = scipy.optimize.check_grad(lambda w: loss(w)[0], lambda w: loss(w)[1], weights)
        assert error < 1e-5 * max(1.0, np.linalg.norm(loss(weights)[1]))
    # With the optimal policy in the set and the true weights, V̂* = V* and the logits are the
    # regret differences.
    values, _ = soft_max_values(psi, mdp.reward_weights)
    np.testing.assert_allclose(values, solution.values, atol=1e-6)
    summed, incidence = design
    logits = summed @ mdp.reward_weights + incidence @ values
    regret = -solution.advantage[prefs.states[..., :-1], prefs.actions].sum(-1)
    np.testing.assert_allclose(logits, regret[:, 1] - regret[:, 0], atol=1e-6)
