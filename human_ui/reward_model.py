"""The app's current reward model: loaded from a checkpoint, refit in the background every
N labels (so that active selection stays current), and asked what it prefers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from embodied_pref.data import Query
from embodied_pref.loop import fit_reward
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig, preference_probabilities
from embodied_pref.segments import clip_batch
from embodied_pref.store import PreferenceDataset

logger = logging.getLogger(__name__)


class BackgroundRetrainer:
    """Refits a reward ensemble on every label after each ``every`` new ones, on a thread.

    ``on_model(ensemble)`` receives each fitted ensemble. One fit runs at a time; labels that
    arrive meanwhile count towards the next one.
    """

    def __init__(self, dataset: PreferenceDataset, every: int, epochs: int,
                 on_model: Callable[[RewardEnsemble], None]) -> None:
        self.dataset, self.every, self.epochs, self.on_model = dataset, every, epochs, on_model
        self._lock = threading.Lock()
        self._since_fit = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.fits = 0
        """Completed fits."""
        self.last_accuracy: float | None = None
        """Validation accuracy of the latest fit."""
        self.last_error: str | None = None
        """Why the latest fit failed (e.g. too few labels, an unreadable clip), or None."""

    def label_added(self) -> None:
        """Count a new label; start a fit when ``every`` have arrived and none is running."""
        if self.every <= 0:
            return
        with self._lock:
            if self._stopped:
                return
            self._since_fit += 1
            if self._since_fit < self.every or (self._thread and self._thread.is_alive()):
                return
            self._since_fit = 0
            self._thread = threading.Thread(target=self._fit, name="reward-refit", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running fit (if any) ends."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Start no more fits; wait for the running one and drop its model."""
        with self._lock:
            self._stopped = True
        self.wait(timeout)

    def _fit(self) -> None:
        try:
            ensemble, accuracy = fit_reward(
                self.dataset, RewardNetConfig(hidden_sizes=(64, 64)),
                RewardTrainingConfig(max_epochs=self.epochs, patience=10, progress=False, device="cpu"),
            )
        except Exception as err:  # noqa: BLE001 — a failed refit must not end silently
            self.last_error = f"{type(err).__name__}: {err}"
            logger.warning("background reward refit failed: %s", self.last_error)
            return
        if self._stopped:
            return
        ensemble.eval()
        self.last_accuracy, self.last_error = float(accuracy), None
        self.fits += 1
        self.on_model(ensemble)


def prefers_first(dataset: PreferenceDataset, ensemble: RewardEnsemble,
                  queries: Sequence[Query]) -> dict[str, float]:
    """Ensemble-mean P(first clip better) for each pairwise query, by query id."""
    groups: dict[tuple[int, int], list[Query]] = {}
    for query in queries:
        if len(query.clip_ids) == 2:
            a, b = (dataset.clip(c).length for c in query.clip_ids)
            groups.setdefault((a, b), []).append(query)
    result: dict[str, float] = {}
    for group in groups.values():
        first = clip_batch(dataset, [q.clip_ids[0] for q in group])
        second = clip_batch(dataset, [q.clip_ids[1] for q in group])
        prob = np.asarray(preference_probabilities(ensemble, first, second)).mean(0)
        result.update({q.id: float(p) for q, p in zip(group, prob)})
    return result
