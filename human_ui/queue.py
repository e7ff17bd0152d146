"""Which query each annotator sees next, and the labels they give.

The queue keeps an in-memory index of the dataset's queries, labels and leases (loaded on
start, refreshed when it runs dry, so queries stored by someone else, e.g. the PbRL loop, show
up) and writes every label and lease through the store, committed before it returns.

Rules:
- a query is handed to one annotator at a time as a lease that expires after ``lease_s``
  (renewed while they look at it); a label is accepted only for a query leased to its
  annotator (an expired lease still counts while nobody else took the query);
- an annotator never sees the same clips twice (in either order, or the same three clips),
  whatever query shows them;
- a query needs one answer (skips do not count), or two from different annotators if it is an
  overlap query: of the queries in stored order, the k-th is one when
  ``floor(k * overlap) > floor((k - 1) * overlap)``, so exactly ``floor(n * overlap)`` of the
  first n are, and the choice survives restarts;
- overlap queries waiting for their second answer come first, then unanswered queries in the
  order they were stored;
- when nothing is left, ``batch_size`` new queries are selected from the clips that have a
  preview, never a set of clips asked before: uniformly, or by ensemble disagreement once a
  reward model exists (uniformly if the clips of the commonest length cannot fill a query);
- in an agent-ranking campaign (dataset meta ``agent_ranking``, see
  ``embodied_pref.agent_ranking``) new queries are instead the TrueSkill pair choice's buffer:
  two agents' episodes of the same task and seed, highest expected σ² decrease first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from embodied_pref.agent_ranking import BUFFER_SIZE, CAMPAIGN_META_KEY, campaign_queries
from embodied_pref.data import Label, Outcome, Query
from embodied_pref.gathering import TRIPLET_PAIRS
from embodied_pref.query_selection import asked_sets, distinct_sets, pair_scores, select_pairs
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.segments import clip_batch
from embodied_pref.store import ConflictError, DatasetError, PreferenceDataset
from human_ui.config import UIConfig


class QueueError(Exception):
    """A request the queue refuses; ``status`` is the HTTP status that fits."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_overlap_position(position: int, share: float) -> bool:
    """Whether the query at 0-based ``position`` in stored order is an overlap query."""
    return math.floor(round((position + 1) * share, 9)) > math.floor(round(position * share, 9))


