"""The PbRL loop: rollouts → clips → selected queries → labels → reward training → policy.

Everything the loop learns from lives in the dataset directory (trajectories, clips, queries,
labels); the reward and agent checkpoints sit beside it in the run directory. The loop's
progress is recorded in the dataset stage by stage (the round's trajectory ids before they are
stored, rollouts and clips added, reward fitted, policy trained, iteration completed), and a
checkpoint is moved into place only once its stage is recorded. A run killed at any point
resumes at the stage it was in: stored rollouts, queries and labels are reused, and no stage
runs twice (the policy is never trained twice in one round).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from embodied_pref.annotator_reliability import ReliabilityConfig, ReliabilityEstimate
from embodied_pref.data import Outcome, Query, Trajectory
from embodied_pref.gathering import PreferenceGatherer
from embodied_pref.query_selection import asked_sets, select_pairs
from embodied_pref.reward_nets import RewardEnsemble, RewardFn, RewardNetConfig, StandardizedReward
from embodied_pref.reliability_training import train_reward_with_reliability
from embodied_pref.reward_training import RewardTrainingConfig, train_reward
from embodied_pref.segments import (
    PreferencePairs, SegmentBatch, clip_batch, clip_pool, cut_clips, labelled_pairs, pairs_and_labels)
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
    policy_success: float | None = None
    """Mean `eval_score` of the evaluation episodes (None: the env reports none)."""
    policy_violation_rate: float | None = None
    """Share of evaluation episodes that violate the preference (None: no `violates` given)."""


def mean_gt_return(trajectories: Sequence[Trajectory]) -> float:
    return float(np.mean([t.rewards.sum() for t in trajectories]))


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
    """Select `n_queries` pairs from the dataset's clip pool (distinct, none asked before;
    fewer when fewer are left), store them, submit them to the gatherer; returns the number
    of labels that came back."""
    clip_ids = [clip.id for clip in dataset.clips()]
    pool = clip_batch(dataset, clip_ids)
    selected = select_pairs(pool, n_queries, rng, method, ensemble, oversample,
                            exclude=asked_sets(dataset.queries(), clip_ids))
    queries = [
        Query((clip_ids[a], clip_ids[b]), selector=method,
              score=None if np.isnan(score) else float(score), round=round_index)
        for a, b, score in zip(selected.first, selected.second, selected.scores)
    ]
    dataset.add_queries(queries)
    gatherer.submit(queries)
    return len(gatherer.collect())


def ask_in_rounds(
    dataset: PreferenceDataset,
    gatherer: PreferenceGatherer,
    n_labels: int,
    labels_per_round: int,
    selection: str,
    reward_config: RewardNetConfig,
    training_config: RewardTrainingConfig,
    seed: int,
    oversample: int = 10,
) -> None:
    """The loop's query schedule on a fixed clip pool: a uniform first round, then rounds of
    `selection` on the ensemble fitted to every label so far, until `n_labels` were asked.

    A round already asked (before an interruption) is not replaced: its unanswered queries go
    to the gatherer again, so a rerun resumes.
    """
    if labels_per_round < 1:
        raise ValueError(f"labels_per_round: expected >= 1, found {labels_per_round}")
    for round_index in range(math.ceil(n_labels / labels_per_round)):
        asked = [q for q in dataset.queries() if q.round == round_index]
        if asked:
            _resubmit_unanswered(dataset, gatherer, asked)
            continue
        ensemble = None
        if round_index:
            ensemble, _ = fit_reward(dataset, reward_config, training_config)
        ask(dataset, gatherer, min(labels_per_round, n_labels - round_index * labels_per_round),
            "uniform" if ensemble is None else selection, ensemble, round_index,
            np.random.default_rng([seed, round_index, 1]), oversample)


def _resubmit_unanswered(dataset: PreferenceDataset, gatherer: PreferenceGatherer, asked: Sequence[Query]) -> None:
    answered = {label.query_id for label in dataset.labels()}
    gatherer.submit([q for q in asked if q.id not in answered])
    gatherer.collect()


def fit_reward(
    dataset: PreferenceDataset | Sequence[PreferenceDataset], reward_config: RewardNetConfig,
    training_config: RewardTrainingConfig, log_dir: Path | None = None,
) -> tuple[RewardEnsemble, float]:
    """A fresh ensemble trained on every label in the dataset (or datasets, e.g. one of clips
    and one of whole episodes), each taken at face value; returns it and its validation
    accuracy (`fit_reward_with_reliability` weights labels by their annotators)."""
    datasets = [dataset] if isinstance(dataset, PreferenceDataset) else list(dataset)
    pairs = [labelled_pairs(d) for d in datasets]
    ensemble = RewardEnsemble(pairs[0].first.observations.shape[-1], pairs[0].first.actions.shape[-1], reward_config)
    report = train_reward(ensemble, pairs, training_config, log_dir=log_dir)
    return ensemble, report.validation_accuracy[report.best_epoch]


def fit_reward_with_reliability(
    dataset: PreferenceDataset | Sequence[PreferenceDataset], reward_config: RewardNetConfig,
    training_config: RewardTrainingConfig, log_dir: Path | None = None, rounds: int = 1,
    reliability: ReliabilityConfig = ReliabilityConfig(),
) -> tuple[RewardEnsemble, float, ReliabilityEstimate]:
    """`fit_reward` with each label weighted by its annotator's reliability
    (`train_reward_with_reliability`: a plain fit, then `rounds` noise-aware refits, each with
    the flip rates estimated from the reward before); returns the ensemble, its validation
    accuracy and the annotators' flip rates estimated with it."""
    datasets = [dataset] if isinstance(dataset, PreferenceDataset) else list(dataset)
    pairs, annotators, evidence = zip(*(_pairs_with_annotators(d) for d in datasets))
    ensemble = RewardEnsemble(pairs[0].first.observations.shape[-1], pairs[0].first.actions.shape[-1], reward_config)
    fit = train_reward_with_reliability(ensemble, list(pairs), list(annotators), training_config, rounds=rounds,
                                        reliability=reliability, evidence=list(evidence), log_dir=log_dir)
    report = fit.reports[-1]
    return ensemble, report.validation_accuracy[report.best_epoch], fit.estimate


