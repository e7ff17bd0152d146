"""Importing OpenAI VPT recordings (MineRL BASALT's demonstrations) as `Trajectory`s.

A recording is `<name>.mp4` (the game at 640x360, 20 frames a second) beside `<name>.jsonl`,
one JSON object per tick and per video frame:

```
{"mouse": {"dx": 3.0, "dy": -1.0, "buttons": [0], "newButtons": [], "x": 640.0, "y": 360.0, ...},
 "keyboard": {"keys": ["key.keyboard.w"], ...}, "isGuiOpen": false, "hotbar": 0, ...}
```

Ticks become MineRL actions by the rules of VPT's and the BASALT baseline's data loaders:

- keys map to buttons (`KEY_ACTIONS`; other keys are ignored; ESC stays ESC, since BASALT
  ends episodes with it); mouse buttons 0/1/2 are attack/use/pickItem;
- camera = [dy, dx] * 360/2400 degrees ([pitch, yaw]); an axis beyond ±180 becomes 0;
- a recording whose first tick has `newButtons == [0]` starts with attack stuck down:
  attack is removed until a tick whose `newButtons` holds 0 (a real press);
- the hotbar slot can change by scroll wheel, which the recorder misses: a tick whose
  `hotbar` differs from the previous tick's (the first compared with slot 0) presses
  `hotbar.{slot + 1}`;
- null ticks (no mapped key, no mouse button, dx = dy = 0; a hotbar change alone does not
  count, as in VPT's loader) are dropped, keeping their frames out too, so that frames and
  actions stay aligned;
- with the GUI open, a 16-pixel cursor is drawn at the mouse (x, y), given in the
  recorder's 720-pixel-high screen, scaled by frame height / 720.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from embodied_pref.data import Trajectory, check_id
from embodied_pref.data.video import VideoFrames
from embodied_pref.segments import consecutive_clips
from embodied_pref.store import PreferenceDataset

KEY_ACTIONS: dict[str, str] = {
    "key.keyboard.escape": "ESC",
    "key.keyboard.s": "back",
    "key.keyboard.q": "drop",
    "key.keyboard.w": "forward",
    **{f"key.keyboard.{n}": f"hotbar.{n}" for n in range(1, 10)},
    "key.keyboard.e": "inventory",
    "key.keyboard.space": "jump",
    "key.keyboard.a": "left",
    "key.keyboard.d": "right",
    "key.keyboard.left.shift": "sneak",
    "key.keyboard.left.control": "sprint",
    "key.keyboard.f": "swapHands",
}
"""Recorder key name -> MineRL button (VPT's `KEYBOARD_BUTTON_MAPPING`)."""
MOUSE_BUTTON_ACTIONS: dict[int, str] = {0: "attack", 1: "use", 2: "pickItem"}
BUTTONS: tuple[str, ...] = tuple(sorted({*KEY_ACTIONS.values(), *MOUSE_BUTTON_ACTIONS.values()}))
"""The 22 MineRL button actions, in MineRL's (sorted) order."""
ATTACK_BUTTON = 0

DEGREES_PER_MOUSE_COUNT = 360.0 / 2400.0
"""Camera degrees per recorded mouse count (MineRL's mouse sensitivity)."""
CAMERA_LIMIT = 180.0
RECORDER_HEIGHT = 720
"""Height of the screen the recorder's mouse (x, y) is measured in."""
CURSOR_SIZE = 16.0
"""Pixels: the cursor drawn on GUI frames (VPT's 16x16 cursor image, at video resolution)."""
HOTBAR_SLOTS = 9


class RecordingError(ValueError):
    """A VPT recording is malformed: the message starts with the file's path and names the
    line and field concerned, or the frame/line mismatch."""


@dataclasses.dataclass(frozen=True, eq=False)
class RecordingActions:
    """The MineRL actions of one `.jsonl` recording's kept ticks (N of them).

    - ``actions``: each name in `BUTTONS` -> (N,) int64 0/1, ``"camera"`` -> (N, 2) float32
      [pitch, yaw] degrees.
    - ``ticks``: (N,) int64 line index (0-based), which is also the video frame index.
    - ``cursor``: (N, 2) float32 mouse (x, y) in the recorder's 720-pixel-high screen on
      ticks with the GUI open, NaN elsewhere.
    - ``lines``: ticks (lines) in the file, kept or not.
    """

    actions: dict[str, np.ndarray]
    ticks: np.ndarray
    cursor: np.ndarray
    lines: int

    def __len__(self) -> int:
        return len(self.ticks)

    def pointer(self, frame_height: int) -> np.ndarray:
        """(N, 3) float32 (x, y, size) cursors for `VideoFrames` on a video `frame_height`
        pixels high, NaN x where the GUI is closed; positions truncated to whole pixels as
        VPT's loader does."""
        scale = frame_height / RECORDER_HEIGHT
        pointer = np.full((len(self), 3), np.nan, dtype=np.float32)
        pointer[:, :2] = np.trunc(self.cursor * scale)
        pointer[:, 2] = CURSOR_SIZE
        return pointer


def read_recording_actions(
    path: str | os.PathLike[str], *, drop_null: bool = True
) -> RecordingActions:
    """Parse a VPT `.jsonl` file into MineRL actions (rules in the module docstring).

    `drop_null=False` keeps every tick. Raises `RecordingError` naming the file, the line
    (1-based) and the field for a missing file, malformed JSON, a missing field or a wrong type.
    """
    path = Path(path)
    rows: list[np.ndarray] = []
    cameras: list[tuple[float, float]] = []
    cursors: list[tuple[float, float]] = []
    null: list[bool] = []
    attack_stuck = False
    last_hotbar = 0
    for line, tick in _ticks(path):
        field = _FieldReader(path, line, tick)
        mouse, keys = field.mapping("mouse"), field.mapping("keyboard")
        buttons = set(field.int_list(mouse, "mouse.buttons"))
        if line == 1:
            attack_stuck = field.int_list(mouse, "mouse.newButtons") == [ATTACK_BUTTON]
        elif attack_stuck:
            attack_stuck = ATTACK_BUTTON not in field.int_list(mouse, "mouse.newButtons")
        if attack_stuck:
            buttons.discard(ATTACK_BUTTON)
        keys_down = field.str_list(keys, "keyboard.keys")
        pressed = {KEY_ACTIONS[key] for key in keys_down if key in KEY_ACTIONS}
        pressed |= {MOUSE_BUTTON_ACTIONS[b] for b in buttons if b in MOUSE_BUTTON_ACTIONS}
        dx, dy = field.number(mouse, "mouse.dx"), field.number(mouse, "mouse.dy")
        null.append(not pressed and dx == 0 and dy == 0)
        hotbar = field.integer(tick, "hotbar", HOTBAR_SLOTS)
        if hotbar != last_hotbar:
            pressed.add(f"hotbar.{hotbar + 1}")
        last_hotbar = hotbar
        rows.append(np.array([name in pressed for name in BUTTONS], dtype=np.int64))
        camera = [dy * DEGREES_PER_MOUSE_COUNT, dx * DEGREES_PER_MOUSE_COUNT]
        cameras.append(tuple(0.0 if abs(c) > CAMERA_LIMIT else c for c in camera))
        if field.boolean(tick, "isGuiOpen"):
            cursors.append((field.number(mouse, "mouse.x"), field.number(mouse, "mouse.y")))
        else:
            cursors.append((math.nan, math.nan))
    if not rows:
        raise RecordingError(f"{path}: no ticks (the file is empty)")
    ticks = np.flatnonzero(~np.array(null)) if drop_null else np.arange(len(rows))
    pressed_matrix = np.stack(rows)[ticks]
    actions = {name: pressed_matrix[:, i] for i, name in enumerate(BUTTONS)}
    actions["camera"] = np.array(cameras, dtype=np.float32)[ticks]
    return RecordingActions(
        actions=actions,
        ticks=ticks.astype(np.int64),
        cursor=np.array(cursors, dtype=np.float32)[ticks],
        lines=len(rows),
    )


def _ticks(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, JSON object) for each line of a `.jsonl` file."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise RecordingError(f"{path}: file missing") from None
    with handle:
        try:
            for line, text in enumerate(handle, start=1):
                try:
                    tick = json.loads(text)
                except json.JSONDecodeError as err:
                    raise RecordingError(
                        f"{path}: line {line}: not valid JSON ({err.msg} at column {err.colno})"
                    ) from None
                if not isinstance(tick, dict):
                    raise RecordingError(
                        f"{path}: line {line}: expected a JSON object, found {type(tick).__name__}"
                    )
                yield line, tick
        except UnicodeDecodeError as err:
            raise RecordingError(f"{path}: not UTF-8 text ({err})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class _FieldReader:
    """Typed access to one tick's fields, raising `RecordingError` naming file, line, field."""

    path: Path
    line: int
    tick: dict[str, Any]

    def _get(self, parent: Mapping[str, Any], field: str) -> Any:
        key = field.rsplit(".", 1)[-1]
        if key not in parent:
            raise self._error(field, "missing")
        return parent[key]

    def _error(self, field: str, problem: str) -> RecordingError:
        return RecordingError(f"{self.path}: line {self.line}: field '{field}': {problem}")

    def _expected(self, field: str, what: str, value: Any) -> RecordingError:
        return self._error(field, f"expected {what}, found {value!r}")

    def mapping(self, field: str) -> Mapping[str, Any]:
        value = self._get(self.tick, field)
        if not isinstance(value, dict):
            raise self._expected(field, "an object", value)
        return value

    def number(self, parent: Mapping[str, Any], field: str) -> float:
        value = self._get(parent, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._expected(field, "a finite number", value)
        if not math.isfinite(value):
            raise self._expected(field, "a finite number", value)
        return float(value)

    def integer(self, parent: Mapping[str, Any], field: str, bound: int) -> int:
        value = self._get(parent, field)
        if not _is_int(value) or not 0 <= value < bound:
            raise self._expected(field, f"an int in [0, {bound - 1}]", value)
        return value

    def boolean(self, parent: Mapping[str, Any], field: str) -> bool:
        value = self._get(parent, field)
        if not isinstance(value, bool):
            raise self._expected(field, "true or false", value)
        return value

    def int_list(self, parent: Mapping[str, Any], field: str) -> list[int]:
        value = self._get(parent, field)
        if not isinstance(value, list) or not all(_is_int(v) for v in value):
            raise self._expected(field, "a list of ints", value)
        return value

    def str_list(self, parent: Mapping[str, Any], field: str) -> list[str]:
        value = self._get(parent, field)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._expected(field, "a list of strings", value)
        return value


ActionFlattener = Callable[[Mapping[str, np.ndarray]], np.ndarray]
"""Columnar MineRL actions (buttons (N,), camera (N, 2)) -> (N, A) float32 vectors, e.g.
`envs.basalt.flatten_action`."""

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def recording_id(video: str | os.PathLike[str]) -> str:
    """The trajectory id of a recording: its name, with characters outside [A-Za-z0-9_-]
    replaced by "_" (and cut to 128), so that importing a recording twice is detected."""
    return check_id("trajectory_id", _ID_UNSAFE.sub("_", Path(video).stem)[:128])


def recording_trajectory(
    video: str | os.PathLike[str],
    flatten: ActionFlattener,
    *,
    size: tuple[int, int] | None = None,
    drop_null: bool = True,
    env_id: str = "",
    trajectory_id: str | None = None,
) -> Trajectory:
    """The recording `<name>.mp4` + `<name>.jsonl` as a `Trajectory` of T steps.

    The N kept ticks give T+1 = N frames, `VideoFrames(video, indices=ticks, size=size,
    pointer=cursors)` (decoded on demand), and T = N-1 actions `flatten(actions)`: the last
    kept tick's action is dropped, since no frame shows what it did. Observations are
    (T+1, 0) float32 (the frames carry the state); there is no reward. The id defaults to
    `recording_id(video)`. `size` is (height, width) of the decoded frames.

    Raises `RecordingError` naming the file for malformed actions, for a video whose frame
    count differs from the number of lines (a truncated recording), and for fewer than two
    kept ticks.
    """
    video = Path(video)
    jsonl = video.with_suffix(".jsonl")
    recording = read_recording_actions(jsonl, drop_null=drop_null)
    source = VideoFrames(video)
    if len(source) != recording.lines:
        raise RecordingError(
            f"{video}: {len(source)} frames, but {jsonl} has {recording.lines} lines (one per "
            "frame): a truncated recording?"
        )
    if len(recording) < 2:
        raise RecordingError(
            f"{jsonl}: {len(recording)} ticks with an action (of {recording.lines}); a trajectory "
            "needs at least 2"
        )
    frames = VideoFrames(
        video, indices=recording.ticks, size=size, pointer=recording.pointer(source.shape[1])
    )
    actions = np.asarray(flatten(recording.actions), dtype=np.float32)[:-1]
    return Trajectory(
        observations=np.zeros((len(recording), 0), dtype=np.float32),
        actions=actions,
        rewards=None,
        frames=frames,
        env_id=env_id,
        metadata={"source": "vpt", "recording": video.stem, "ticks": recording.lines},
        id=recording_id(video) if trajectory_id is None else trajectory_id,
    )


@dataclasses.dataclass(frozen=True)
class VPTImportConfig:
    """How `import_recordings` turns a directory of VPT recordings into a dataset."""

    clip_length: int = 50
    """Steps per clip; each trajectory is cut into consecutive, non-overlapping clips (the
    steps left over at its end are in none)."""
    size: tuple[int, int] | None = (128, 128)
    """(height, width) of the decoded frames (VPT's agents see 128x128); None: 360x640."""
    drop_null: bool = True
    """Drop null ticks (no key, no button, no mouse motion), as VPT does."""
    env_id: str = ""
    """Recorded in every trajectory, e.g. "embodied_pref/BasaltFindCave-v0"."""
    max_recordings: int | None = None
    """Import at most this many recordings (in name order); None: all."""
    skip_bad: bool = False
    """Skip malformed or truncated recordings (listed in the summary) instead of raising."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not _is_int(self.clip_length) or self.clip_length < 1:
            raise ValueError(
                f"field 'clip_length': expected an int >= 1, found {self.clip_length!r}"
            )
        limit = self.max_recordings
        if limit is not None and (not _is_int(limit) or limit < 0):
            raise ValueError(
                f"field 'max_recordings': expected an int >= 0 or None, found {limit!r}"
            )


@dataclasses.dataclass(frozen=True)
class VPTImportSummary:
    """What `import_recordings` did."""

    trajectory_ids: tuple[str, ...]
    """Trajectories stored by this call."""
    clips: int
    """Clips stored by this call."""
    already_stored: tuple[str, ...]
    """Recordings whose trajectory the dataset held before (only their missing clips are cut)."""
    skipped: dict[str, str]
    """Recording name -> the error that made `skip_bad` skip it."""


def recording_videos(directory: str | os.PathLike[str]) -> list[Path]:
    """The `<name>.mp4` files of a recordings directory, in name order. Raises
    `RecordingError` naming the file when an mp4 has no `.jsonl` beside it, or a `.jsonl`
    no mp4."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordingError(f"{directory}: not a directory")
    videos = {p.stem: p for p in directory.glob("*.mp4")}
    actions = {p.stem: p for p in directory.glob("*.jsonl")}
    for stem in sorted(videos.keys() ^ actions.keys()):
        lonely, partner = (videos[stem], ".jsonl") if stem in videos else (actions[stem], ".mp4")
        raise RecordingError(f"{lonely}: no {lonely.with_suffix(partner).name} beside it")
    return [videos[stem] for stem in sorted(videos)]


def import_recordings(
    directory: str | os.PathLike[str],
    dataset: PreferenceDataset,
    flatten: ActionFlattener,
    config: VPTImportConfig = VPTImportConfig(),
) -> VPTImportSummary:
    """Store every recording of `directory` in `dataset` as a trajectory (see
    `recording_trajectory`) cut into clips of `config.clip_length` steps.

    Recordings are read and stored one at a time (frames stay in their mp4s), so memory
    does not grow with the directory. A recording whose trajectory id is already stored is
    left as it is, so an interrupted import resumes by running it again.
    """
    videos = recording_videos(directory)[: config.max_recordings]
    stored_before = set(dataset.trajectory_ids())
    stored: list[str] = []
    already: list[str] = []
    skipped: dict[str, str] = {}
    clips = 0
    with_clips = {clip.trajectory_id for clip in dataset.clips()}
    for video in tqdm(videos, desc="VPT recordings", unit="recording", disable=not config.progress):
        trajectory_id = recording_id(video)
        if trajectory_id in stored_before:
            if trajectory_id not in with_clips:  # stopped before its clips, or too short for one
                clips += _cut_clips(dataset, trajectory_id, config.clip_length)
            already.append(video.stem)
            continue
        try:
            trajectory = recording_trajectory(
                video, flatten, size=config.size, drop_null=config.drop_null, env_id=config.env_id
            )
        except ValueError as err:  # RecordingError, VideoError, or a bad flattened action
            if not config.skip_bad:
                raise
            skipped[video.stem] = str(err)
            continue
        dataset.add_trajectory(trajectory)
        clips += _cut_clips(dataset, trajectory.id, config.clip_length)
        stored.append(trajectory.id)
    return VPTImportSummary(tuple(stored), clips, tuple(already), skipped)


def _cut_clips(dataset: PreferenceDataset, trajectory_id: str, clip_length: int) -> int:
    """Store consecutive, non-overlapping clips of a stored trajectory; return how many."""
    clips = consecutive_clips(trajectory_id, dataset.trajectory_info(trajectory_id)["length"], clip_length)
    dataset.add_clips(clips)
    return len(clips)
