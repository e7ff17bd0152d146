"""Which query each annotator sees next, and the labels they give.

The queue keeps an in-memory index of the dataset's queries and labels (loaded on start,
refreshed when it runs dry, so queries stored by someone else, e.g. the PbRL loop, show up)
and writes every label through the store, committed before it returns.

Rules:
- an annotator never gets a query they already answered (skips included);
- a query needs one answer (skips do not count), or two from different annotators if it
  is an overlap query (a fixed share ``overlap`` of queries, chosen by a hash of the id,
  so the choice survives restarts);
- overlap queries waiting for their second answer come first, then unanswered queries in
  the order they were stored; a query handed to an annotator is theirs until answered;
- when nothing is left, ``batch_size`` new queries are selected from the clips that have a
  preview, never a set of clips asked before: uniformly, or by ensemble disagreement once a
  reward model exists (uniformly if the clips of the commonest length cannot fill a query);
- in an agent-ranking campaign (dataset meta ``agent_ranking``, see
  ``embodied_pref.agent_ranking``) new queries are instead the TrueSkill pair choice's buffer:
  two agents' episodes of the same task and seed, highest expected σ² decrease first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from embodied_pref.agent_ranking import BUFFER_SIZE, CAMPAIGN_META_KEY, campaign_queries
from embodied_pref.data import Clip, Label, Outcome, Query
from embodied_pref.gathering import TRIPLET_PAIRS
from embodied_pref.query_selection import asked_sets, distinct_sets, pair_scores, select_pairs
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.segments import clip_batch
from embodied_pref.store import DatasetError, PreferenceDataset
from human_ui.config import UIConfig


class QueueError(Exception):
    """A request the queue refuses; ``status`` is the HTTP status that fits."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_overlap_query(query_id: str, share: float) -> bool:
    """Whether a query is also shown to a second annotator (stable hash of its id)."""
    digest = hashlib.sha256(query_id.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class LabelQueue:
    """Hands out queries to annotators and records their answers (thread-safe)."""

    def __init__(self, dataset: PreferenceDataset, config: UIConfig,
                 ensemble: RewardEnsemble | None = None) -> None:
        self.dataset, self.config = dataset, config
        self.ensemble = ensemble
        self._rng = np.random.default_rng(config.seed)
        self._lock = threading.RLock()
        self._queries: dict[str, Query] = {}
        self._labels: dict[str, Label] = {}
        self._by_query: dict[str, list[str]] = {}
        self._by_annotator: dict[str, list[str]] = {}
        self._current: dict[str, str] = {}
        self._has_preview: dict[str, bool] = {}
        self.refresh()

    # --- index ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload queries and labels from the dataset."""
        with self._lock:
            self._queries = {q.id: q for q in self.dataset.queries()}
            self._labels, self._by_query, self._by_annotator = {}, {}, {}
            for label in self.dataset.labels():
                self._index(label)

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
        for clip_id in query.clip_ids:
            if clip_id not in self._has_preview:
                self._has_preview[clip_id] = self.dataset.preview_path(clip_id).is_file()
            if not self._has_preview[clip_id]:
                return False
        return True

    def _open_for(self, query: Query, annotator: str) -> tuple[bool, int]:
        """(can this annotator get it, answers it already has)."""
        labels = self._query_labels(query.id)
        if any(label.annotator == annotator for label in labels):
            return False, 0
        answered = {label.annotator for label in labels if label.outcome is not Outcome.SKIP}
        holders = {a for a, qid in self._current.items() if qid == query.id and a != annotator}
        needed = 2 if is_overlap_query(query.id, self.config.overlap) else 1
        return len(answered) + len(holders) < needed, len(answered)

    def _pick(self, annotator: str, skip: str | None = None) -> Query | None:
        first_look = None
        for query in self._queries.values():
            if query.id == skip:
                continue
            open_, answers = self._open_for(query, annotator)
            if not open_ or not self._showable(query):
                continue
            if answers:
                return query
            if first_look is None:
                first_look = query
        return first_look

    # --- what annotators do -----------------------------------------------------------------

    def next_query(self, annotator: str) -> Query | None:
        """The query this annotator should answer now (the same one until answered)."""
        with self._lock:
            current = self._current.get(annotator)
            if current is not None and self._open_for(self._queries[current], annotator)[0]:
                return self._queries[current]
            query = self._pick(annotator)
            if query is None:
                self.refresh()
                query = self._pick(annotator)
            if query is None and self._generate():
                query = self._pick(annotator)
            if query is None:
                self._current.pop(annotator, None)
            else:
                self._current[annotator] = query.id
            return query

    def peek(self, annotator: str, exclude: str) -> Query | None:
        """The query that would follow ``exclude`` (not handed out), for preloading."""
        with self._lock:
            query = self._pick(annotator, skip=exclude)
            if query is None and self._generate():
                query = self._pick(annotator, skip=exclude)
            return query

    def add_label(self, annotator: str, query_id: str, outcome: str, *,
                  ranking: tuple[int, ...] | None = None, ties: tuple[int, ...] = (),
                  label_id: str | None = None, source: Mapping[str, Any] | None = None
                  ) -> tuple[Label, bool]:
        """Store an answer, committed before returning; returns (label, newly stored).

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
                try:
                    query = self.dataset.query(query_id)
                except DatasetError:
                    raise QueueError(404, f"field 'query_id': unknown query {query_id!r}") from None
                self._queries[query.id] = query
            if any(label.annotator == annotator for label in self._query_labels(query_id)):
                raise QueueError(409, f"field 'query_id': {annotator!r} already answered "
                                      f"query {query_id!r} (undo first to change the answer)")
            kwargs: dict[str, Any] = {"annotator": annotator, "source": dict(source or {})}
            if label_id is not None:
                kwargs["id"] = label_id
            try:
                label = Label(query_id, outcome, ranking=ranking, ties=ties, **kwargs)
                self.dataset.add_label(label)
            except (ValueError, DatasetError) as err:
                raise QueueError(422, _field_message(str(err))) from None
            self._index(label)
            if self._current.get(annotator) == query_id:
                del self._current[annotator]
            return label, True

    def undo(self, annotator: str) -> Label | None:
        """Delete this annotator's latest label and make its query theirs again."""
        with self._lock:
            mine = self._by_annotator.get(annotator)
            if not mine:
                return None
            label = self._labels[mine[-1]]
            self.dataset.delete_label(label.id)
            self._unindex(label)
            self._current[annotator] = label.query_id
            return label

    def query(self, query_id: str) -> Query:
        with self._lock:
            return self._queries[query_id]

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
        """Labels this annotator gave, and queries still open to them (without new ones)."""
        with self._lock:
            done = len(self._by_annotator.get(annotator, ()))
            waiting = sum(
                1 for q in self._queries.values()
                if self._open_for(q, annotator)[0] and self._showable(q)
            )
            return {"labelled": done, "waiting": waiting}

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
        clips = [c for c in self.dataset.clips() if self.dataset.preview_path(c.id).is_file()]
        campaign = self.dataset.get_meta(CAMPAIGN_META_KEY)
        if campaign is not None:
            if k != 2:
                return False
            top_k = int(campaign.get("buffer_size", BUFFER_SIZE))
            return self._store(campaign_queries(self.dataset, self._rng, top_k=top_k,
                                                clip_ids=[c.id for c in clips]), clips)
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
        return self._store(queries, clips)

    def _store(self, queries: list[Query], clips: list[Clip]) -> bool:
        """Store new queries (over ``clips``, which have previews); False if there are none."""
        if not queries:
            return False
        self.dataset.add_queries(queries)
        for query in queries:
            self._queries[query.id] = query
        for clip in clips:
            self._has_preview[clip.id] = True
        return True


def _field_message(message: str) -> str:
    """The part of a store/data error from "field '...'" on (the path is server detail)."""
    at = message.find("field '")
    return message[at:] if at >= 0 else message
