import json

import pytest

from embodied_pref.experiments.regret import LEARNERS, RegretExperimentConfig, run_regret_experiment, wilcoxon


def test_a_tiny_run_writes_table_json_and_plot(tmp_path):
    config = RegretExperimentConfig(budgets=(30, 60), n_mdps=2, seeds=(0,), policy_set_size=6, regret_restarts=0,
                                    out=tmp_path)
    result = run_regret_experiment(config)
    assert len(result["rows"]) == 2 * 2 * 2 * len(LEARNERS)  # MDPs × teachers × budgets × learners
    assert all(-1e6 < row["scaled_return"] <= 1 + 1e-9 for row in result["rows"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {s["learner"] for s in saved["summary"]} == set(LEARNERS)
    assert (tmp_path / "regret.png").stat().st_size > 0
    table = (tmp_path / "table.md").read_text()
    assert "| regret | 60 |" in table and "advantage_greedy vs advantage_as_reward" in table


def test_quick_preset_and_validation():
    quick = RegretExperimentConfig(quick=True, seeds=(4, 5)).resolved()
    assert quick.n_mdps == 8 and quick.budgets == (300, 3000) and quick.seeds == (4,)
    with pytest.raises(ValueError, match="teachers"):
        RegretExperimentConfig(teachers=("boltzmann",))
    with pytest.raises(ValueError, match="budgets"):
        RegretExperimentConfig(budgets=(1000, 300))


def test_wilcoxon_of_identical_samples_is_nan():
    assert wilcoxon([1.0, 0.5], [1.0, 0.5]) != wilcoxon([1.0, 0.5], [1.0, 0.5])
    assert 0 <= wilcoxon([1.0, 0.9, 0.8, 0.7, 0.95, 0.85], [0.1, 0.2, 0.3, 0.0, 0.05, 0.15]) < 0.05
