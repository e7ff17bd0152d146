"""`align-offline`: align a pretrained diffusion policy with the labels people gave on recorded
episodes, with no simulator, and report it on episodes it never saw.

The dataset's trajectories are split into training and held-out episodes; a label is held out
when one of its clips comes from a held-out episode. The reward is fit to the training labels,
the policy aligned on the training episodes (reward-weighted regression on them, or
Diffusion-DPO on the training labels), and both are scored on what was held out: the reward's
preference accuracy on the held-out labels, and the pretrained and the aligned policy's action
and denoising errors on the held-out labels' preferred vs dispreferred clips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.loop import standardized_on_pool
from embodied_pref.metrics import preference_accuracy
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig, preference_probabilities, train_reward
from embodied_pref.segments import PreferencePairs, clip_batch, pairs_and_labels
from embodied_pref.store import DatasetError, PreferenceDataset
from policies.diffusion.dpo import DPOConfig, decisive_pairs, train_dpo
from policies.diffusion.offline import AlignmentScores, OfflineRWRConfig, alignment_report, train_offline_rwr
from policies.diffusion.policy import DiffusionPolicy

METHODS = ("rwr", "dpo")


@dataclass(frozen=True)
class AlignOfflineConfig:
    """Offline alignment of a diffusion policy on a labelled dataset of recordings."""

    policy: Path
    """The pretrained policy (a `DiffusionPolicy.save` directory)."""
    dataset: Path
    """Dataset of the recorded episodes and people's labels on their clips."""
    out: Path
    """Directory for the aligned policy (policy/), the reward (reward.pt) and report.json."""
    method: Literal["rwr", "dpo"] = "rwr"
    """rwr: reward-weighted regression on the training episodes, by the reward fit to the
    training labels; dpo: Diffusion-DPO on the training labels themselves."""
    held_out_fraction: float = 0.25
    """Share of the episodes (and the labels on their clips) held out for the report."""
    reward_net: RewardNetConfig = RewardNetConfig(use_state=False, use_action=False, use_next_state=True)
    """The reward fit to the training labels (a state reward of s')."""
    reward_training: RewardTrainingConfig = field(default_factory=lambda: RewardTrainingConfig(progress=False))
    """Fitting it."""
    rwr: OfflineRWRConfig = field(default_factory=lambda: OfflineRWRConfig(progress=False))
    """Reward-weighted regression."""
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(progress=False))
    """Diffusion-DPO."""
    seed: int = 0
    """Seeds the split, the reward, the fine-tuning and the report."""

    def __post_init__(self) -> None:
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction: expected in (0, 1), found {self.held_out_fraction}")
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, found {self.method!r}")


@dataclass(frozen=True)
class OfflineAlignment:
    """What `align_offline` produced."""

    policy: DiffusionPolicy
    """The aligned policy."""
    reward: RewardEnsemble
    """The reward fit to the training labels."""
    training_episodes: list[Trajectory]
    held_out_episodes: list[Trajectory]
    report: dict
    """reward_accuracy on the held-out labels; pretrained and aligned `AlignmentScores`."""


def split_episodes(trajectory_ids: list[str], held_out_fraction: float, seed: int) -> set[str]:
    """The held-out trajectory ids: a seeded share, at least one, never all."""
    n_held = min(max(1, round(held_out_fraction * len(trajectory_ids))), len(trajectory_ids) - 1)
    order = np.random.default_rng(seed).permutation(len(trajectory_ids))
    return {trajectory_ids[i] for i in order[:n_held]}


