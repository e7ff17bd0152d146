"""The data model every domain, teacher, learner and the labeling UI share.

```
Trajectory ──cut──▶ Clip (trajectory_id, start, length) ──▶ Query (2 or 3 clips) ──▶ Label
```

A trajectory's frames are an in-memory array or a ``VideoFrames`` over an mp4 (decoded on
demand, see ``embodied_pref.data.video``); a ``Segment`` always holds decoded arrays.
All classes are frozen dataclasses validated in ``__post_init__``; a bad value raises
``ValueError`` naming the field, what was expected and what was found. Ids are short
strings of ``[A-Za-z0-9_-]`` (uuid4 hex by default) because they also name files on disk.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from embodied_pref.data.video import VideoFrames

FORMAT_VERSION = 5
"""Version of the on-disk dataset format (see ``embodied_pref.store``)."""

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def new_id() -> str:
    """A fresh random id: 32 lowercase hex characters (uuid4)."""
    return uuid.uuid4().hex


class Outcome(str, enum.Enum):
    """What a teacher answered to a query."""

    LEFT = "left"
    """The first clip is better."""
    RIGHT = "right"
    """The second clip is better."""
    EQUAL = "equal"
    """Equally good (a 0.5 training target)."""
    CANNOT_TELL = "cannot_tell"
    """The teacher could not judge; no training signal."""
    SKIP = "skip"
    """The teacher declined the query; no training signal."""
    RANKING = "ranking"
    """A full ranking of the query's clips, given in ``Label.ranking``."""


# --- validation helpers -------------------------------------------------------------------


def check_id(field: str, value: object) -> str:
    """Return ``value`` if it is a valid id, else raise ``ValueError`` naming ``field``."""
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"field '{field}': expected an id of 1-128 characters [A-Za-z0-9_-], found {value!r}"
        )
    return value


def _check_json(field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"field '{field}': expected a mapping, found {type(value).__name__}")
    try:
        text = json.dumps(dict(value), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"field '{field}': expected JSON-serializable values ({err})") from None
    return json.loads(text)


