"""Writing LeRobot datasets (v2.1 and v3.0; the layouts are described in `lerobot`): episodes
streamed into data parquet and mp4 files, meta/info.json, stats and the episode index, all in a
hidden directory renamed into place at the end."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embodied_pref.data.video import VideoWriter
from embodied_pref.durable import fsync_dir, fsync_file, temp_path
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError
from embodied_pref.recordings.lerobot import (
    CAMERA_PREFIX,
    DONE_KEY,
    REWARD_KEY,
    WRITABLE_VERSIONS,
    DATA_PATH,
    EPISODES_PATH,
    FILE_SIZE_MB,
    INDEX_FEATURES,
    VIDEO_PATH,
    column_vectors,
)


def write_lerobot(
    episodes: Iterable[RecordedEpisode],
    root: str | os.PathLike[str],
    version: str = "v3.0",
    robot_type: str = "",
    fps: float | None = None,
    episodes_per_file: int = 50,
    state_key: str = "observation.state",
    action_key: str = "action",
    lossless: bool = False,
    chunks_size: int = 1000,
) -> Path:
    """Write the episodes as a complete LeRobot dataset of ``version`` at ``root`` (which must
    not exist, or be an empty directory) and return ``root``.

    Streams: one episode's frames are in memory at a time, and in v3.0 each data parquet and
    each camera's mp4 takes ``episodes_per_file`` episodes before the next file starts. The
    dataset is built in a hidden sibling directory and renamed to ``root`` when complete, so
    a crash leaves no partial dataset.

    ``fps``: the dataset's frame rate (None: the first episode's; every episode must have it).
    ``lossless``: encode the videos losslessly (exact frames, large files). Cameras named
    ``observation.*`` keep their name as the feature key, others become
    ``observation.images.<name>``. States of width 0 write no state feature; rewards write
    ``next.reward`` and ``next.done`` (every episode must have rewards, or none). Writes
    ``meta/stats.json`` (min, max, mean, std, count per numeric feature and per camera
    channel in [0, 1]) and each episode's stats.
    """
    root = Path(root)
    if version not in WRITABLE_VERSIONS:
        raise RobotDataError(f"{root}: version {version!r}: expected one of {list(WRITABLE_VERSIONS)}")
    for name, value in (("episodes_per_file", episodes_per_file), ("chunks_size", chunks_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RobotDataError(f"{root}: {name}: expected an int >= 1, found {value!r}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise RobotDataError(f"{root}: already exists and is not an empty directory")
    root.parent.mkdir(parents=True, exist_ok=True)
    building = temp_path(root, "")
    building.mkdir()
    try:
        with _DatasetWriter(building, version, robot_type, fps, episodes_per_file, state_key, action_key,
                            lossless, chunks_size) as writer:
            for episode in episodes:
                writer.add(episode)
        if root.exists():
            root.rmdir()
        os.replace(building, root)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    fsync_dir(root.parent)
    return root


class _Stats:
    """Running min, max, mean and std of one feature, over the rows added (merges exactly)."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | float = 0.0
        self.squares: np.ndarray | float = 0.0
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def add(self, values: np.ndarray, axes: tuple[int, ...] = (0,), scale: float = 1.0) -> None:
        """Fold in ``values`` reduced over ``axes`` (the rows, and pixels for images)."""
        values = values.astype(np.float64) * scale
        self._fold(int(np.prod([values.shape[a] for a in axes])), values.sum(axis=axes),
                   np.square(values).sum(axis=axes), values.min(axis=axes), values.max(axis=axes))

    def merge(self, other: _Stats) -> None:
        if other.count:
            self._fold(other.count, other.total, other.squares, other.low, other.high)

    def _fold(self, count: int, total: Any, squares: Any, low: Any, high: Any) -> None:
        self.count += count
        self.total = self.total + total
        self.squares = self.squares + squares
        self.low = low if self.low is None else np.minimum(self.low, low)
        self.high = high if self.high is None else np.maximum(self.high, high)

    def as_json(self, shape: tuple[int, ...]) -> dict[str, list[Any]]:
        mean = np.asarray(self.total) / self.count
        std = np.sqrt(np.maximum(np.asarray(self.squares) / self.count - np.square(mean), 0.0))
        return {name: np.reshape(value, shape).tolist()
                for name, value in (("min", self.low), ("max", self.high), ("mean", mean), ("std", std))
                } | {"count": [self.count]}


