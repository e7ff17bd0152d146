"""The PbRL loop: rollouts → clips → selected queries → labels → reward training → policy.

Everything the loop learns from lives in the dataset directory (trajectories, clips, queries,
labels); the reward and agent checkpoints sit beside it in the run directory. The loop's
progress is recorded in the dataset (rollouts added, iterations completed), so an interrupted
run resumes in the iteration it was in: its stored rollouts and queries are reused and the
labels given before the interruption are kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from embodied_pref.data import Query, Trajectory
from embodied_pref.gathering import PreferenceGatherer
from embodied_pref.query_selection import select_pairs
from embodied_pref.reward_nets import RewardEnsemble, RewardFn, RewardNetConfig, StandardizedReward
from embodied_pref.reward_training import RewardTrainingConfig, train_reward
from embodied_pref.segments import SegmentBatch, clip_batch, clip_pool, cut_clips, labelled_pairs
from embodied_pref.store import PreferenceDataset

LOOP_STATE_KEY = "loop"


class AgentTrainer(Protocol):
    """What the loop needs of a policy learner (see `policies/`)."""

    checkpoint_name: str
    """File name of its checkpoint in the run directory."""

    def train(self, reward_fn: RewardFn | None, steps: int) -> None: ...

    def rollouts(self, n: int, seed: int) -> list[Trajectory]: ...

    def save(self, path: str | Path) -> None: ...

    def load(self, path: str | Path) -> None: ...


@dataclass(frozen=True)
class LoopConfig:
    """Schedule of the PbRL loop."""

    iterations: int = 3
    """Rounds of rollouts → queries → labels → reward → policy."""
    labels_per_iteration: int = 50
    """Queries asked per round."""
    clip_length: int = 50
    """Steps per clip."""
    clips_per_trajectory: int = 4
    """Clips cut at random starts from each new trajectory."""
    rollouts_per_iteration: int = 8
    """Agent episodes added to the clip pool per round (after the first)."""
    policy_steps_per_iteration: int = 10_000
    """Environment steps of policy training per round."""
    selection: str = "disagreement"
    """Query selection after the first (uniform) round: uniform | disagreement | entropy."""
    oversample: int = 10
    """Candidates scored per query asked."""
    seed: int = 0
    """Seeds clip cutting, selection and rollouts."""


@dataclass
class IterationRecord:
    """One row of the loop's learning curve."""

    iteration: int
    labels: int
    trajectories: int
    reward_validation_accuracy: float
    policy_gt_return: float


def mean_gt_return(trajectories: Sequence[Trajectory]) -> float:
    return float(np.mean([t.rewards.sum() for t in trajectories]))


def add_trajectories(dataset: PreferenceDataset, trajectories: Sequence[Trajectory], config: LoopConfig, rng) -> None:
    for trajectory in trajectories:
        dataset.add_trajectory(trajectory)
    dataset.add_clips(cut_clips(trajectories, config.clip_length, config.clips_per_trajectory, rng))


def ask(
    dataset: PreferenceDataset,
    gatherer: PreferenceGatherer,
    n_queries: int,
    method: str,
    ensemble: RewardEnsemble | None,
    round_index: int,
    rng: np.random.Generator,
    oversample: int = 10,
) -> int:
    """Select `n_queries` pairs from the dataset's clip pool, store them, submit them to the
    gatherer; returns the number of labels that came back."""
    clip_ids = [clip.id for clip in dataset.clips()]
    pool = clip_batch(dataset, clip_ids)
    selected = select_pairs(pool, n_queries, rng, method, ensemble, oversample)
    queries = [
        Query((clip_ids[a], clip_ids[b]), selector=method,
              score=None if np.isnan(score) else float(score), round=round_index)
        for a, b, score in zip(selected.first, selected.second, selected.scores)
    ]
    dataset.add_queries(queries)
    gatherer.submit(queries)
    return len(gatherer.collect())


