"""Preference gatherers: queries go out, labels come back, through the dataset store.

A synthetic teacher and a person in the labeling UI are interchangeable: the loop submits
queries and collects whatever labels have arrived, never knowing who answered.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, Sequence

import numpy as np

from embodied_pref.data import Label, Outcome, Query, Segment, Trajectory
from embodied_pref.segments import SegmentBatch, stack_segments
from embodied_pref.store import PreferenceDataset
from embodied_pref.teachers import SyntheticTeacher, make_teacher, teacher_scale


class PreferenceGatherer(Protocol):
    def submit(self, queries: Sequence[Query]) -> None:
        """Ask for labels of these (already stored) queries."""

    def collect(self) -> list[Label]:
        """Labels that arrived for submitted queries since the last call."""


class Teacher(Protocol):
    """A synthetic labeller: B-Pref's `SyntheticTeacher` (partial return) or `RegretTeacher`."""

    name: str

    def label_segments(self, first: SegmentBatch, second: SegmentBatch) -> list[Outcome]: ...

    def provenance(self) -> dict[str, Any]: ...


TRIPLET_PAIRS = ((0, 1), (0, 2), (1, 2))
_POINTS = {Outcome.LEFT: (1.0, 0.0), Outcome.RIGHT: (0.0, 1.0)}


def ranking_from_comparisons(outcomes: Sequence[Outcome]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """A triplet's (ranking, ties) from a teacher's answers on its three pairs (in
    `TRIPLET_PAIRS` order), by wins (equal, skip and cannot-tell give each side half a win),
    tied where wins are equal; None if no pair got a decisive or equal answer."""
    if all(o in (Outcome.SKIP, Outcome.CANNOT_TELL) for o in outcomes):
        return None
    wins = np.zeros(3)
    for (i, j), outcome in zip(TRIPLET_PAIRS, outcomes):
        points = _POINTS.get(outcome, (0.5, 0.5))
        wins[i] += points[0]
        wins[j] += points[1]
    ranking = tuple(int(i) for i in np.argsort(-wins, kind="stable"))
    ties = tuple(k for k in range(2) if wins[ranking[k]] == wins[ranking[k + 1]])
    return ranking, ties


class TeacherGatherer:
    """A synthetic teacher that answers from the clips' ground-truth rewards: pairwise
    queries by its comparison, triplets by ranking the clips on its three comparisons."""

    def __init__(self, dataset: PreferenceDataset, teacher: Teacher) -> None:
        self.dataset, self.teacher = dataset, teacher
        self._arrived: list[Label] = []

    def submit(self, queries: Sequence[Query]) -> None:
        if not queries:
            return
        comparisons = [(q, i, j) for q in queries
                       for i, j in (((0, 1),) if len(q.clip_ids) == 2 else TRIPLET_PAIRS)]
        first = stack_segments([self._segment(q.clip_ids[i]) for q, i, _ in comparisons])
        second = stack_segments([self._segment(q.clip_ids[j]) for q, _, j in comparisons])
        outcomes = iter(self.teacher.label_segments(first, second))
        provenance = self.teacher.provenance()
        annotator = f"teacher:{self.teacher.name}"
        for query in queries:
            if len(query.clip_ids) == 2:
                answer: dict[str, Any] = {"outcome": next(outcomes)}
            else:
                ranked = ranking_from_comparisons([next(outcomes) for _ in TRIPLET_PAIRS])
                answer = ({"outcome": Outcome.SKIP} if ranked is None
                          else {"outcome": Outcome.RANKING, "ranking": ranked[0], "ties": ranked[1]})
            label = Label(query.id, annotator=annotator, source=provenance, **answer)
            self.dataset.add_label(label)
            self._arrived.append(label)

    def collect(self) -> list[Label]:
        arrived, self._arrived = self._arrived, []
        return arrived

    def _segment(self, clip_id: str) -> Segment:
        segment = self.dataset.segment(clip_id)
        if segment.rewards is None:
            raise ValueError(f"clip {clip_id}: no ground-truth reward for a synthetic teacher")
        return segment


def scaled_teacher(
    name: str, trajectories: Sequence[Trajectory], clip_length: int, seed: int = 0
) -> SyntheticTeacher:
    """A B-Pref teacher whose skip/equal thresholds scale with the domain's rewards
    (B-Pref's m: mean episode return × clip length / episode length)."""
    if not trajectories or any(t.rewards is None for t in trajectories):
        raise ValueError("a synthetic teacher needs trajectories with ground-truth rewards")
    scale = teacher_scale(
        float(np.mean([t.rewards.sum() for t in trajectories])),
        clip_length,
        int(np.mean([t.length for t in trajectories])),
    )
    return make_teacher(name, scale=scale, seed=seed)


def dataset_teacher(dataset: PreferenceDataset, name: str, seed: int = 0) -> SyntheticTeacher:
    """`scaled_teacher` over everything stored in `dataset`."""
    clips = dataset.clips()
    if not clips:
        raise ValueError(f"{dataset.path}: no clips to label; run `embodied-pref collect` first")
    trajectories = [dataset.trajectory(i) for i in dataset.trajectory_ids()]
    return scaled_teacher(name, trajectories, int(np.mean([c.length for c in clips])), seed)


class StoreGatherer:
    """Waits for labels that someone else (the labeling UI) writes into the store."""

    def __init__(self, dataset: PreferenceDataset, poll_seconds: float = 2.0) -> None:
        self.dataset, self.poll_seconds = dataset, poll_seconds
        self._pending: set[str] = set()

    def submit(self, queries: Sequence[Query]) -> None:
        self._pending |= {q.id for q in queries}

    def collect(self, timeout: float | None = None) -> list[Label]:
        """Blocks until every submitted query has a label, or `timeout` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        arrived: list[Label] = []
        while self._pending:
            for query_id in sorted(self._pending):
                labels = self.dataset.labels_for(query_id)
                if labels:
                    arrived += labels
                    self._pending.discard(query_id)
            if not self._pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll_seconds)
        return arrived
