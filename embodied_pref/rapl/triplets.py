"""Ranked triplets (positive ≻ neutral ≻ negative) over a set of videos, from a synthetic
teacher's ground-truth returns or from stored ranking labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from embodied_pref.data import Label, Outcome, Query


@dataclass(frozen=True)
class Triplets:
    """K ranked triplets, as indices into a list of N videos.

    - ``positive``, ``neutral``, ``negative``: (K,) int64, best to worst.
    - ``equal``: (K,) bool, the neutral and negative videos were judged equally good.
    """

    positive: np.ndarray
    neutral: np.ndarray
    negative: np.ndarray
    equal: np.ndarray

    def __post_init__(self) -> None:
        k = len(self.positive)
        for name in ("positive", "neutral", "negative", "equal"):
            value = np.asarray(getattr(self, name))
            if value.shape != (k,):
                raise ValueError(f"field '{name}': expected shape ({k},), found {value.shape}")
            object.__setattr__(self, name, value.astype(bool if name == "equal" else np.int64))

    def __len__(self) -> int:
        return len(self.positive)

    def __getitem__(self, index: slice | np.ndarray) -> Triplets:
        return Triplets(self.positive[index], self.neutral[index], self.negative[index], self.equal[index])

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three pairwise preferences in each triplet: (first (3K,), second (3K,),
        target (3K,) = P(first ≻ second), 0.5 for equal neutral/negative)."""
        first = np.concatenate([self.positive, self.positive, self.neutral])
        second = np.concatenate([self.neutral, self.negative, self.negative])
        target = np.concatenate([np.ones(2 * len(self)), np.where(self.equal, 0.5, 1.0)]).astype(np.float32)
        return first, second, target


def synthetic_triplets(
    returns: np.ndarray, count: int, rng: np.random.Generator, equal_tolerance: float = 0.0
) -> Triplets:
    """`count` triplets of 3 distinct videos drawn uniformly, ranked by ground-truth return.

    returns: (N,) float, N >= 3. Neutral and negative are marked equal when their returns
    differ by at most `equal_tolerance`.
    """
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 1 or len(returns) < 3:
        raise ValueError(f"returns: expected shape (N,) with N >= 3, found {returns.shape}")
    drawn = np.stack([rng.choice(len(returns), size=3, replace=False) for _ in range(count)]).reshape(count, 3)
    order = np.argsort(-returns[drawn], axis=1, kind="stable")
    ranked = np.take_along_axis(drawn, order, axis=1)
    equal = np.abs(returns[ranked[:, 1]] - returns[ranked[:, 2]]) <= equal_tolerance
    return Triplets(ranked[:, 0], ranked[:, 1], ranked[:, 2], equal)


def triplets_from_labels(
    queries: Sequence[Query], labels: Sequence[Label], video_index: Mapping[str, int]
) -> Triplets:
    """Triplets from stored 3-clip queries with RANKING labels, one per label; `video_index`
    maps a clip id to its video's index. Other queries and labels are skipped.

    A triplet is marked equal when the label ties its neutral and negative clips (position 1
    in `label.ties`); a tie of positive and neutral alone is not: RAPL's loss only compares
    the neutral and negative videos, against the positive one.
    """
    by_query = {q.id: q for q in queries if len(q.clip_ids) == 3}
    rows, equal = [], []
    for label in labels:
        query = by_query.get(label.query_id)
        if query is None or label.outcome is not Outcome.RANKING or label.ranking is None:
            continue
        missing = [c for c in query.clip_ids if c not in video_index]
        if missing:
            raise ValueError(f"video_index: no video for clip ids {missing} of query {query.id}")
        rows.append([video_index[query.clip_ids[i]] for i in label.ranking])
        equal.append(1 in label.ties)
    rows_array = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    return Triplets(rows_array[:, 0], rows_array[:, 1], rows_array[:, 2], np.asarray(equal, dtype=bool))
