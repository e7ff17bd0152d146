"""The PbRL loop on real X-MAGICAL physics with real PPO, at a tiny budget."""

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from embodied_pref.experiments.xmagical_data import scripted_episodes
from embodied_pref.gathering import TeacherGatherer
from embodied_pref.loop import LoopConfig, ask_in_rounds, run_pbrl_loop
from embodied_pref.regret_teacher import RegretTeacher
from embodied_pref.reward_nets import RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig
from embodied_pref.segments import cut_clips
from embodied_pref.store import PreferenceDataset
from embodied_pref.teachers import make_teacher
from envs.xmagical import env_id
from policies.greedy_advantage import GreedyAdvantageAgent, GreedyAdvantageConfig
from policies.ppo import PPOAgent, PPOConfig

LOOP = LoopConfig(iterations=2, labels_per_iteration=12, clip_length=20, clips_per_trajectory=3,
                  rollouts_per_iteration=2, policy_steps_per_iteration=128, seed=0)
NET = RewardNetConfig(hidden_sizes=(16,), ensemble_size=2)
TRAINING = RewardTrainingConfig(max_epochs=5, progress=False)


class Interrupted(Exception):
    pass


class CrashingTeacher(TeacherGatherer):
    """Answers the first 5 queries of round 1, then dies."""

    crashed = False

    def submit(self, queries):
        if queries and queries[0].round == 1 and not type(self).crashed:
            type(self).crashed = True
            super().submit(queries[:5])
            raise Interrupted
        super().submit(queries)


def run(tmp_path, loop=LOOP, on_iteration=None, gatherer_type=TeacherGatherer):
    dataset = PreferenceDataset.open(tmp_path / "dataset") if (tmp_path / "dataset").exists() \
        else PreferenceDataset.create(tmp_path / "dataset")
    agent = PPOAgent(env_id("Longstick", "state"), PPOConfig(n_envs=2, n_steps=64, batch_size=64, n_epochs=1, device="cpu"))
    gatherer = gatherer_type(dataset, make_teacher("oracle"))
    initial = lambda: scripted_episodes("Longstick", [0.0, 0.5, 1.0], seed=0)  # noqa: E731
    try:
        return dataset, run_pbrl_loop(dataset, agent, gatherer, tmp_path, initial, loop, NET, TRAINING,
                                      on_iteration=on_iteration)
    finally:
        dataset.close()


def test_loop_collects_labels_trains_and_records_progress(tmp_path):
    dataset, records = run(tmp_path)
    assert [r.labels for r in records] == [12, 24]
    assert [r.trajectories for r in records] == [3, 5]
    assert all(np.isfinite(r.policy_gt_return) for r in records)
    assert (tmp_path / "reward.pt").exists() and (tmp_path / "agent.zip").exists()
    with PreferenceDataset.open(tmp_path / "dataset") as reopened:
        selectors = [q.selector for q in reopened.queries()]
        assert selectors == ["uniform"] * 12 + ["disagreement"] * 12
        assert all(label.source["name"] == "oracle" for label in reopened.labels())
        assert reopened.get_meta("loop")["completed"] == 2


def test_an_interrupted_loop_resumes_where_it_stopped(tmp_path):
    def stop_after_first(record):
        if record.iteration == 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(tmp_path, on_iteration=stop_after_first)
    _, records = run(tmp_path)
    assert [r.iteration for r in records] == [0, 1]
    assert [r.labels for r in records] == [12, 24]
    longer = LoopConfig(**{**LOOP.__dict__, "iterations": 3})
    _, records = run(tmp_path, loop=longer)
    assert [r.labels for r in records] == [12, 24, 36]
    assert records[-1].trajectories == 7


def test_a_crash_while_labelling_keeps_given_labels_and_asks_only_the_rest(tmp_path):
    with pytest.raises(Interrupted):
        run(tmp_path, gatherer_type=CrashingTeacher)
    with PreferenceDataset.open(tmp_path / "dataset") as store:
        assert len(store.labels()) == 12 + 5
        given = {label.id for label in store.labels()}
    _, records = run(tmp_path)
    assert [r.labels for r in records] == [12, 24]
    assert records[-1].trajectories == 5  # the interrupted round's rollouts were not added twice
    with PreferenceDataset.open(tmp_path / "dataset") as store:
        assert given <= {label.id for label in store.labels()}
        assert sum(q.round == 1 for q in store.queries()) == 12
        assert not store.unlabeled_queries()


