"""A regret teacher for continuous domains (Knox et al.): it prefers the segment that gives up
less of the optimal value, not the one with the larger partial return.

regret(σ) = V̂(s_0) − (Σ_t r_t + V̂(s_L)), the deterministic form with V* replaced by an
estimate V̂ (e.g. `value_estimation.ValueFunction` fit to a strong policy's Monte-Carlo
returns). Where V* is only estimated, the estimate is part of the label's meaning: every
label records the estimate's source in its provenance.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from embodied_pref.data import Outcome
from embodied_pref.preference.regret import deterministic_regret
from embodied_pref.segments import SegmentBatch
from embodied_pref.teachers import preference_targets

_OUTCOME_OF_TARGET = {1.0: Outcome.LEFT, 0.0: Outcome.RIGHT, 0.5: Outcome.EQUAL}


class ValueEstimate(Protocol):
    def predict(self, obs: np.ndarray) -> np.ndarray:
        """(..., D) -> (...) estimated V*(s)."""

    def provenance(self) -> dict[str, Any]:
        """JSON description of how the estimate was made."""


class RegretTeacher:
    """Labels segment pairs by their regret under a value estimate.

    temperature 0 answers deterministically (|Δregret| <= tie_tolerance is EQUAL); T > 0
    prefers the first segment with probability sigmoid((regret_b − regret_a) / T).
    """

    name = "regret"

    def __init__(
        self, value: ValueEstimate, temperature: float = 0.0, tie_tolerance: float = 1e-6, seed: int = 0
    ) -> None:
        self.value, self.temperature, self.tie_tolerance, self.seed = value, temperature, tie_tolerance, seed
        self._rng = np.random.default_rng(seed)

    def regrets(self, segments: SegmentBatch) -> np.ndarray:
        """(N,) regret of each segment; needs ground-truth rewards."""
        obs = segments.observations
        return deterministic_regret(self.value.predict(obs[:, 0]), segments.gt_rewards.astype(np.float64),
                                    self.value.predict(obs[:, -1]))

    def label_segments(self, first: SegmentBatch, second: SegmentBatch) -> list[Outcome]:
        """One outcome per pair: LEFT (first preferred), RIGHT or EQUAL."""
        targets = preference_targets(-self.regrets(first), -self.regrets(second), self.temperature,
                                     self.tie_tolerance, self._rng)
        return [_OUTCOME_OF_TARGET[float(t)] for t in targets]

    def provenance(self) -> dict[str, Any]:
        return {"kind": "teacher", "name": self.name,
                "params": {"temperature": self.temperature, "tie_tolerance": self.tie_tolerance, "seed": self.seed,
                           "value_source": self.value.provenance()}}