def align_offline(config: AlignOfflineConfig) -> OfflineAlignment:
    """Split, fit, align and report (see the module); writes `config.out`."""
    with PreferenceDataset.open(config.dataset) as dataset:
        ids = dataset.trajectory_ids()
        if len(ids) < 2:
            raise DatasetError(f"{config.dataset}: field 'trajectories': need at least 2 episodes to hold one out, "
                             f"found {len(ids)}")
        held = split_episodes(ids, config.held_out_fraction, config.seed)
        pairs, labels = pairs_and_labels(dataset)
        clips = {clip.id: clip for clip in dataset.clips()}
        queries = {query.id: query for query in dataset.queries()}
        touches_held = np.array([any(clips[c].trajectory_id in held for c in queries[label.query_id].clip_ids)
                                 for label in labels])
        training_episodes = [dataset.trajectory(i) for i in ids if i not in held]
        held_out_episodes = [dataset.trajectory(i) for i in ids if i in held]
        training_pool = clip_batch(dataset, [c.id for c in clips.values() if c.trajectory_id not in held])
    if touches_held.all() or not touches_held.any():
        raise DatasetError(f"{config.dataset}: field 'labels': the split leaves no labels to "
                         f"{'train on' if touches_held.all() else 'hold out'}; label more pairs")
    training_pairs, held_pairs = pairs[np.flatnonzero(~touches_held)], pairs[np.flatnonzero(touches_held)]

    reward = RewardEnsemble(pairs.first.observations.shape[-1], pairs.first.actions.shape[-1], config.reward_net)
    train_reward(reward, training_pairs, replace(config.reward_training, seed=config.seed))
    pretrained = DiffusionPolicy.load(config.policy)
    run = config.out / "run"
    if config.method == "rwr":
        reward_fn = standardized_on_pool(reward.predict, training_pool)
        policy, _ = train_offline_rwr(pretrained, training_episodes, reward_fn, run, replace(config.rwr, seed=config.seed))
    else:
        policy, _ = train_dpo(pretrained, training_pairs, run, replace(config.dpo, seed=config.seed))
    report = {"method": config.method, "training_episodes": len(training_episodes),
              "held_out_episodes": len(held_out_episodes), "training_labels": len(training_pairs),
              "held_out_labels": len(held_pairs), **held_out_scores(reward, pretrained, policy, held_pairs, config.seed)}
    config.out.mkdir(parents=True, exist_ok=True)
    policy.save(config.out / "policy")
    reward.save(config.out / "reward.pt")
    (config.out / "report.json").write_text(json.dumps(report, indent=2))
    return OfflineAlignment(policy, reward, training_episodes, held_out_episodes, report)


def held_out_scores(reward: RewardEnsemble, pretrained: DiffusionPolicy, aligned: DiffusionPolicy,
                    held_pairs: PreferencePairs, seed: int) -> dict:
    """The reward's accuracy on held-out labels and both policies' `AlignmentScores` on the
    held-out labels' preferred vs dispreferred clips."""
    probabilities = preference_probabilities(reward, held_pairs.first, held_pairs.second).mean(0)
    preferred, dispreferred = decisive_pairs(held_pairs)
    scores = {name: alignment_report(policy, preferred, dispreferred, seed=seed)
              for name, policy in (("pretrained", pretrained), ("aligned", aligned))}
    return {"reward_accuracy": preference_accuracy(probabilities, held_pairs.targets).accuracy,
            **{name: _scores_row(s) for name, s in scores.items()}}


def _scores_row(scores: AlignmentScores) -> dict:
    return {**scores.__dict__, "action_margin": scores.action_margin,
            "log_likelihood_ratio": scores.log_likelihood_ratio}


def report_markdown(report: dict) -> str:
    """The report as a markdown table."""
    lines = [f"{report['method']}: trained on {report['training_episodes']} episodes and {report['training_labels']} "
             f"labels; held out {report['held_out_episodes']} episodes and {report['held_out_labels']} labels; "
             f"the reward's accuracy on the held-out labels {report['reward_accuracy']:.3f}", "",
             "| policy | action error, preferred | action error, dispreferred | margin | log-likelihood ratio |",
             "|---|---:|---:|---:|---:|"]
    for name in ("pretrained", "aligned"):
        row = report[name]
        lines.append(f"| {name} | {row['action_error_preferred']:.4f} | {row['action_error_dispreferred']:.4f} | "
                     f"{row['action_margin']:+.4f} | {row['log_likelihood_ratio']:+.4f} |")
    return "\n".join(lines)
