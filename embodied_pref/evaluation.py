"""Scoring a learned reward against ground truth on held-out clips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from embodied_pref.metrics import pearson, preference_accuracy, spearman
from embodied_pref.query_selection import random_pairs
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.reward_training import preference_probabilities, segment_rewards
from embodied_pref.segments import SegmentBatch


@dataclass(frozen=True)
class RewardEvaluation:
    """Held-out quality of a learned reward."""

    accuracy: float
    """Agreement with the ground-truth (rational) preference on decisive held-out pairs."""
    spearman: float
    """Rank correlation of learned vs ground-truth clip returns."""
    pearson: float
    """Linear correlation of learned vs ground-truth clip returns."""
    n_pairs: int
    n_clips: int


@torch.no_grad()
def predicted_returns(ensemble: RewardEnsemble, clips: SegmentBatch) -> np.ndarray:
    """Ensemble-mean learned return of each clip: (N,)."""
    return segment_rewards(ensemble, clips).mean(0).sum(-1).cpu().numpy()


def evaluate_reward(
    ensemble: RewardEnsemble, clips: SegmentBatch, n_pairs: int = 2000, seed: int = 0
) -> RewardEvaluation:
    """Compare `ensemble` with the clips' ground truth on `n_pairs` random pairs of `clips`."""
    first, second = random_pairs(len(clips), n_pairs, np.random.default_rng(seed))
    learned = predicted_returns(ensemble, clips)
    gt = clips.gt_returns
    return RewardEvaluation(
        accuracy=_pair_accuracy(ensemble, clips[first], clips[second]),
        spearman=spearman(learned, gt),
        pearson=pearson(learned, gt),
        n_pairs=n_pairs,
        n_clips=len(clips),
    )


def cross_accuracy(ensemble: RewardEnsemble, group_a: SegmentBatch, group_b: SegmentBatch) -> float:
    """Agreement with the ground truth on every pair of one segment of `group_a` and one of
    `group_b`, pairs the ground truth ties left out (nan if all tie).

    Accuracy on random pairs is mostly decided by how far each clip got; this scores the
    choice a policy faces, e.g. expert episodes that keep a preference (group_a) against ones
    that break it (group_b), which a reward with high random-pair accuracy can still get wrong.
    """
    a, b = np.meshgrid(np.arange(len(group_a)), np.arange(len(group_b)), indexing="ij")
    return _pair_accuracy(ensemble, group_a[a.ravel()], group_b[b.ravel()])


def _pair_accuracy(ensemble: RewardEnsemble, first: SegmentBatch, second: SegmentBatch) -> float:
    """Ensemble-mean preference accuracy against the ground-truth order of each pair."""
    gt_first, gt_second = first.gt_returns, second.gt_returns
    targets = np.where(gt_first > gt_second, 1.0, np.where(gt_first < gt_second, 0.0, 0.5))
    prob = preference_probabilities(ensemble, first, second).mean(0)
    return preference_accuracy(prob, targets).accuracy