def _float_array(field: str, value: Any, ndim: int, allow_none: bool = False) -> np.ndarray | None:
    """Coerce to a finite float32 array with ``ndim`` dimensions."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"field '{field}': expected an array, found None")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"field '{field}': expected a float array ({err})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"field '{field}': expected a float32 array, found dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim != ndim:
        raise ValueError(
            f"field '{field}': expected {ndim} dimensions, found shape {tuple(arr.shape)}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"field '{field}': expected finite values, found NaN or inf")
    return arr


def _frames_array(field: str, value: Any, allow_video: bool) -> np.ndarray | VideoFrames | None:
    """Coerce to a (N, H, W, 3) uint8 array; integer input must lie in [0, 255]. A
    ``VideoFrames`` stays as it is if ``allow_video``, else it is decoded."""
    if value is None or (allow_video and isinstance(value, VideoFrames)):
        return value
    arr = np.asarray(value)
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu":
            raise ValueError(f"field '{field}': expected a uint8 array, found dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                f"field '{field}': expected values in [0, 255], found range "
                f"[{arr.min()}, {arr.max()}]"
            )
        arr = arr.astype(np.uint8)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(
            f"field '{field}': expected shape (N, H, W, 3), found {tuple(arr.shape)}"
        )
    return arr


def _coerce_step_arrays(obj: Segment | Trajectory) -> None:
    """Coerce ``obj``'s four arrays in place and check that they agree on the number of
    steps T: observations and frames T+1 rows, actions and rewards T."""
    observations = _float_array("observations", obj.observations, 2)
    actions = _float_array("actions", obj.actions, 2)
    rewards = _float_array("rewards", obj.rewards, 1, allow_none=True)
    frames = _frames_array("frames", obj.frames, allow_video=isinstance(obj, Trajectory))
    _set(obj, "observations", observations)
    _set(obj, "actions", actions)
    _set(obj, "rewards", rewards)
    _set(obj, "frames", frames)
    steps = actions.shape[0]
    if steps < 1:
        raise ValueError(
            f"field 'actions': expected at least one step, found shape {actions.shape}"
        )
    if observations.shape[0] != steps + 1:
        raise ValueError(
            f"field 'observations': expected {steps + 1} rows (actions + 1), "
            f"found shape {tuple(observations.shape)}"
        )
    if rewards is not None and rewards.shape != (steps,):
        raise ValueError(
            f"field 'rewards': expected shape ({steps},), found {tuple(rewards.shape)}"
        )
    if frames is not None and frames.shape[0] != steps + 1:
        source = f" in {frames.path}" if isinstance(frames, VideoFrames) else ""
        raise ValueError(
            f"field 'frames': expected {steps + 1} frames (actions + 1), "
            f"found shape {tuple(frames.shape)}{source}"
        )


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --- arrays -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Segment:
    """The arrays of one clip (L steps).

    - ``observations``: (L+1, D) float32, the last row is the state after the last action.
    - ``actions``: (L, A) float32.
    - ``rewards``: (L,) float32 ground-truth reward, or None.
    - ``frames``: (L+1, H, W, 3) uint8, or None.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray | None = None
    frames: np.ndarray | None = None

    def __post_init__(self) -> None:
        _coerce_step_arrays(self)

    @property
    def length(self) -> int:
        """Number of steps L."""
        return int(self.actions.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
    """One episode (or a piece of one) of T steps.

    - ``observations``: (T+1, D) float32 state observations, including the final next state.
    - ``actions``: (T, A) float32.
    - ``rewards``: (T,) float32 ground-truth reward, or None if the domain has none.
    - ``frames``: (T+1, H, W, 3) uint8 rendered frames (an array, or a ``VideoFrames`` that
      decodes them from an mp4 on demand), or None: what people compare.
    - ``metadata``: JSON-serializable free-form mapping.
    - ``views``: further cameras of the same steps, name -> (T+1, H', W', 3) frames like
      ``frames`` (a robot's wrist camera beside its scene camera), for encoders that see
      several cameras; ``frames`` are needed with them.

    Arrays are coerced to float32/uint8; NaN or inf in observations/actions/rewards is rejected.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray | None
    frames: np.ndarray | VideoFrames | None = None
    env_id: str = ""
    seed: int | None = None
    embodiment: str = ""
    terminated: bool = False
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    id: str = dataclasses.field(default_factory=new_id)
    views: Mapping[str, np.ndarray | VideoFrames] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _coerce_step_arrays(self)
        _set(self, "views", self._checked_views())
        for name in ("env_id", "embodiment"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(
                    f"field '{name}': expected str, found {type(getattr(self, name)).__name__}"
                )
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
                raise ValueError(
                    f"field 'seed': expected int or None, found {type(self.seed).__name__}"
                )
            _set(self, "seed", int(self.seed))
        if not isinstance(self.terminated, (bool, np.bool_)):
            raise ValueError(
                f"field 'terminated': expected bool, found {type(self.terminated).__name__}"
            )
        _set(self, "terminated", bool(self.terminated))
        _set(self, "metadata", _check_json("metadata", self.metadata))
        check_id("id", self.id)

    def _checked_views(self) -> dict[str, np.ndarray | VideoFrames]:
        if not isinstance(self.views, Mapping):
            raise ValueError(f"field 'views': expected a mapping of camera name to frames, "
                             f"found {type(self.views).__name__}")
        if self.views and self.frames is None:
            raise ValueError("field 'views': further cameras need the trajectory's own frames")
        views = {}
        for name, frames in self.views.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"field 'views': expected camera names (non-empty str), found {name!r}")
            views[name] = _frames_array(f"views[{name!r}]", frames, allow_video=True)
            if views[name].shape[0] != self.length + 1:
                raise ValueError(f"field 'views[{name!r}]': expected {self.length + 1} frames (actions + 1), "
                                 f"found shape {tuple(views[name].shape)}")
        return views

    @property
    def length(self) -> int:
        """Number of steps T."""
        return int(self.actions.shape[0])

    def view_frames(self, camera: str | None, start: int, length: int) -> np.ndarray | None:
        """The frames ``[start, start+length]`` of further camera ``camera`` (None: ``frames``),
        decoded; those of a clip of the steps ``start .. start+length-1``."""
        self._check_steps(start, length)
        if camera is None:
            return None if self.frames is None else np.asarray(self.frames[start:start + length + 1])
        if camera not in self.views:
            raise ValueError(f"field 'camera': trajectory {self.id} has no camera {camera!r} "
                             f"(its further cameras: {sorted(self.views) or 'none'})")
        return np.asarray(self.views[camera][start:start + length + 1])

    def segment(self, start: int, length: int) -> Segment:
        """The steps ``start .. start+length-1``: observations/frames ``[start, start+length]``.

        Video-backed frames are decoded here, and only the clip's.
        """
        self._check_steps(start, length)
        stop = start + length
        return Segment(
            observations=self.observations[start : stop + 1],
            actions=self.actions[start:stop],
            rewards=None if self.rewards is None else self.rewards[start:stop],
            frames=None if self.frames is None else self.frames[start : stop + 1],
        )

    def _check_steps(self, start: int, length: int) -> None:
        if not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"field 'start': expected an int >= 0, found {start!r}")
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"field 'length': expected an int >= 1, found {length!r}")
        if start + length > self.length:
            raise ValueError(
                f"field 'length': clip [{start}, {start + length}) does not fit in trajectory "
                f"{self.id} of {self.length} steps"
            )


# --- records ------------------------------------------------------------------------------


def _check_int(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"field '{field}': expected an int >= {minimum}, found {value!r}")
    return int(value)


def _check_float(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"field '{field}': expected a float, found {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"field '{field}': expected a finite float, found {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Clip:
    """A slice of a stored trajectory: steps ``start .. start+length-1``."""

    trajectory_id: str
    start: int
    length: int
    id: str = dataclasses.field(default_factory=new_id)

    def __post_init__(self) -> None:
        check_id("trajectory_id", self.trajectory_id)
        _set(self, "start", _check_int("start", self.start, 0))
        _set(self, "length", _check_int("length", self.length, 1))
        check_id("id", self.id)


@dataclasses.dataclass(frozen=True)
class Query:
    """Clips shown together: 2 (pairwise comparison) or 3 (triplet ranking).

    ``selector`` names who or what chose the query (``"uniform"``, ``"disagreement"``, ...);
    ``score`` is the selector's reason (e.g. ensemble disagreement), ``round`` the loop
    iteration that asked it.
    """

    clip_ids: tuple[str, ...]
    selector: str = "uniform"
    score: float | None = None
    round: int = 0
    created_at: float = dataclasses.field(default_factory=time.time)
    id: str = dataclasses.field(default_factory=new_id)

    def __post_init__(self) -> None:
        if isinstance(self.clip_ids, str) or not hasattr(self.clip_ids, "__iter__"):
            raise ValueError(
                f"field 'clip_ids': expected a sequence of 2 or 3 clip ids, found {self.clip_ids!r}"
            )
        clip_ids = tuple(self.clip_ids)
        if len(clip_ids) not in (2, 3):
            raise ValueError(
                f"field 'clip_ids': expected 2 (pairwise) or 3 (triplet) clip ids, "
                f"found {len(clip_ids)}"
            )
        for clip_id in clip_ids:
            check_id("clip_ids", clip_id)
        if len(set(clip_ids)) != len(clip_ids):
            raise ValueError(f"field 'clip_ids': expected distinct clip ids, found {clip_ids}")
        _set(self, "clip_ids", clip_ids)
        if not isinstance(self.selector, str) or not self.selector:
            raise ValueError(f"field 'selector': expected a non-empty str, found {self.selector!r}")
        if self.score is not None:
            _set(self, "score", _check_float("score", self.score))
        _set(self, "round", _check_int("round", self.round, 0))
        _set(self, "created_at", _check_float("created_at", self.created_at))
        check_id("id", self.id)


OUTCOME_TARGETS = {Outcome.LEFT: 1.0, Outcome.RIGHT: 0.0, Outcome.EQUAL: 0.5}


@dataclasses.dataclass(frozen=True)
class Label:
    """A teacher's answer to one query.

    ``ranking`` (required iff ``outcome`` is RANKING) lists indices into the query's clips,
    best first. ``ties`` (RANKING only) lists the positions ``k`` of ``ranking`` whose clip
    is as good as the next one: ``ranking=(2, 0, 1), ties=(0,)`` reads clip 2 = clip 0 ≻
    clip 1; ``ties=(0, 1)`` ranks all three equal. ``source`` records provenance, e.g.
    ``{"kind": "teacher", "name": "oracle", "params": {...}}`` or ``{"kind": "human"}``.
    """

    query_id: str
    outcome: Outcome
    ranking: tuple[int, ...] | None = None
    annotator: str = ""
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    created_at: float = dataclasses.field(default_factory=time.time)
    id: str = dataclasses.field(default_factory=new_id)
    ties: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_id("query_id", self.query_id)
        try:
            outcome = Outcome(self.outcome)
        except ValueError:
            valid = ", ".join(repr(o.value) for o in Outcome)
            raise ValueError(
                f"field 'outcome': expected one of {valid}, found {self.outcome!r}"
            ) from None
        _set(self, "outcome", outcome)
        if outcome is Outcome.RANKING:
            _set(self, "ranking", _check_ranking(self.ranking))
            _set(self, "ties", _check_ties(self.ties, len(self.ranking)))
        else:
            if self.ranking is not None:
                raise ValueError(
                    f"field 'ranking': expected None for outcome {outcome.value!r}, "
                    f"found {self.ranking!r}"
                )
            empty = self.ties is None or (isinstance(self.ties, (tuple, list)) and not self.ties)
            if not empty:
                raise ValueError(
                    f"field 'ties': expected no ties for outcome {outcome.value!r}, "
                    f"found {self.ties!r}"
                )
            _set(self, "ties", ())
        if not isinstance(self.annotator, str):
            raise ValueError(
                f"field 'annotator': expected str, found {type(self.annotator).__name__}"
            )
        _set(self, "source", _check_json("source", self.source))
        _set(self, "created_at", _check_float("created_at", self.created_at))
        check_id("id", self.id)

    def target(self) -> float | None:
        """Probability that the FIRST clip is preferred (1, 0 or 0.5); None: no signal."""
        return OUTCOME_TARGETS.get(self.outcome)

    def implied_preferences(self, n_clips: int) -> list[tuple[int, int, float]]:
        """The pairwise preferences this answer states about a query of ``n_clips`` clips:
        ``(i, j, P(clip i ≻ clip j))`` with 1 or 0.5 (a tie) for a ranking, every pair it
        orders; one ``(0, 1, target)`` for left/right/equal; none for skip/cannot-tell."""
        if self.outcome is not Outcome.RANKING:
            target = self.target()
            return [] if target is None or n_clips != 2 else [(0, 1, target)]
        ranking = self.ranking
        return [
            (ranking[a], ranking[b], 0.5 if all(k in self.ties for k in range(a, b)) else 1.0)
            for a in range(len(ranking)) for b in range(a + 1, len(ranking))
        ]


def _check_ranking(ranking: object) -> tuple[int, ...]:
    if ranking is None or isinstance(ranking, str) or not hasattr(ranking, "__iter__"):
        raise ValueError(
            f"field 'ranking': expected a permutation of clip indices for outcome 'ranking', "
            f"found {ranking!r}"
        )
    items = tuple(ranking)
    if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in items):
        raise ValueError(f"field 'ranking': expected int indices, found {items!r}")
    items = tuple(int(i) for i in items)
    if len(items) < 2 or sorted(items) != list(range(len(items))):
        raise ValueError(
            f"field 'ranking': expected a permutation of 0..n-1 (n >= 2), found {items!r}"
        )
    return items


def _check_ties(ties: object, n: int) -> tuple[int, ...]:
    if ties is None:
        return ()
    if isinstance(ties, str) or not hasattr(ties, "__iter__"):
        raise ValueError(f"field 'ties': expected a sequence of ranking positions, found {ties!r}")
    items = tuple(ties)
    if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in items):
        raise ValueError(f"field 'ties': expected int positions, found {items!r}")
    items = tuple(int(i) for i in items)
    if any(not 0 <= i <= n - 2 for i in items) or list(items) != sorted(set(items)):
        raise ValueError(
            f"field 'ties': expected increasing distinct positions in 0..{n - 2} (position k "
            f"ties ranking[k] with ranking[k+1]), found {items!r}"
        )
    return items
