"""The demo end to end at a tiny budget: it must write the report, the plots and the table."""

import math

import pytest

from embodied_pref.experiments.continuous_regret import ExpertValueConfig
from embodied_pref.experiments.demo import DemoConfig, run_demo
from embodied_pref.loop import LoopConfig
from embodied_pref.reward_training import RewardTrainingConfig
from policies.ppo import PPOConfig


def test_tiny_demo_writes_report_and_plots(tmp_path, capsys):
    config = DemoConfig(
        runs_dir=tmp_path, embodiment="Longstick", initial_episodes=4, eval_episodes=2,
        loop=LoopConfig(iterations=2, labels_per_iteration=10, clip_length=20, clips_per_trajectory=3,
                        rollouts_per_iteration=2, policy_steps_per_iteration=128),
        ppo=PPOConfig(n_envs=2, n_steps=64, batch_size=64, n_epochs=1, device="cpu"),
        reward_training=RewardTrainingConfig(max_epochs=5, progress=False),
    )
    result = run_demo(config)
    run_dir = tmp_path / "demo"
    report = (run_dir / "report.md").read_text()
    for row in ("labels used | 20", "held-out preference accuracy", "EPIC distance", "random policy"):
        assert row in report
    assert (run_dir / "learning_curves.png").stat().st_size > 0
    assert (run_dir / "returns_scatter.png").stat().st_size > 0
    assert "| labels used | 20 |" in capsys.readouterr().out
    assert 0 <= result["epic"] <= 1 and math.isfinite(result["learned_return"])
    assert -50 <= result["random_return"] <= 0  # Longstick: 50 steps of reward in [-1, 0]


def test_demo_refuses_to_overwrite_a_run_without_resume(tmp_path):
    (tmp_path / "demo" / "dataset").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--resume"):
        run_demo(DemoConfig(runs_dir=tmp_path))


def test_tiny_demo_with_the_regret_preference_model(tmp_path):
    config = DemoConfig(
        runs_dir=tmp_path, embodiment="Longstick", initial_episodes=4, eval_episodes=2,
        preference_model="regret", value=ExpertValueConfig(episodes=4, states_per_episode=4, horizon=20),
        loop=LoopConfig(iterations=2, labels_per_iteration=10, clip_length=20, clips_per_trajectory=3,
                        rollouts_per_iteration=2, policy_steps_per_iteration=128),
        reward_training=RewardTrainingConfig(max_epochs=5, progress=False),
    )
    result = run_demo(config)
    report = (tmp_path / "demo" / "report.md").read_text()
    for row in ("preference model `regret`, teacher `regret`", "held-out accuracy against the regret teacher",
                "GT return: greedy on learned advantage"):
        assert row in report
    assert (tmp_path / "demo" / "agent.json").exists() and math.isfinite(result["learned_return"])


def test_demo_rejects_an_unknown_preference_model(tmp_path):
    with pytest.raises(ValueError, match="--preference-model"):
        run_demo(DemoConfig(runs_dir=tmp_path, preference_model="regrets"))
