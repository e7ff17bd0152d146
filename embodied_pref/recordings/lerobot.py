"""LeRobot datasets (codebase versions v2.1 and v3.0) read as `RecordedEpisode`s and written back.

```
info = lerobot_info("so100_pick")                    # version, fps, cameras, dims: metadata only
for episode in read_lerobot("so100_pick", episodes=[3, 7]):   # one episode in memory at a time
    ...
write_lerobot(episodes, "export", version="v3.0", robot_type="so100")   # lerobot_writer
```

The layouts (LeRobot's ``datasets/utils.py``), paths from the templates in ``meta/info.json``:

```
v3.0  meta/info.json              codebase_version, fps, features, totals, chunks_size,
                                  data_path, video_path, robot_type, splits
      meta/tasks.parquet          task_index, task
      meta/episodes/chunk-C/file-F.parquet   one row per episode: episode_index, length, tasks,
                                  data/{chunk,file}_index, dataset_{from,to}_index,
                                  videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}
      data/chunk-C/file-F.parquet one row per frame, many episodes per file
      videos/<key>/chunk-C/file-F.mp4         many episodes per file, one after the other
v2.1  meta/episodes.jsonl         {episode_index, tasks, length}; meta/tasks.jsonl {task_index, task}
      data/chunk-C/episode_E.parquet          one file per episode (C = E // chunks_size)
      videos/chunk-C/<key>/episode_E.mp4      one file per episode and camera
```

A frame row holds ``timestamp``, ``frame_index`` (0..N-1 within its episode), ``episode_index``,
``index`` (over the whole dataset), ``task_index``, the state and action vectors and optionally
``next.reward``. Frame ``i`` of an episode is frame ``round(from_timestamp * fps) + i`` of its
mp4 (``from_timestamp`` is 0 in v2.1). Cameras are the features of dtype "video"; episodes
keep their frames in the mp4 files as `VideoFrames`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embodied_pref.data.video import VideoError, VideoFrames, frame_count
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError

READABLE_VERSIONS = ("v2.0", "v2.1", "v3.0")
"""Codebase versions `read_lerobot` reads (v2.0 differs from v2.1 only in its stats files)."""

WRITABLE_VERSIONS = ("v2.1", "v3.0")
"""Codebase versions `write_lerobot` writes."""

CAMERA_PREFIX = "observation.images."
"""What `write_lerobot` puts before a camera name that is not already an observation key."""

REWARD_KEY = "next.reward"
"""The feature holding the reward after each frame's action."""

DONE_KEY = "next.done"
"""The feature that is True on an episode's last frame (written with rewards)."""

