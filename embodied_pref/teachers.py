"""Synthetic teachers from B-Pref (Lee et al. 2021): preference labels from ground-truth reward.

B-Pref writes its six teachers as one labeling rule with parameters; so does this module.
For a batch of segment pairs with per-step ground-truth rewards `rewards_a, rewards_b (N, L)`:

1. skip: when `skip_fraction > 0`, drop the pairs whose larger undiscounted return is at most
   `skip_fraction · scale` (B-Pref keeps a pair iff max(Σr_a, Σr_b) > threshold);
2. equal: mark the pairs with |Σr_a − Σr_b| < `equal_fraction · |scale|` (undiscounted returns,
   as in B-Pref's code) to be labelled EQUAL at the end;
3. myopic: score each segment by Σ_t γ^(L−1−t) r_t, the last step weighing 1;
4. rational (β = inf): b is preferred iff score_a < score_b (an exact tie prefers a);
   stochastic (β finite): b is preferred with probability softmax(β·[score_a, score_b])[1];
5. mistake: flip the label with probability `mistake_prob`;
6. the pairs marked in step 2 become EQUAL, whatever steps 3–5 said.

`scale` is B-Pref's m = mean episode return × segment length / episode length
(`teacher_scale`). When rewards are negative, m < 0:
- the equal threshold uses |m|, so a near-tie is a near-tie whatever the sign of the rewards;
- skipping follows B-Pref's code, which skips only when its threshold is positive: with
  m <= 0 "both returns below a tenth of a typical segment's" would hold for almost every pair
  of an all-negative reward (X-MAGICAL's), so the skip teacher does not skip there, and
  constructing one warns about it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import expit

from embodied_pref.data import Outcome

if TYPE_CHECKING:
    from embodied_pref.segments import SegmentBatch


@dataclass(frozen=True)
class TeacherConfig:
    """Parameters of the B-Pref labeling rule; the defaults give the rational oracle."""

    name: str
    """What the teacher is called in label provenance, e.g. "oracle"."""
    beta: float = math.inf
    """Rationality: inf answers deterministically; finite samples Bradley-Terry with softmax(β·R)."""
    gamma: float = 1.0
    """Myopia: step t of L weighs γ^(L−1−t); 1 means plain sums."""
    mistake_prob: float = 0.0
    """Probability ε of flipping a decisive label, in [0, 0.5]."""
    skip_fraction: float = 0.0
    """Skip a pair when both returns are at most this fraction of the scale m; 0 never skips."""
    equal_fraction: float = 0.0
    """Answer EQUAL when the returns differ by less than this fraction of |m|; 0 never does."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TeacherConfig.name: expected a non-empty string, found {self.name!r}")
        if not self.beta > 0:
            raise ValueError(f"TeacherConfig.beta: expected > 0 (inf for rational), found {self.beta}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"TeacherConfig.gamma: expected 0 < gamma <= 1, found {self.gamma}")
        if not 0 <= self.mistake_prob <= 0.5:
            raise ValueError(
                f"TeacherConfig.mistake_prob: expected 0 <= mistake_prob <= 0.5, found {self.mistake_prob}"
            )
        for field in ("skip_fraction", "equal_fraction"):
            value = getattr(self, field)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"TeacherConfig.{field}: expected a finite value >= 0, found {value}")


PRESETS: dict[str, TeacherConfig] = {
    "oracle": TeacherConfig("oracle"),
    "stoch": TeacherConfig("stoch", beta=1.0),
    "mistake": TeacherConfig("mistake", mistake_prob=0.1),
    "skip": TeacherConfig("skip", skip_fraction=0.1),
    "equal": TeacherConfig("equal", equal_fraction=0.1),
    "myopic": TeacherConfig("myopic", gamma=0.9),
}
"""B-Pref's six teachers with the paper's default parameters."""


def teacher_scale(mean_episode_return: float, segment_length: int, episode_length: int) -> float:
    """B-Pref's threshold scale m: the return of a typical segment.

    m = mean_episode_return × segment_length / episode_length.
    """
    if segment_length <= 0 or episode_length <= 0:
        raise ValueError(
            f"teacher_scale: expected positive lengths, found segment_length={segment_length}, "
            f"episode_length={episode_length}"
        )
    return float(mean_episode_return) * segment_length / episode_length


_OUTCOMES = np.array([Outcome.LEFT, Outcome.RIGHT, Outcome.EQUAL, Outcome.SKIP], dtype=object)


