"""Choosing which clip pairs (or triplets) to ask about.

Candidates are distinct sets of clips drawn uniformly without replacement, never a set that
was asked before (`exclude`), shown in a random order. Active methods score
`oversample` × the number wanted and keep the top ones: ensemble disagreement (std over
members of P(first ≻ second)) or the members' mean preference entropy; "uniform" keeps the
first candidates unscored. The loop asks uniformly in its first round, when there is no
reward model yet. A pool with fewer unasked sets than wanted yields all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from embodied_pref.data import Query
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.reward_training import preference_probabilities
from embodied_pref.segments import SegmentBatch

METHODS = ("uniform", "disagreement", "entropy")

ENUMERATION_LIMIT = 200_000
"""Pools with at most this many possible sets are enumerated; larger ones are sampled."""


@dataclass(frozen=True)
class SelectedPairs:
    """Indices into the clip pool, and each pair's selection score (nan for uniform)."""

    first: np.ndarray
    second: np.ndarray
    scores: np.ndarray
    method: str


def random_pairs(n_clips: int, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n_pairs` pairs of two different clips drawn independently (a pair may repeat): a
    sample for evaluating a reward, not queries to ask (see `distinct_sets`)."""
    if n_clips < 2:
        raise ValueError(f"clips: need at least 2 clips to form pairs, found {n_clips}")
    first = rng.integers(0, n_clips, n_pairs)
    second = (first + rng.integers(1, n_clips, n_pairs)) % n_clips
    return first, second


def _keys(rows: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 per row, the same for any order of the row's items: (K, size) -> (K,)."""
    ordered = np.sort(rows, axis=1).astype(np.int64)
    return ordered @ (n_items ** np.arange(rows.shape[1], dtype=np.int64))


def distinct_sets(
    n_items: int, size: int, count: int, rng: np.random.Generator,
    exclude: Iterable[Sequence[int]] = (),
) -> np.ndarray:
    """Up to `count` distinct sets of `size` distinct indices in [0, n_items), uniformly among
    the sets not in `exclude` (compared regardless of order; sets of another size are
    ignored), each row in random order.

    Returns (min(count, sets available), size) int64.
    """
    if n_items < size:
        raise ValueError(f"clips: need at least {size} clips to form a query, found {n_items}")
    excluded = [tuple(s) for s in exclude if len(s) == size]
    excluded_keys = (set(_keys(np.asarray(excluded, np.int64).reshape(-1, size), n_items).tolist())
                     if excluded else set())
    total = math.comb(n_items, size)
    if total <= ENUMERATION_LIMIT:
        every = np.array(list(combinations(range(n_items), size)), np.int64)
        free = every[~np.isin(_keys(every, n_items), list(excluded_keys))]
        chosen = free[rng.choice(len(free), min(count, len(free)), replace=False)]
    else:
        chosen_keys: dict[int, np.ndarray] = {}
        while len(chosen_keys) < min(count, total - len(excluded_keys)):
            draws = rng.integers(0, n_items, (2 * count + 8, size))
            draws = draws[np.all(np.diff(np.sort(draws, axis=1), axis=1) > 0, axis=1)]
            for key, row in zip(_keys(draws, n_items).tolist(), np.sort(draws, axis=1)):
                if key not in excluded_keys and key not in chosen_keys:
                    chosen_keys[key] = row
                    if len(chosen_keys) == count:
                        break
        chosen = np.array(list(chosen_keys.values()), np.int64).reshape(-1, size)
    order = np.argsort(rng.random(chosen.shape), axis=1)
    return np.take_along_axis(chosen, order, axis=1)


def asked_sets(queries: Iterable[Query], clip_ids: Sequence[str]) -> list[tuple[int, ...]]:
    """The pool indices of every query's clips (queries showing a clip outside the pool are
    left out): the `exclude` that keeps selection from asking a set twice."""
    index = {clip_id: i for i, clip_id in enumerate(clip_ids)}
    return [tuple(index[c] for c in q.clip_ids) for q in queries if all(c in index for c in q.clip_ids)]


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
    exclude: Iterable[Sequence[int]] = (),
) -> SelectedPairs:
    """Pick `n_pairs` distinct pairs of clips from `pool` by `method`, none in `exclude`
    (pairs of pool indices already asked); fewer if the pool has fewer unasked pairs."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, found {method!r}")
    if method != "uniform" and ensemble is None:
        raise ValueError(f"method {method!r} needs a reward ensemble")
    if method == "uniform":
        rows = distinct_sets(len(pool), 2, n_pairs, rng, exclude)
        return SelectedPairs(rows[:, 0], rows[:, 1], np.full(len(rows), np.nan), method)
    rows = distinct_sets(len(pool), 2, n_pairs * max(oversample, 1), rng, exclude)
    scores = pair_scores(method, ensemble, pool[rows[:, 0]], pool[rows[:, 1]])
    top = np.argsort(-scores, kind="stable")[:n_pairs]
    return SelectedPairs(rows[top, 0], rows[top, 1], scores[top], method)