INFO_FILE = "meta/info.json"
DATA_PATH = {"v2.1": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
              "v3.0": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"}
VIDEO_PATH = {"v2.1": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
               "v3.0": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
FILE_SIZE_MB = {"data_files_size_in_mb": 100, "video_files_size_in_mb": 200}  # LeRobot's defaults
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@dataclasses.dataclass(frozen=True)
class LeRobotInfo:
    """What a LeRobot dataset holds, from ``meta/info.json`` alone."""

    root: Path
    """The dataset's directory."""
    version: str
    """``codebase_version``: "v2.0", "v2.1" or "v3.0"."""
    fps: float
    """Frames per second of every episode."""
    total_episodes: int
    """Episodes in the dataset."""
    total_frames: int
    """Frames in all episodes together."""
    camera_keys: tuple[str, ...]
    """Features of dtype "video" (e.g. "observation.images.top"), in ``features`` order."""
    state_dim: int
    """D of the state feature asked for; 0 when the dataset has no such feature."""
    action_dim: int
    """A of the action feature asked for; 0 when the dataset has no such feature."""
    robot_type: str
    """``robot_type`` ("" when null)."""
    features: dict[str, dict[str, Any]]
    """Feature key -> {dtype, shape, names, ...} as the file has it."""
    data_path: str
    """Template of the data parquet paths, relative to ``root``."""
    video_path: str | None
    """Template of the mp4 paths, relative to ``root`` (None: no videos)."""
    chunks_size: int
    """Files (v3.0) or episodes (v2.x) per chunk directory."""


# --- reading ------------------------------------------------------------------------------


def lerobot_info(root: str | os.PathLike[str], state_key: str = "observation.state",
                 action_key: str = "action") -> LeRobotInfo:
    """The version, fps, totals, cameras and state/action sizes of the dataset at ``root``."""
    root = Path(root)
    path = root / INFO_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise RobotDataError(f"{path}: file missing (not a LeRobot dataset?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RobotDataError(f"{path}: not readable as JSON ({err})") from None
    if not isinstance(raw, dict):
        raise RobotDataError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    for key in ("codebase_version", "fps", "features", "total_episodes", "data_path"):
        if key not in raw:
            raise RobotDataError(f"{path}: key {key!r}: missing")
    version = raw["codebase_version"]
    if version not in READABLE_VERSIONS:
        raise RobotDataError(f"{path}: key 'codebase_version': expected one of {list(READABLE_VERSIONS)}, "
                             f"found {version!r}")
    features = raw["features"]
    if not isinstance(features, dict) or not all(isinstance(f, dict) and "dtype" in f and "shape" in f
                                                 for f in features.values()):
        raise RobotDataError(f"{path}: key 'features': expected {{key: {{dtype, shape, ...}}}}")
    if not (isinstance(raw["fps"], (int, float)) and raw["fps"] > 0):
        raise RobotDataError(f"{path}: key 'fps': expected a positive number, found {raw['fps']!r}")
    cameras = tuple(key for key, feature in features.items() if feature["dtype"] == "video")
    if cameras and not raw.get("video_path"):
        raise RobotDataError(f"{path}: key 'video_path': missing, but features {list(cameras)} are videos")
    if version != "v3.0" and "chunks_size" not in raw:
        raise RobotDataError(f"{path}: key 'chunks_size': missing")

    def width(key: str) -> int:
        return int(np.prod(features[key]["shape"])) if key in features else 0

    return LeRobotInfo(
        root=root, version=version, fps=float(raw["fps"]), total_episodes=int(raw["total_episodes"]),
        total_frames=int(raw.get("total_frames", 0)), camera_keys=cameras, state_dim=width(state_key),
        action_dim=width(action_key), robot_type=raw.get("robot_type") or "", features=features,
        data_path=raw["data_path"], video_path=raw.get("video_path"), chunks_size=int(raw.get("chunks_size", 1000)),
    )


@dataclasses.dataclass(frozen=True)
class _EpisodeEntry:
    """Where one episode's frames are, from the episodes metadata."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_path: Path
    videos: dict[str, tuple[Path, int]]
    """Camera key -> (mp4, index of the episode's first frame in it)."""
    listed_in: Path
    """The metadata file that lists the episode."""


def read_lerobot(
    root: str | os.PathLike[str],
    state_key: str | None = "observation.state",
    action_key: str = "action",
    cameras: Sequence[str] | None = None,
    episodes: Sequence[int] | None = None,
) -> Iterator[RecordedEpisode]:
    """The dataset's episodes, one at a time, in the order of ``episodes`` (None: all, by index).

    ``state_key``: the feature read as states (N, D) (None: no states, (N, 0)); ``action_key``:
    the feature read as actions (N, A); ``cameras``: video feature keys to read (None: every
    one), named by their key in the episode. Rewards come from ``next.reward`` when the
    dataset has it. v3.0 reads each data file's needed columns once for the episodes in it
    (one file in memory at a time); frames stay in the mp4 files as `VideoFrames`.

    Episodes are named ``episode_000003``; their metadata holds ``episode_index``,
    ``task_index``, ``tasks`` and ``codebase_version``. ``meta/info.json``, the keys and the
    episodes metadata are checked here; each episode's files when it is read.
    """
    info = lerobot_info(root)
    for role, key in (("state_key", state_key), ("action_key", action_key)):
        if key is not None and key not in info.features:
            raise RobotDataError(f"{info.root / INFO_FILE}: {role} {key!r}: no such feature "
                                 f"(features: {sorted(info.features)})")
    if cameras is None:
        cameras = info.camera_keys
    for key in cameras:
        if key not in info.camera_keys:
            found = info.features.get(key, {}).get("dtype")
            raise RobotDataError(f"{info.root / INFO_FILE}: camera {key!r}: expected a feature of dtype 'video', "
                                 f"found {'no such feature' if found is None else repr(found)} "
                                 f"(video features: {list(info.camera_keys) or 'none'})")
    entries = _v3_entries(info, tuple(cameras)) if info.version == "v3.0" else _v2_entries(info, tuple(cameras))
    if episodes is None:
        order = sorted(entries)
    else:
        order = [int(index) for index in episodes]
        for index in order:
            if index not in entries:
                listed = next(iter(entries.values())).listed_in if entries else info.root / "meta"
                raise RobotDataError(f"{listed}: episode {index}: not in the dataset "
                                     f"({len(entries)} episodes, indices {min(entries, default=0)}.."
                                     f"{max(entries, default=-1)})")
    return _episodes(info, [entries[index] for index in order], state_key, action_key, tuple(cameras))


def _path(info: LeRobotInfo, key: str, **fields: Any) -> Path:
    """``info``'s path template ``key`` ("data_path" or "video_path") filled in with ``fields``."""
    template = getattr(info, key)
    try:
        return info.root / template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise RobotDataError(f"{info.root / INFO_FILE}: key {key!r}: template {template!r} does not take "
                             f"{sorted(fields)} ({err!r})") from None


def _v2_entries(info: LeRobotInfo, cameras: tuple[str, ...]) -> dict[int, _EpisodeEntry]:
    listed = info.root / "meta/episodes.jsonl"
    entries: dict[int, _EpisodeEntry] = {}
    for row in _jsonl(listed):
        for key in ("episode_index", "length"):
            if key not in row:
                raise RobotDataError(f"{listed}: key {key!r}: missing in {row}")
        index = int(row["episode_index"])
        where = {"episode_chunk": index // info.chunks_size, "episode_index": index}
        videos = {key: (_path(info, "video_path", video_key=key, **where), 0) for key in cameras}
        entries[index] = _EpisodeEntry(index=index, length=int(row["length"]), tasks=tuple(row.get("tasks", ())),
                                       data_path=_path(info, "data_path", **where), videos=videos,
                                       listed_in=listed)
    return entries


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise RobotDataError(f"{path}: line {number}: not JSON ({err})") from None
    except FileNotFoundError:
        raise RobotDataError(f"{path}: file missing") from None


def _v3_entries(info: LeRobotInfo, cameras: tuple[str, ...]) -> dict[int, _EpisodeEntry]:
    files = sorted((info.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise RobotDataError(f"{info.root / 'meta/episodes'}: no chunk-*/file-*.parquet files "
                             "(the episodes metadata is missing)")
    needed = ["episode_index", "length", "tasks", "data/chunk_index", "data/file_index"]
    for key in cameras:
        needed += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
    entries: dict[int, _EpisodeEntry] = {}
    for listed in files:
        table = _read_columns(listed, needed)
        for row in table.to_pylist():
            index = int(row["episode_index"])
            data = _path(info, "data_path", chunk_index=row["data/chunk_index"],
                         file_index=row["data/file_index"])
            videos = {}
            for key in cameras:
                mp4 = _path(info, "video_path", video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                            file_index=row[f"videos/{key}/file_index"])
                videos[key] = (mp4, int(round(row[f"videos/{key}/from_timestamp"] * info.fps)))
            entries[index] = _EpisodeEntry(index=index, length=int(row["length"]), tasks=tuple(row["tasks"] or ()),
                                           data_path=data, videos=videos, listed_in=listed)
    return entries


def _read_columns(path: Path, columns: Sequence[str]) -> pa.Table:
    """Just these columns of a parquet file; names the file and the first missing column."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise RobotDataError(f"{path}: file missing") from None
    except (OSError, pa.ArrowException) as err:
        raise RobotDataError(f"{path}: not a readable parquet file ({err})") from None
    for column in columns:
        if column not in schema.names:
            raise RobotDataError(f"{path}: column {column!r}: missing (columns: {schema.names})")
    try:
        return pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException) as err:
        raise RobotDataError(f"{path}: not a readable parquet file ({err})") from None


def _episodes(info: LeRobotInfo, entries: list[_EpisodeEntry], state_key: str | None, action_key: str,
              cameras: tuple[str, ...]) -> Iterator[RecordedEpisode]:
    columns = ["episode_index", "frame_index", "task_index", action_key]
    columns += [state_key] if state_key is not None else []
    columns += [REWARD_KEY] if REWARD_KEY in info.features else []
    data_path, table, owners = None, None, None  # the data file read last, its columns, its episode_index
    for entry in entries:
        if entry.data_path != data_path:
            data_path, table = entry.data_path, _read_columns(entry.data_path, columns)
            owners = table.column("episode_index").to_numpy()
        rows = np.flatnonzero(owners == entry.index)
        contiguous = rows.size and rows[-1] - rows[0] + 1 == rows.size
        own = table.slice(rows[0], rows.size) if contiguous else table.take(pa.array(rows))
        yield _episode(info, entry, own, state_key, action_key, cameras)


def _episode(info: LeRobotInfo, entry: _EpisodeEntry, table: pa.Table, state_key: str | None,
             action_key: str, cameras: tuple[str, ...]) -> RecordedEpisode:
    """The episode from its rows of the data file (``table``) and its videos."""
    path, n = entry.data_path, entry.length
    if table.num_rows != n:
        raise RobotDataError(f"{path}: column 'episode_index': episode {entry.index} has {table.num_rows} rows, "
                             f"but {entry.listed_in} gives its length as {n}")
    frame_index = table.column("frame_index").to_numpy()
    wrong = np.flatnonzero(frame_index != np.arange(n))
    if wrong.size:
        row = int(wrong[0])
        raise RobotDataError(f"{path}: column 'frame_index': episode {entry.index}: expected consecutive "
                             f"frames 0..{n - 1}, found {int(frame_index[row])} at its row {row}")
    states = column_vectors(path, table, state_key) if state_key is not None else np.zeros((n, 0), np.float32)
    rewards = column_vectors(path, table, REWARD_KEY).reshape(-1) if REWARD_KEY in table.column_names else None
    return RecordedEpisode(
        states=states, actions=column_vectors(path, table, action_key),
        cameras={key: _camera_frames(entry, key) for key in cameras}, fps=info.fps,
        rewards=rewards, task=entry.tasks[0] if entry.tasks else "", name=f"episode_{entry.index:06d}",
        source=str(info.root),
        metadata={"episode_index": entry.index, "tasks": list(entry.tasks), "codebase_version": info.version,
                  "task_index": int(table.column("task_index")[0].as_py()) if n else None},
    )


def column_vectors(path: Path, table: pa.Table, key: str) -> np.ndarray:
    """A column of per-frame numbers or fixed-length vectors as (N, D) float32."""
    column = table.column(key).combine_chunks()
    if column.null_count:
        raise RobotDataError(f"{path}: column {key!r}: {column.null_count} null values")
    kind = column.type
    if pa.types.is_fixed_size_list(kind):
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(column), kind.list_size).astype(np.float32)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise RobotDataError(f"{path}: column {key!r}: expected vectors of one length, found lengths "
                                 f"{sorted(set(lengths.tolist()))}")
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(column), int(lengths[0]) if len(lengths) else 0).astype(np.float32)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return column.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)
    raise RobotDataError(f"{path}: column {key!r}: expected numbers or lists of numbers, found {kind}")


def _camera_frames(entry: _EpisodeEntry, key: str) -> VideoFrames:
    """The episode's frames of camera ``key`` (the file's frame index is demuxed once and
    shared by every episode in it)."""
    mp4, first = entry.videos[key]
    where = f"camera {key!r}: episode {entry.index}"
    if not mp4.is_file():
        raise RobotDataError(f"{mp4}: file missing ({where})")
    try:
        available = frame_count(mp4)
        if first < 0 or first + entry.length > available:
            raise RobotDataError(f"{mp4}: {where}: needs frames {first}..{first + entry.length - 1}, but the "
                                 f"video has {available} frames")
        return VideoFrames(mp4, indices=np.arange(first, first + entry.length))
    except VideoError as err:
        raise RobotDataError(f"{err} ({where})") from None


# --- writing ------------------------------------------------------------------------------