def _pairs_with_annotators(dataset: PreferenceDataset) -> tuple[PreferencePairs, np.ndarray, np.ndarray]:
    """`labelled_pairs(dataset)`, the annotator of each pair, and the query id under which a
    pair counts towards its annotator's reliability ("" for the pairs a ranking or an equal
    answer implies: only left/right answers are counted)."""
    pairs, labels = pairs_and_labels(dataset)
    annotators = np.array([label.annotator for label in labels], dtype=object)
    evidence = np.array([label.query_id if label.outcome in (Outcome.LEFT, Outcome.RIGHT) else ""
                         for label in labels], dtype=object)
    return pairs, annotators, evidence


def standardized_on_pool(reward_fn: RewardFn, pool: SegmentBatch) -> StandardizedReward:
    """`reward_fn` standardized over every transition of the clip pool."""
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).cpu().numpy() for t in pool.tensors())
    return StandardizedReward(reward_fn, obs, acts, next_obs)


def _staged(path: Path) -> Path:
    return path.with_name(f"{path.stem}.staged{path.suffix}")


def _move_into_place(staged: Path, path: Path) -> None:
    """Rename `staged` to `path`. A checkpoint directory replaces the old one, which is removed
    first; the staged copy survives a crash in between, and its recorded stage brings it back."""
    if staged.is_dir() and path.exists():
        shutil.rmtree(path)
    os.replace(staged, path)


def _save_and_record(save: Callable[[Path], None], path: Path, dataset: PreferenceDataset,
                     state: dict, **stage) -> dict:
    """Write a checkpoint beside `path`, record `stage` in the loop state, then move the
    checkpoint into place: a crash at any point leaves `path` and the state in agreement."""
    save(_staged(path))
    state = {**state, **stage}
    dataset.set_meta(LOOP_STATE_KEY, state)
    _move_into_place(_staged(path), path)
    return state


def _settle_staged(path: Path, recorded: bool) -> None:
    """After a crash: move a checkpoint whose stage was recorded into place, drop any other."""
    if _staged(path).exists():
        if recorded:
            _move_into_place(_staged(path), path)
        elif _staged(path).is_dir():
            shutil.rmtree(_staged(path))
        else:
            _staged(path).unlink()