@dataclasses.dataclass(frozen=True)
class _Schema:
    """What every episode of a dataset must share: the first episode's sizes."""

    fps: float
    state_dim: int
    action_dim: int
    has_rewards: bool
    cameras: dict[str, tuple[str, tuple[int, int, int]]]
    """Feature key -> (the episodes' camera name, (H, W, 3))."""


class _DatasetWriter:
    """Writes episodes into ``root`` as they come, then the metadata when the block ends."""

    def __init__(self, root: Path, version: str, robot_type: str, fps: float | None, episodes_per_file: int,
                 state_key: str, action_key: str, lossless: bool, chunks_size: int) -> None:
        self.root, self.version, self.robot_type, self.fps = root, version, robot_type, fps
        self.episodes_per_file, self.chunks_size = episodes_per_file, chunks_size
        self.state_key, self.action_key, self.lossless = state_key, action_key, lossless
        self.schema: _Schema | None = None
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict[str, Any]] = []
        self.stats: dict[str, _Stats] = {}
        self.frames_written = 0
        self.files_started = 0  # v3.0: data/video files begun so far
        self.episodes_in_file = 0
        self.video_frames_in_file = 0
        self.parquet: pq.ParquetWriter | None = None
        self.videos = contextlib.ExitStack()
        self.video_writers: dict[str, VideoWriter] = {}

    def __enter__(self) -> _DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self._close_files(exc_type, exc, traceback)
        if exc_type is None:
            self._write_metadata()

    # --- per episode ----------------------------------------------------------------------

    def add(self, episode: RecordedEpisode) -> None:
        index = len(self.episode_rows)
        schema = self._check(episode, index)
        task_index = self.tasks.setdefault(episode.task, len(self.tasks))
        table = self._frame_table(episode, schema, index, task_index)
        stats = self._episode_stats(table)
        row: dict[str, Any] = {"episode_index": index, "tasks": [episode.task], "length": episode.length}
        if self.version == "v3.0":
            row |= self._append_v3(table, episode, schema, stats)
        else:
            self._write_v2(table, episode, schema, index, stats)
        for key, value in stats.items():
            self.stats.setdefault(key, _Stats()).merge(value)
        row["stats"] = {key: value.as_json(self._stats_shape(key)) for key, value in stats.items()}
        self.episode_rows.append(row)
        self.frames_written += episode.length

    def _check(self, episode: RecordedEpisode, index: int) -> _Schema:
        where = f"{episode.source or '<episodes>'}: episode {index} ({episode.name!r})"
        cameras = {}
        for name, frames in episode.cameras.items():
            key = name if name.startswith("observation.") else CAMERA_PREFIX + name
            if key in cameras:
                raise RobotDataError(f"{where}: camera {name!r}: feature key {key!r} is taken by another camera")
            cameras[key] = (name, tuple(frames.shape[1:]))
        fps = float(self.fps if self.fps is not None else episode.fps)
        found = _Schema(fps=fps, state_dim=episode.states.shape[1], action_dim=episode.actions.shape[1],
                        has_rewards=episode.rewards is not None, cameras=cameras)
        if self.schema is None:
            if found.action_dim == 0:
                raise RobotDataError(f"{where}: field 'actions': expected (N, A) with A >= 1, found A = 0")
            self.schema = found
            return found
        if self.fps is None and episode.fps != self.schema.fps:
            raise RobotDataError(f"{where}: field 'fps': {episode.fps}, but the first episode's is "
                                 f"{self.schema.fps} (pass fps= to relabel every episode)")
        for field in ("state_dim", "action_dim", "has_rewards", "cameras"):
            if getattr(found, field) != getattr(self.schema, field):
                raise RobotDataError(f"{where}: field {field!r}: {getattr(found, field)}, but the first "
                                     f"episode's is {getattr(self.schema, field)}")
        return self.schema

    def _frame_table(self, episode: RecordedEpisode, schema: _Schema, index: int, task_index: int) -> pa.Table:
        n = episode.length
        frame_index = np.arange(n, dtype=np.int64)
        columns: dict[str, pa.Array] = {}
        if schema.state_dim:
            columns[self.state_key] = _vector_array(episode.states)
        columns[self.action_key] = _vector_array(episode.actions)
        columns |= {
            "timestamp": pa.array((frame_index / schema.fps).astype(np.float32)),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(n, index, dtype=np.int64)),
            "index": pa.array(self.frames_written + frame_index),
            "task_index": pa.array(np.full(n, task_index, dtype=np.int64)),
        }
        if schema.has_rewards:
            columns[REWARD_KEY] = pa.array(episode.rewards)
            columns[DONE_KEY] = pa.array(frame_index == n - 1)
        return pa.table(columns)

    def _episode_stats(self, table: pa.Table) -> dict[str, _Stats]:
        stats = {}
        for key in table.column_names:
            if key == DONE_KEY:
                continue
            stats[key] = _Stats()
            stats[key].add(column_vectors(self.root, table, key))
        return stats

    def _stats_shape(self, key: str) -> tuple[int, ...]:
        return (3, 1, 1) if key in self.schema.cameras else (-1,)

    def _write_v2(self, table: pa.Table, episode: RecordedEpisode, schema: _Schema, index: int,
                  stats: dict[str, _Stats]) -> None:
        where = {"episode_chunk": index // self.chunks_size, "episode_index": index}
        path = self.root / DATA_PATH["v2.1"].format(**where)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        fsync_file(path)
        for key, (camera, _) in schema.cameras.items():
            mp4 = self.root / VIDEO_PATH["v2.1"].format(video_key=key, **where)
            mp4.parent.mkdir(parents=True, exist_ok=True)
            with self._video_writer(mp4) as writer:
                stats[key] = _encode(writer, episode.cameras[camera])

    def _append_v3(self, table: pa.Table, episode: RecordedEpisode, schema: _Schema,
                   stats: dict[str, _Stats]) -> dict[str, Any]:
        if self.parquet is None or self.episodes_in_file == self.episodes_per_file:
            self._close_files(None, None, None)
            self._open_v3_files(table.schema, schema)
        chunk, file = divmod(self.files_started - 1, self.chunks_size)
        self.parquet.write_table(table)
        first = self.video_frames_in_file
        row: dict[str, Any] = {"data/chunk_index": chunk, "data/file_index": file,
                               "dataset_from_index": self.frames_written,
                               "dataset_to_index": self.frames_written + episode.length}
        for key, (camera, _) in schema.cameras.items():
            stats[key] = _encode(self.video_writers[key], episode.cameras[camera])
            row |= {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                    f"videos/{key}/from_timestamp": first / schema.fps,
                    f"videos/{key}/to_timestamp": (first + episode.length) / schema.fps}
        self.video_frames_in_file += episode.length
        self.episodes_in_file += 1
        return row

    def _open_v3_files(self, table_schema: pa.Schema, schema: _Schema) -> None:
        chunk, file = divmod(self.files_started, self.chunks_size)
        path = self.root / DATA_PATH["v3.0"].format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = pq.ParquetWriter(path, table_schema)
        for key in schema.cameras:
            mp4 = self.root / VIDEO_PATH["v3.0"].format(video_key=key, chunk_index=chunk, file_index=file)
            mp4.parent.mkdir(parents=True, exist_ok=True)
            self.video_writers[key] = self.videos.enter_context(self._video_writer(mp4))
        self.files_started += 1
        self.episodes_in_file = self.video_frames_in_file = 0

    def _video_writer(self, path: Path) -> VideoWriter:
        return VideoWriter(path, fps=self.schema.fps, lossless=self.lossless)

    def _close_files(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        """Finish (or, after an error, drop) the open v3.0 data and video files."""
        if self.parquet is not None:
            self.parquet.close()
            if exc_type is None:
                fsync_file(Path(self.parquet.where))
            self.parquet = None
        self.video_writers = {}
        videos, self.videos = self.videos, contextlib.ExitStack()
        videos.__exit__(exc_type, exc, traceback)

    # --- metadata -------------------------------------------------------------------------

    def _write_metadata(self) -> None:
        if self.schema is None:
            raise RobotDataError(f"{self.root}: no episodes to write")
        schema, meta = self.schema, self.root / "meta"
        meta.mkdir(exist_ok=True)
        total = len(self.episode_rows)
        info = {
            "codebase_version": self.version, "robot_type": self.robot_type, "total_episodes": total,
            "total_frames": self.frames_written, "total_tasks": len(self.tasks),
            "chunks_size": self.chunks_size,
            "fps": _json_fps(schema.fps),
            "splits": {"train": f"0:{total}"}, "data_path": DATA_PATH[self.version],
            "video_path": VIDEO_PATH[self.version] if schema.cameras else None,
            "features": self._features(),
        }
        if self.version == "v3.0":
            info |= FILE_SIZE_MB
            _write_parquet(meta / "tasks.parquet", _tasks_table(self.tasks))
            rows = [self._v3_episode_row(row) for row in self.episode_rows]
            _write_parquet(self.root / EPISODES_PATH.format(chunk_index=0, file_index=0), pa.Table.from_pylist(rows))
        else:
            chunks = (total - 1) // self.chunks_size + 1
            info |= {"total_chunks": chunks, "total_videos": total * len(schema.cameras)}
            _write_jsonl(meta / "tasks.jsonl", [{"task_index": i, "task": t} for t, i in self.tasks.items()])
            _write_jsonl(meta / "episodes.jsonl", [{key: row[key] for key in ("episode_index", "tasks", "length")}
                                                   for row in self.episode_rows])
            _write_jsonl(meta / "episodes_stats.jsonl", [{"episode_index": row["episode_index"],
                                                         "stats": row["stats"]} for row in self.episode_rows])
        stats = {key: value.as_json(self._stats_shape(key)) for key, value in self.stats.items()}
        _write_json(meta / "stats.json", stats)
        _write_json(meta / "info.json", info)

    def _v3_episode_row(self, row: dict[str, Any]) -> dict[str, Any]:
        flat = {key: value for key, value in row.items() if key != "stats"}
        flat |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for key, stats in row["stats"].items():
            flat |= {f"stats/{key}/{name}": value for name, value in stats.items()}
        return flat

    def _features(self) -> dict[str, dict[str, Any]]:
        schema, features = self.schema, {}
        if schema.state_dim:
            features[self.state_key] = {"dtype": "float32", "shape": [schema.state_dim], "names": None}
        features[self.action_key] = {"dtype": "float32", "shape": [schema.action_dim], "names": None}
        for key, (_, shape) in schema.cameras.items():
            features[key] = {
                "dtype": "video", "shape": list(shape), "names": ["height", "width", "channels"],
                "info": {"video.height": shape[0], "video.width": shape[1], "video.codec": "h264",
                         "video.pix_fmt": "rgb24" if self.lossless else "yuv420p", "video.is_depth_map": False,
                         "video.fps": _json_fps(schema.fps), "video.channels": shape[2], "has_audio": False},
            }
        features |= {"timestamp": {"dtype": "float32", "shape": [1], "names": None}}
        features |= {key: {"dtype": "int64", "shape": [1], "names": None} for key in INDEX_FEATURES[1:]}
        if schema.has_rewards:
            features[REWARD_KEY] = {"dtype": "float32", "shape": [1], "names": None}
            features[DONE_KEY] = {"dtype": "bool", "shape": [1], "names": None}
        return features


def _json_fps(fps: float) -> int | float:
    """The frame rate as LeRobot writes it: an int where it is whole."""
    return int(fps) if float(fps).is_integer() else fps


def _tasks_table(tasks: Mapping[str, int]) -> pa.Table:
    """Columns task_index and task, with the pandas metadata that makes "task" the index of
    the DataFrame LeRobot reads (it looks tasks up by that index)."""
    def column(name: str, pandas_type: str, numpy_type: str) -> dict[str, Any]:
        return {"name": name, "field_name": name, "pandas_type": pandas_type, "numpy_type": numpy_type,
                "metadata": None}

    pandas = {
        "index_columns": ["task"], "columns": [column("task_index", "int64", "int64"),
                                               column("task", "unicode", "object")],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()), "task": list(tasks)})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas)})


def _vector_array(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 as a parquet column of length-D lists."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _encode(writer: VideoWriter, frames: Any) -> _Stats:
    """Append (N, H, W, 3) uint8 frames (an array, or `VideoFrames` decoded one at a time) to
    ``writer``; returns their per-channel stats in [0, 1]."""
    stats = _Stats()
    for frame in frames:
        stats.add(frame[None], axes=(0, 1, 2), scale=1 / 255)
        writer.write(frame)
    return stats


def _write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    fsync_file(path)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=4) + "\n")
    fsync_file(path)


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fsync_file(path)