class SyntheticTeacher:
    """Labels segment pairs from their ground-truth rewards with the B-Pref rule.

    The teacher owns a `np.random.Generator` seeded with `seed`: a fresh teacher with the same
    seed gives the same labels for the same calls; successive `label` calls continue one stream.
    """

    def __init__(self, config: TeacherConfig, scale: float = 1.0, seed: int = 0) -> None:
        if not math.isfinite(scale):
            raise ValueError(f"SyntheticTeacher.scale: expected a finite number, found {scale}")
        self.config = config
        self.scale = float(scale)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        if config.skip_fraction > 0 and self.skip_threshold <= 0:
            warnings.warn(
                f"teacher {config.name!r}: scale {self.scale} <= 0 gives no positive skip "
                "threshold, so no pair is skipped (as in B-Pref)",
                stacklevel=2,
            )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def skip_threshold(self) -> float:
        """skip_fraction · m, signed (see the module docstring)."""
        return self.config.skip_fraction * self.scale

    @property
    def equal_threshold(self) -> float:
        """equal_fraction · |m|."""
        return self.config.equal_fraction * abs(self.scale)

    def provenance(self) -> dict[str, Any]:
        """JSON-serializable description of this teacher; an infinite beta is written "inf".

        `float(params["beta"])` reads it back either way.
        """
        params: dict[str, Any] = dataclasses.asdict(self.config)
        del params["name"]
        if math.isinf(params["beta"]):
            params["beta"] = "inf"
        params.update(scale=self.scale, seed=self.seed)
        return {"kind": "teacher", "name": self.name, "params": params}

    def label(self, rewards_a: np.ndarray, rewards_b: np.ndarray) -> list[Outcome]:
        """One outcome per pair: LEFT (a preferred), RIGHT (b preferred), EQUAL or SKIP.

        rewards_a, rewards_b: (N, L) per-step ground-truth rewards -> list of N outcomes.
        """
        rewards_a = np.asarray(rewards_a, dtype=np.float64)
        rewards_b = np.asarray(rewards_b, dtype=np.float64)
        if rewards_a.ndim != 2 or rewards_a.shape != rewards_b.shape:
            raise ValueError(
                f"SyntheticTeacher.label: expected rewards_a and rewards_b of one shape (N, L), "
                f"found {rewards_a.shape} and {rewards_b.shape}"
            )
        n, length = rewards_a.shape
        cfg = self.config

        return_a, return_b = rewards_a.sum(1), rewards_b.sum(1)
        skipped = (
            np.maximum(return_a, return_b) <= self.skip_threshold
            if cfg.skip_fraction > 0 and self.skip_threshold > 0
            else np.zeros(n, dtype=bool)
        )
        equal = np.abs(return_a - return_b) < self.equal_threshold

        weights = cfg.gamma ** np.arange(length - 1, -1, -1, dtype=np.float64)
        score_a, score_b = rewards_a @ weights, rewards_b @ weights
        if math.isinf(cfg.beta):
            prefers_b = score_a < score_b
        else:
            prefers_b = self._rng.random(n) < expit(cfg.beta * (score_b - score_a))
        if cfg.mistake_prob > 0:
            prefers_b ^= self._rng.random(n) < cfg.mistake_prob

        code = prefers_b.astype(np.intp)  # indexes _OUTCOMES
        code[equal] = 2
        code[skipped] = 3
        return list(_OUTCOMES[code])

    def label_segments(self, first: SegmentBatch, second: SegmentBatch) -> list[Outcome]:
        """`label` on the ground-truth rewards of two equally long segment batches."""
        return self.label(first.gt_rewards, second.gt_rewards)

    def __repr__(self) -> str:
        return f"SyntheticTeacher({self.config!r}, scale={self.scale}, seed={self.seed})"


def make_teacher(name: str, scale: float = 1.0, seed: int = 0, **overrides: Any) -> SyntheticTeacher:
    """A preset teacher by name, with any `TeacherConfig` field overridden.

    make_teacher("stoch", scale=m, beta=10.0)
    """
    if name not in PRESETS:
        raise ValueError(f"unknown teacher {name!r}; expected one of: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(TeacherConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"make_teacher({name!r}): unknown TeacherConfig field(s) {unknown}; "
            f"expected some of: {', '.join(sorted(fields))}"
        )
    return SyntheticTeacher(dataclasses.replace(PRESETS[name], **overrides), scale=scale, seed=seed)


def preference_targets(
    score_a: np.ndarray,
    score_b: np.ndarray,
    temperature: float = 0.0,
    tie_tolerance: float = 1e-9,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Labels from any preference model's segment scores (partial return Σr, or −regret).

    score_a, score_b: (N,) -> targets (N,) float: 1 (a preferred), 0 (b preferred), 0.5 (tie).
    temperature 0 answers deterministically and calls |score_a − score_b| <= tie_tolerance a tie;
    temperature T > 0 samples a ≻ b with probability sigmoid((score_a − score_b) / T) (needs `rng`).
    """
    score_a = np.asarray(score_a, dtype=np.float64)
    score_b = np.asarray(score_b, dtype=np.float64)
    if score_a.ndim != 1 or score_a.shape != score_b.shape:
        raise ValueError(f"preference_targets: expected score_a and score_b of one shape (N,), "
                         f"found {score_a.shape} and {score_b.shape}")
    if not temperature >= 0 or not tie_tolerance >= 0:
        raise ValueError(f"preference_targets: expected temperature >= 0 and tie_tolerance >= 0, "
                         f"found {temperature} and {tie_tolerance}")
    diff = score_a - score_b
    if temperature == 0:
        return np.where(np.abs(diff) <= tie_tolerance, 0.5, (diff > 0).astype(np.float64))
    if rng is None:
        raise ValueError("preference_targets: a temperature > 0 samples labels and needs rng")
    return (rng.random(len(diff)) < expit(diff / temperature)).astype(np.float64)