def fit_reward(
    dataset: PreferenceDataset, reward_config: RewardNetConfig, training_config: RewardTrainingConfig,
    log_dir: Path | None = None,
) -> tuple[RewardEnsemble, float]:
    """A fresh ensemble trained on every label in the dataset; returns it and its validation accuracy."""
    pairs = labelled_pairs(dataset)
    ensemble = RewardEnsemble(pairs.first.observations.shape[-1], pairs.first.actions.shape[-1], reward_config)
    report = train_reward(ensemble, pairs, training_config, log_dir=log_dir)
    return ensemble, report.validation_accuracy[report.best_epoch]


def standardized_on_pool(reward_fn: RewardFn, pool: SegmentBatch) -> StandardizedReward:
    """`reward_fn` standardized over every transition of the clip pool."""
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).cpu().numpy() for t in pool.tensors())
    return StandardizedReward(reward_fn, obs, acts, next_obs)


def run_pbrl_loop(
    dataset: PreferenceDataset,
    agent: AgentTrainer,
    gatherer: PreferenceGatherer,
    run_dir: str | Path,
    initial_trajectories: Callable[[], Sequence[Trajectory]],
    loop_config: LoopConfig = LoopConfig(),
    reward_config: RewardNetConfig = RewardNetConfig(),
    training_config: RewardTrainingConfig = RewardTrainingConfig(),
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> list[IterationRecord]:
    """Run (or resume) the loop; returns one record per completed iteration."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    reward_path, agent_path = run_dir / "reward.pt", run_dir / agent.checkpoint_name
    state = dataset.get_meta(LOOP_STATE_KEY, {"completed": 0, "records": []})
    records = [IterationRecord(**r) for r in state["records"]]
    ensemble = RewardEnsemble.load(reward_path) if state["completed"] and reward_path.exists() else None
    if state["completed"] and agent_path.exists():
        agent.load(agent_path)

    for iteration in range(state["completed"], loop_config.iterations):
        rng = np.random.default_rng([loop_config.seed, iteration])
        # An iteration interrupted after its rollouts or queries were stored reuses them:
        # no duplicate trajectories, and pending queries are asked again rather than replaced.
        if state.get("rollouts_added") != iteration:
            if iteration == 0:
                new = initial_trajectories() if not dataset.trajectory_ids() else []
            else:
                new = agent.rollouts(loop_config.rollouts_per_iteration, seed=loop_config.seed * 10_000 + iteration * 100)
            add_trajectories(dataset, new, loop_config, rng)
            state = {**state, "rollouts_added": iteration}
            dataset.set_meta(LOOP_STATE_KEY, state)

        asked = [q for q in dataset.queries() if q.round == iteration]
        if not asked:
            method = "uniform" if ensemble is None else loop_config.selection
            ask(dataset, gatherer, loop_config.labels_per_iteration, method, ensemble, iteration, rng,
                loop_config.oversample)
        else:
            answered = {label.query_id for label in dataset.labels()}
            gatherer.submit([q for q in asked if q.id not in answered])
            gatherer.collect()
        ensemble, val_accuracy = fit_reward(
            dataset, reward_config, training_config, log_dir=run_dir / "tensorboard" / f"reward_{iteration}"
        )
        ensemble.save(reward_path)

        pool = clip_pool(dataset)
        agent.train(standardized_on_pool(ensemble.predict, pool), loop_config.policy_steps_per_iteration)
        agent.save(agent_path)
        evaluation = agent.rollouts(4, seed=1_000_000 + iteration)

        record = IterationRecord(
            iteration=iteration,
            labels=len(dataset.labels()),
            trajectories=len(dataset.trajectory_ids()),
            reward_validation_accuracy=float(val_accuracy),
            policy_gt_return=mean_gt_return(evaluation),
        )
        records.append(record)
        state = {**state, "completed": iteration + 1, "records": [asdict(r) for r in records],
                 "config": asdict(loop_config)}
        dataset.set_meta(LOOP_STATE_KEY, state)
        if on_iteration is not None:
            on_iteration(record)
    return records