def _add_round(
    dataset: PreferenceDataset, new_trajectories: Callable[[], Sequence[Trajectory]],
    loop_config: LoopConfig, iteration: int, state: dict,
) -> dict:
    """Store a round's trajectories and their clips, resumably: the ids are recorded before
    anything is stored, so a rerun after a crash stores only what is missing."""
    pending = state.get("adding")
    new = list(new_trajectories())
    if pending is not None and pending["round"] == iteration:
        if len(new) != len(pending["trajectory_ids"]):
            raise RuntimeError(
                f"{dataset.path}: round {iteration} was interrupted while storing "
                f"{len(pending['trajectory_ids'])} trajectories, but its rollouts now give {len(new)}")
        new = [dataclasses.replace(t, id=i) for t, i in zip(new, pending["trajectory_ids"])]
    else:
        state = {**state, "adding": {"round": iteration, "trajectory_ids": [t.id for t in new]}}
        dataset.set_meta(LOOP_STATE_KEY, state)
    stored = set(dataset.trajectory_ids())
    for trajectory in new:
        if trajectory.id not in stored:
            dataset.add_trajectory(trajectory)
    ids = {t.id for t in new}
    if not any(clip.trajectory_id in ids for clip in dataset.clips()):
        rng = np.random.default_rng([loop_config.seed, iteration, 0])
        dataset.add_clips(cut_clips(new, loop_config.clip_length, loop_config.clips_per_trajectory, rng))
    state = {k: v for k, v in state.items() if k != "adding"} | {"rollouts_added": iteration}
    dataset.set_meta(LOOP_STATE_KEY, state)
    return state


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
    violates: Callable[[Trajectory], bool] | None = None,
    eval_episodes: int = 4,
) -> list[IterationRecord]:
    """Run (or resume) the loop; returns one record per completed iteration. Each record
    scores `eval_episodes` of the policy's episodes: ground-truth return, success (the env's
    `eval_score`) and, given `violates`, the share that goes against the preference.

    Each stage of an iteration is recorded in the dataset when it is done (round's rollouts
    and clips stored, queries asked, labels in, reward fitted, policy trained), so a run
    killed at any point resumes at the stage it was in, with no stage done twice.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    reward_path, agent_path = run_dir / "reward.pt", run_dir / agent.checkpoint_name
    state = dataset.get_meta(LOOP_STATE_KEY, {"completed": 0, "records": []})
    records = [IterationRecord(**r) for r in state["records"]]
    current = state["completed"]
    _settle_staged(reward_path, state.get("reward_fitted", {}).get("iteration") == current)
    _settle_staged(agent_path, state.get("policy_trained") == current)
    ensemble = RewardEnsemble.load(reward_path) if reward_path.exists() else None
    if agent_path.exists():
        agent.load(agent_path)

    for iteration in range(current, loop_config.iterations):
        if state.get("rollouts_added") != iteration:
            if iteration == 0:
                # A dataset that already holds trajectories (e.g. from `collect`) is the first pool.
                fresh = "adding" in state or not dataset.trajectory_ids()
                new_trajectories = initial_trajectories if fresh else list
            else:
                def new_trajectories() -> Sequence[Trajectory]:
                    return agent.rollouts(loop_config.rollouts_per_iteration,
                                          seed=loop_config.seed * 10_000 + iteration * 100)
            state = _add_round(dataset, new_trajectories, loop_config, iteration, state)

        # Queries stored before an interruption are asked again rather than replaced.
        asked = [q for q in dataset.queries() if q.round == iteration]
        if not asked:
            method = "uniform" if ensemble is None else loop_config.selection
            ask(dataset, gatherer, loop_config.labels_per_iteration, method, ensemble, iteration,
                np.random.default_rng([loop_config.seed, iteration, 1]), loop_config.oversample)
        else:
            _resubmit_unanswered(dataset, gatherer, asked)

        fitted = state.get("reward_fitted", {})
        if fitted.get("iteration") == iteration:
            ensemble = RewardEnsemble.load(reward_path)
            val_accuracy = np.nan if fitted["validation_accuracy"] is None else fitted["validation_accuracy"]
        else:
            ensemble, val_accuracy = fit_reward(
                dataset, reward_config, training_config, log_dir=run_dir / "tensorboard" / f"reward_{iteration}"
            )
            state = _save_and_record(ensemble.save, reward_path, dataset, state, reward_fitted={
                "iteration": iteration, "validation_accuracy": _finite_or_none(val_accuracy)})

        if state.get("policy_trained") != iteration:
            pool = clip_pool(dataset)
            agent.train(standardized_on_pool(ensemble.predict, pool), loop_config.policy_steps_per_iteration)
            state = _save_and_record(agent.save, agent_path, dataset, state, policy_trained=iteration)
        evaluation = agent.rollouts(eval_episodes, seed=1_000_000 + iteration)
        scores = [t.metadata["eval_score"] for t in evaluation if "eval_score" in t.metadata]
        record = IterationRecord(
            iteration=iteration,
            labels=len(dataset.labels()),
            trajectories=len(dataset.trajectory_ids()),
            reward_validation_accuracy=float(val_accuracy),
            policy_gt_return=mean_gt_return(evaluation),
            policy_success=float(np.mean(scores)) if scores else None,
            policy_violation_rate=None if violates is None else float(np.mean([violates(t) for t in evaluation])),
        )
        records.append(record)
        state = {**state, "completed": iteration + 1, "records": [asdict(r) for r in records],
                 "config": asdict(loop_config)}
        dataset.set_meta(LOOP_STATE_KEY, state)
        if on_iteration is not None:
            on_iteration(record)
    return records


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined accuracy (no decisive validation pair) is stored as None."""
    return float(value) if np.isfinite(value) else None
