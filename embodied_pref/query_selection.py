"""Choosing which clip pairs to ask about.

Candidates are drawn uniformly (`oversample` × the number wanted), scored, and the top ones
kept. Scores: ensemble disagreement (std over members of P(first ≻ second)) or the members'
mean preference entropy; "uniform" keeps the first candidates unscored. The loop asks
uniformly in its first round, when there is no reward model yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.reward_training import preference_probabilities
from embodied_pref.segments import SegmentBatch

METHODS = ("uniform", "disagreement", "entropy")


@dataclass(frozen=True)
class SelectedPairs:
    """Indices into the clip pool, and each pair's selection score (nan for uniform)."""

    first: np.ndarray
    second: np.ndarray
    scores: np.ndarray
    method: str


def random_pairs(n_clips: int, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n_pairs` pairs of distinct clip indices, uniformly."""
    if n_clips < 2:
        raise ValueError(f"clips: need at least 2 clips to form pairs, found {n_clips}")
    first = rng.integers(0, n_clips, n_pairs)
    second = (first + rng.integers(1, n_clips, n_pairs)) % n_clips
    return first, second


def pair_scores(
    method: str, ensemble: RewardEnsemble, first: SegmentBatch, second: SegmentBatch
) -> np.ndarray:
    """Informativeness of each pair (N,), higher is more worth asking."""
    prob = preference_probabilities(ensemble, first, second)  # (K, N)
    if method == "disagreement":
        return prob.std(0)
    if method == "entropy":
        p = np.clip(prob, 1e-6, 1 - 1e-6)
        return (-(p * np.log(p) + (1 - p) * np.log(1 - p))).mean(0)
    raise ValueError(f"method: expected one of {METHODS}, found {method!r}")


def select_pairs(
    pool: SegmentBatch,
    n_pairs: int,
    rng: np.random.Generator,
    method: str = "uniform",
    ensemble: RewardEnsemble | None = None,
    oversample: int = 10,
) -> SelectedPairs:
    """Pick `n_pairs` pairs of clips from `pool` by `method`."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, found {method!r}")
    if method != "uniform" and ensemble is None:
        raise ValueError(f"method {method!r} needs a reward ensemble")
    if method == "uniform":
        first, second = random_pairs(len(pool), n_pairs, rng)
        return SelectedPairs(first, second, np.full(n_pairs, np.nan), method)
    first, second = random_pairs(len(pool), n_pairs * max(oversample, 1), rng)
    scores = pair_scores(method, ensemble, pool[first], pool[second])
    top = np.argsort(-scores, kind="stable")[:n_pairs]
    return SelectedPairs(first[top], second[top], scores[top], method)
