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
    gt = clips.gt_returns
    targets = np.where(gt[first] > gt[second], 1.0, np.where(gt[first] < gt[second], 0.0, 0.5))
    prob = preference_probabilities(ensemble, clips[first], clips[second]).mean(0)
    learned = predicted_returns(ensemble, clips)
    return RewardEvaluation(
        accuracy=preference_accuracy(prob, targets).accuracy,
        spearman=spearman(learned, gt),
        pearson=pearson(learned, gt),
        n_pairs=n_pairs,
        n_clips=len(clips),
    )