def test_rounds_of_queries_on_a_fixed_pool_resume_after_a_crash(tmp_path):
    class CrashOnce(CrashingTeacher):
        crashed = False

    episodes = scripted_episodes("Longstick", [0.0, 0.5, 1.0, 1.0], seed=0)
    with PreferenceDataset.create(tmp_path / "dataset") as dataset:
        for episode in episodes:
            dataset.add_trajectory(episode)
        dataset.add_clips(cut_clips(episodes, 20, 6, np.random.default_rng(0)))

    def ask(gatherer_type):
        with PreferenceDataset.open(tmp_path / "dataset") as dataset:
            ask_in_rounds(dataset, gatherer_type(dataset, make_teacher("oracle")), 30, 12, "disagreement",
                          NET, TRAINING, seed=0)

    with pytest.raises(Interrupted):
        ask(CrashOnce)
    with PreferenceDataset.open(tmp_path / "dataset") as store:
        assert len(store.labels()) == 12 + 5
    ask(TeacherGatherer)
    with PreferenceDataset.open(tmp_path / "dataset") as store:
        queries = store.queries()
        assert [q.round for q in queries] == [0] * 12 + [1] * 12 + [2] * 6
        assert [q.selector for q in queries] == ["uniform"] * 12 + ["disagreement"] * 18
        assert len({frozenset(q.clip_ids) for q in queries}) == 30
        assert len(store.labels()) == 30 and not store.unlabeled_queries()


class DebrisValue:
    """A stand-in V̂ for the regret teacher: minus the debris' mean distance to the top."""

    def predict(self, obs):
        return -(1.0 - np.asarray(obs)[..., 3:8:2]).clip(0).mean(-1) * 20

    def provenance(self):
        return {"kind": "stand-in"}


def test_regret_preference_model_loop_learns_an_advantage_and_acts_greedily(tmp_path):
    dataset = PreferenceDataset.create(tmp_path / "dataset")
    agent = GreedyAdvantageAgent(env_id("Longstick", "state"), tmp_path / "reward.pt", GreedyAdvantageConfig(32))
    advantage = RewardNetConfig(hidden_sizes=(16,), ensemble_size=2, use_next_state=False)
    initial = lambda: scripted_episodes("Longstick", [0.0, 0.5, 1.0], seed=0)  # noqa: E731
    with dataset:
        records = run_pbrl_loop(dataset, agent, TeacherGatherer(dataset, RegretTeacher(DebrisValue())), tmp_path,
                                initial, LOOP, advantage, TRAINING)
        assert [r.labels for r in records] == [12, 24] and all(np.isfinite(r.policy_gt_return) for r in records)
        assert {label.source["params"]["value_source"]["kind"] for label in dataset.labels()} == {"stand-in"}
        rollouts = [t for t in map(dataset.trajectory, dataset.trajectory_ids()) if t.metadata.get("policy")
                    == "greedy-advantage"]
        assert len(rollouts) == 2
    assert (tmp_path / "agent.json").exists()
    resumed = GreedyAdvantageAgent(env_id("Longstick", "state"), tmp_path / "reward.pt", GreedyAdvantageConfig(32))
    resumed.load(tmp_path / "agent.json")
    assert resumed.rollouts(1, seed=0)[0].length == 50


KILL_DRIVER = Path(__file__).resolve().parent / "loop_kill_run.py"


def loop_counts(run_dir):
    with PreferenceDataset.open(run_dir / "dataset") as store:
        queries = store.queries()
        state = store.get_meta("loop")
        counts = {
            "trajectories": len(store.trajectory_ids()), "clips": len(store.clips()),
            "queries": len(queries), "distinct pairs": len({frozenset(q.clip_ids) for q in queries}),
            "labels": len(store.labels()), "unlabelled": len(store.unlabeled_queries()),
            "queries per round": sorted(Counter(q.round for q in queries).items()),
            "completed": state["completed"],
            "records": [(r["labels"], r["trajectories"]) for r in state["records"]],
        }
    agent = PPOAgent(env_id("Longstick", "state"), PPOConfig(n_envs=2, n_steps=64, batch_size=64, device="cpu"))
    agent.load(run_dir / "agent.zip")
    counts["policy steps"] = agent.steps_trained  # a stage done twice would train the policy twice
    counts["staged files"] = sorted(p.name for p in run_dir.glob("*.staged*"))
    return counts


@pytest.fixture(scope="module")
def uninterrupted_counts(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run(run_dir)
    return loop_counts(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("iteration", [0, 1])
@pytest.mark.parametrize("stage", ["rollouts", "trajectories", "labels", "reward", "agent_save"])
def test_a_loop_killed_at_any_stage_resumes_to_the_counts_of_an_uninterrupted_run(
        tmp_path, uninterrupted_counts, stage, iteration):
    killed = subprocess.run([sys.executable, str(KILL_DRIVER), str(tmp_path), stage, str(iteration)],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with PreferenceDataset.open(tmp_path / "dataset") as store:
        assert store.get_meta("loop", {"completed": 0})["completed"] == iteration
    run(tmp_path)
    assert loop_counts(tmp_path) == uninterrupted_counts