class LabelQueue:
    """Hands out queries to annotators and records their answers (thread-safe)."""

    def __init__(self, dataset: PreferenceDataset, config: UIConfig,
                 ensemble: RewardEnsemble | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.dataset, self.config = dataset, config
        self.ensemble = ensemble
        self._clock = clock
        self._rng = np.random.default_rng(config.seed)
        self._lock = threading.RLock()
        self._queries: dict[str, Query] = {}
        self._overlap: set[str] = set()
        self._labels: dict[str, Label] = {}
        self._by_query: dict[str, list[str]] = {}
        self._by_annotator: dict[str, list[str]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        """query id -> {annotator: lease expiry}, expired leases included."""
        self._has_preview: dict[str, bool] = {}
        self._clip_ids: list[str] = []
        self.refresh()

    # --- index ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload queries, labels and leases from the dataset."""
        with self._lock:
            self._queries, self._overlap = {}, set()
            self._add_queries(self.dataset.queries())
            self._labels, self._by_query, self._by_annotator = {}, {}, {}
            for label in self.dataset.labels():
                self._index(label)
            self._has_preview = {k: v for k, v in self._has_preview.items() if v}
            self._clip_ids = [clip.id for clip in self.dataset.clips()]
            self._leases = {}
            for query_id, annotator, expires_at in self.dataset.leases():
                self._leases.setdefault(query_id, {})[annotator] = expires_at

    def _add_queries(self, queries: list[Query]) -> None:
        for query in queries:
            if is_overlap_position(len(self._queries), self.config.overlap):
                self._overlap.add(query.id)
            self._queries[query.id] = query

    def _index(self, label: Label) -> None:
        self._labels[label.id] = label
        self._by_query.setdefault(label.query_id, []).append(label.id)
        self._by_annotator.setdefault(label.annotator, []).append(label.id)

    def _unindex(self, label: Label) -> None:
        del self._labels[label.id]
        self._by_query[label.query_id].remove(label.id)
        self._by_annotator[label.annotator].remove(label.id)

    def _query_labels(self, query_id: str) -> list[Label]:
        return [self._labels[i] for i in self._by_query.get(query_id, ())]

    def _showable(self, query: Query) -> bool:
        if len(query.clip_ids) != self.config.clips_per_query:
            return False
        return all(self._preview_exists(clip_id) for clip_id in query.clip_ids)

    def _preview_exists(self, clip_id: str) -> bool:
        if clip_id not in self._has_preview:
            self._has_preview[clip_id] = self.dataset.preview_path(clip_id).is_file()
        return self._has_preview[clip_id]

    def _seen(self, annotator: str) -> set[frozenset[str]]:
        """Clip sets this annotator answered or holds a lease on."""
        seen = {frozenset(self._queries[self._labels[i].query_id].clip_ids)
                for i in self._by_annotator.get(annotator, ())}
        seen.update(frozenset(self._queries[query_id].clip_ids)
                    for query_id, holders in self._leases.items()
                    if annotator in holders and query_id in self._queries)
        return seen

    def _open_for(self, query: Query, annotator: str, now: float,
                  seen: set[frozenset[str]] | None = None) -> tuple[bool, int]:
        """(can this annotator get it, answers it already has)."""
        labels = self._query_labels(query.id)
        if any(label.annotator == annotator for label in labels):
            return False, 0
        holders = self._leases.get(query.id, {})
        if (annotator not in holders and seen is not None
                and frozenset(query.clip_ids) in seen):
            return False, 0
        answered = {label.annotator for label in labels if label.outcome is not Outcome.SKIP}
        others = {a for a, expires in holders.items()
                  if expires > now and a != annotator and a not in answered
                  and not any(label.annotator == a for label in labels)}
        needed = 2 if query.id in self._overlap else 1
        return len(answered) + len(others) < needed, len(answered)

    def _held(self, annotator: str, now: float) -> Query | None:
        """The open query this annotator holds the latest live lease on."""
        held = [(holders[annotator], query_id) for query_id, holders in self._leases.items()
                if holders.get(annotator, 0.0) > now and query_id in self._queries]
        for _, query_id in sorted(held, reverse=True):
            query = self._queries[query_id]
            if self._open_for(query, annotator, now)[0] and self._showable(query):
                return query
        return None

    def _pick(self, annotator: str, now: float, skip: str | None = None) -> Query | None:
        seen = self._seen(annotator)
        first_look = None
        for query in self._queries.values():
            if query.id == skip:
                continue
            open_, answers = self._open_for(query, annotator, now, seen)
            if not open_ or not self._showable(query):
                continue
            if answers:
                return query
            if first_look is None:
                first_look = query
        return first_look

    def _lease(self, query: Query, annotator: str, now: float) -> None:
        """Lease ``query`` to ``annotator`` for ``lease_s`` (stored when new or half-spent)."""
        expires = self._leases.get(query.id, {}).get(annotator, 0.0)
        if expires - now < self.config.lease_s / 2:
            expires = now + self.config.lease_s
            self.dataset.lease(query.id, annotator, expires)
            self._leases.setdefault(query.id, {})[annotator] = expires

    # --- what annotators do -----------------------------------------------------------------

    def next_query(self, annotator: str) -> Query | None:
        """The query this annotator should answer now (the same one until answered), leased
        to them."""
        with self._lock:
            now = self._clock()
            query = self._held(annotator, now) or self._pick(annotator, now)
            if query is None:
                self.refresh()
                query = self._pick(annotator, now)
            if query is None and self._generate():
                query = self._pick(annotator, now)
            if query is not None:
                self._lease(query, annotator, now)
            return query

    def peek(self, annotator: str, exclude: str) -> Query | None:
        """The query that would follow ``exclude`` (not leased), for preloading."""
        with self._lock:
            now = self._clock()
            query = self._pick(annotator, now, skip=exclude)
            if query is None and self._generate():
                query = self._pick(annotator, now, skip=exclude)
            return query

    def add_label(self, annotator: str, query_id: str, outcome: str, *,
                  ranking: tuple[int, ...] | None = None, ties: tuple[int, ...] = (),
                  label_id: str | None = None, source: Mapping[str, Any] | None = None
                  ) -> tuple[Label, bool]:
        """Store an answer to a query leased to ``annotator``, committed before returning;
        returns (label, newly stored).

        Sending the same ``label_id`` again (a retry after a lost acknowledgement) returns
        the stored label instead of storing a second one.
        """
        with self._lock:
            if label_id is not None and label_id in self._labels:
                stored = self._labels[label_id]
                if (stored.annotator, stored.query_id, stored.outcome.value) != (
                        annotator, query_id, outcome):
                    raise QueueError(409, f"field 'label_id': {label_id!r} is already stored "
                                          "with another answer")
                return stored, False
            query = self._queries.get(query_id)
            if query is None:
                self.refresh()
                query = self._queries.get(query_id)
            if query is None:
                raise QueueError(404, f"field 'query_id': unknown query {query_id!r}")
            if any(label.annotator == annotator for label in self._query_labels(query_id)):
                raise QueueError(409, f"field 'query_id': {annotator!r} already answered "
                                      f"query {query_id!r} (undo first to change the answer)")
            if annotator not in self._leases.get(query_id, {}):
                raise QueueError(403, f"field 'query_id': query {query_id!r} was not handed to "
                                      f"{annotator!r} (ask /api/next for yours)")
            if not self._open_for(query, annotator, self._clock())[0]:
                raise QueueError(409, f"field 'query_id': your lease on query {query_id!r} "
                                      "expired and it was answered or handed to someone else")
            kwargs: dict[str, Any] = {"annotator": annotator, "source": dict(source or {})}
            if label_id is not None:
                kwargs["id"] = label_id
            try:
                label = Label(query_id, outcome, ranking=ranking, ties=ties, **kwargs)
                self.dataset.add_label(label, once_per_annotator=True)
            except ConflictError as err:  # another server process stored their answer first
                raise QueueError(409, _field_message(str(err))) from None
            except (ValueError, DatasetError) as err:
                raise QueueError(422, _field_message(str(err))) from None
            self._index(label)
            return label, True

    def undo(self, annotator: str, label_id: str | None = None) -> Label | None:
        """Delete one of this annotator's labels (``label_id``; default their latest) and hand
        its query back to them; None if they have no label."""
        with self._lock:
            mine = self._by_annotator.get(annotator)
            if label_id is None:
                if not mine:
                    return None
                label_id = mine[-1]
            label = self._labels.get(label_id)
            if label is None:
                raise QueueError(404, f"field 'label_id': unknown label {label_id!r}")
            if label.annotator != annotator:
                raise QueueError(403, f"field 'label_id': label {label_id!r} is not {annotator!r}'s")
            self.dataset.delete_label(label.id)
            self._unindex(label)
            self._leases.get(label.query_id, {}).pop(annotator, None)
            self._lease(self._queries[label.query_id], annotator, self._clock())
            return label

    def query(self, query_id: str) -> Query:
        with self._lock:
            return self._queries[query_id]

    def latest_label(self, annotator: str) -> Label | None:
        """This annotator's latest label (what undo would delete), or None."""
        with self._lock:
            mine = self._by_annotator.get(annotator)
            return self._labels[mine[-1]] if mine else None

    # --- statistics -------------------------------------------------------------------------

    def labels(self) -> list[Label]:
        """Every indexed label, in the order stored."""
        with self._lock:
            return list(self._labels.values())

    def labelled(self, annotator: str) -> int:
        """Labels this annotator gave."""
        with self._lock:
            return len(self._by_annotator.get(annotator, ()))

    def progress(self, annotator: str) -> dict[str, int]:
        """This annotator's labels, the queries still open to them (before new ones are
        selected), and their coverage: distinct clip sets labelled, clips seen, and the clips
        with a preview (the pool new queries come from) and without one."""
        with self._lock:
            now = self._clock()
            seen = self._seen(annotator)
            mine = [self._labels[i] for i in self._by_annotator.get(annotator, ())]
            clip_sets = {frozenset(self._queries[label.query_id].clip_ids) for label in mine}
            waiting = sum(1 for q in self._queries.values()
                          if self._open_for(q, annotator, now, seen)[0] and self._showable(q))
            clips, previews = self.pool_size()
            return {"labelled": len(mine), "waiting": waiting, "pairs": len(clip_sets),
                    "clips_seen": len(set().union(*clip_sets)) if clip_sets else 0,
                    "previews": previews, "clips": clips}

    def pool_size(self) -> tuple[int, int]:
        """(clips in the dataset, those with a preview: the pool new queries come from)."""
        with self._lock:
            return len(self._clip_ids), sum(self._preview_exists(c) for c in self._clip_ids)

    def annotator_stats(self) -> dict[str, dict[str, int]]:
        """Per annotator: labels per outcome and in all."""
        with self._lock:
            stats: dict[str, dict[str, int]] = {}
            for annotator, ids in self._by_annotator.items():
                counts = Counter(self._labels[i].outcome.value for i in ids)
                if ids:
                    stats[annotator] = {"labels": len(ids), **counts}
            return stats

    # --- new queries ------------------------------------------------------------------------

    def _generate(self) -> bool:
        """Select and store up to ``batch_size`` new queries (a campaign's ``buffer_size``),
        never a set of clips asked before; False if the clips with a preview cannot make a
        new one."""
        k = self.config.clips_per_query
        every_clip = self.dataset.clips()
        self._clip_ids = [c.id for c in every_clip]
        clips = [c for c in every_clip if self._preview_exists(c.id)]
        campaign = self.dataset.get_meta(CAMPAIGN_META_KEY)
        if campaign is not None:
            if k != 2:
                return False
            top_k = int(campaign.get("buffer_size", BUFFER_SIZE))
            return self._store(campaign_queries(self.dataset, self._rng, top_k=top_k,
                                                clip_ids=[c.id for c in clips]))
        method = "disagreement" if (self.config.selection == "disagreement"
                                    and self.ensemble is not None) else "uniform"
        if method == "disagreement":  # one stacked pool needs one clip length
            length = Counter(c.length for c in clips).most_common(1)[0][0] if clips else 0
            same_length = [c for c in clips if c.length == length]
            if len(same_length) >= k:
                clips = same_length
            else:
                method = "uniform"
        if len(clips) < k:
            return False
        ids = [c.id for c in clips]
        exclude = asked_sets(self._queries.values(), ids)
        n = self.config.batch_size
        if method == "uniform":
            rows = distinct_sets(len(ids), k, n, self._rng, exclude)
            scores = np.full(len(rows), np.nan)
        elif k == 2:
            chosen = select_pairs(clip_batch(self.dataset, ids), n, self._rng, method,
                                  self.ensemble, self.config.oversample, exclude)
            rows, scores = np.stack([chosen.first, chosen.second], 1), chosen.scores
        else:
            rows = distinct_sets(len(ids), k, n * self.config.oversample, self._rng, exclude)
            pool = clip_batch(self.dataset, ids)
            scores = np.mean([pair_scores(method, self.ensemble, pool[rows[:, a]], pool[rows[:, b]])
                              for a, b in TRIPLET_PAIRS], axis=0)
            top = np.argsort(-scores, kind="stable")[:n]
            rows, scores = rows[top], scores[top]
        queries = [
            Query(tuple(ids[i] for i in row), selector=method,
                  score=None if np.isnan(score) else float(score))
            for row, score in zip(rows, scores)
        ]
        return self._store(queries)

    def _store(self, queries: list[Query]) -> bool:
        """Store new queries; False if there are none."""
        if not queries:
            return False
        self.dataset.add_queries(queries)
        self._add_queries(queries)
        return True


def _field_message(message: str) -> str:
    """The part of a store/data error from "field '...'" on (the path is server detail)."""
    at = message.find("field '")
    return message[at:] if at >= 0 else message
