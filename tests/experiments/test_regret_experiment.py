import json

import numpy as np
import pytest

from embodied_pref.experiments.regret import (
    LEARNERS,
    RegretExperimentConfig,
    _scaled,
    policy_set,
    run_regret_experiment,
    wilcoxon,
)
from embodied_pref.tabular_learners import SOFT_MAX_TEMPERATURE, TabularPreferences, fit_regret_reward, successor_features
from envs.gridworld import (
    load_segment_pairs,
    load_shared_mdp,
    policy_evaluation,
    return_scale,
    solve_optimal,
    uniform_policy,
)
from envs.gridworld.planning import value_iteration


def independent_scaled_return(mdp, policy: np.ndarray) -> float:
    """(V^π − V^uniform) / (V* − V^uniform), means over the start states, with V* by value iteration."""
    def mean_value(p: np.ndarray) -> float:
        return float(policy_evaluation(mdp.next_state, mdp.reward, mdp.gamma, p, mdp.absorbing)[mdp.start_states].mean())

    best = float(value_iteration(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing).values[mdp.start_states].mean())
    uniform = mean_value(uniform_policy(mdp.n_states, mdp.n_actions))
    return (mean_value(policy) - uniform) / (best - uniform)


def random_label_regret_learner(mdp_id: int, budget: int, seed: int) -> float:
    """The control: the regret learner as the experiment runs it, on labels that carry no information."""
    mdp = load_shared_mdp(mdp_id)
    starts, actions = load_segment_pairs(mdp_id)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(starts))[:budget]
    prefs = TabularPreferences(mdp.segment_states(starts[order], actions[order]), actions[order],
                               rng.integers(0, 2, budget).astype(float))
    psi = successor_features(mdp.next_state, mdp.features, policy_set(mdp, 6, rng), mdp.gamma)
    weights = fit_regret_reward(mdp.features, psi, prefs, mdp.gamma, SOFT_MAX_TEMPERATURE, 1e-6, 0, seed)
    return independent_scaled_return(mdp, solve_optimal(mdp.next_state, mdp.features @ weights, mdp.gamma,
                                                        mdp.absorbing).policy)


def test_a_tiny_run_writes_table_json_and_plot(tmp_path):
    config = RegretExperimentConfig(budgets=(30, 60), n_mdps=2, seeds=(0,), policy_set_size=6, regret_restarts=0,
                                    out=tmp_path)
    result = run_regret_experiment(config)
    assert len(result["rows"]) == 2 * 2 * 2 * len(LEARNERS)  # MDPs × teachers × budgets × learners
    assert all(row["scaled_return"] <= 1 + 1e-9 for row in result["rows"])
    # Regret teacher, regret learner, 60 labels: measured 1.000 on both MDPs; the same learner on
    # random labels (2 MDPs x 2 draws) measured -2.93, -2.93, 0.92, -15.85: mean -5.2.
    learned = {row["mdp_id"]: row["scaled_return"] for row in result["rows"]
               if (row["teacher"], row["learner"], row["budget"]) == ("regret", "regret", 60)}
    assert sorted(learned) == [100, 101]
    assert min(learned.values()) > 0.9
    control = np.mean([random_label_regret_learner(mdp_id, 60, seed) for mdp_id in (100, 101) for seed in (0, 1)])
    assert np.mean(list(learned.values())) > control + 2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {s["learner"] for s in saved["summary"]} == set(LEARNERS)
    assert (tmp_path / "regret.png").stat().st_size > 0
    table = (tmp_path / "table.md").read_text()
    assert "| regret | 60 |" in table and "advantage_greedy vs advantage_as_reward" in table


@pytest.mark.parametrize("mdp_id", [100, 101])
def test_scaled_return_is_one_for_an_optimal_policy_and_zero_for_uniform(mdp_id):
    mdp = load_shared_mdp(mdp_id)
    scale = return_scale(mdp.next_state, mdp.reward, mdp.gamma, mdp.start_states, mdp.absorbing)  # as run_mdp does
    optimal = value_iteration(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing).policy
    uniform = uniform_policy(mdp.n_states, mdp.n_actions)
    assert _scaled(mdp, scale, optimal) == pytest.approx(1, abs=1e-6)
    assert _scaled(mdp, scale, uniform) == pytest.approx(0, abs=1e-6)
    always_first = np.zeros(mdp.n_states, dtype=int)
    assert _scaled(mdp, scale, always_first) == pytest.approx(independent_scaled_return(mdp, always_first), abs=1e-6)
    assert _scaled(mdp, scale, always_first) < 0.9


def test_quick_preset_and_validation():
    quick = RegretExperimentConfig(quick=True).resolved()
    assert quick.n_mdps == 8 and quick.budgets == (300, 3000) and quick.seeds == (0,)
    assert RegretExperimentConfig(quick=True, seeds=(4, 5)).resolved().seeds == (4, 5)  # a flag wins
    with pytest.raises(ValueError, match="teachers"):
        RegretExperimentConfig(teachers=("boltzmann",))
    with pytest.raises(ValueError, match="budgets"):
        RegretExperimentConfig(budgets=(1000, 300))


def test_wilcoxon_of_identical_samples_is_nan():
    assert wilcoxon([1.0, 0.5], [1.0, 0.5]) != wilcoxon([1.0, 0.5], [1.0, 0.5])
    assert 0 <= wilcoxon([1.0, 0.9, 0.8, 0.7, 0.95, 0.85], [0.1, 0.2, 0.3, 0.0, 0.05, 0.15]) < 0.05
