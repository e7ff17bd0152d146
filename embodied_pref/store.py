"""The on-disk preference dataset: one directory, one SQLite database, array and video files.

```
<dir>/dataset.sqlite            queries, labels, annotators, clips, trajectory index, meta
<dir>/trajectories/<id>.npz     observations (T+1, D) f32, actions (T, A) f32,
                                rewards (T,) f32 (optional), and either
                                frames (T+1, H, W, 3) u8 (frames in memory when stored), or
                                frame_indices (T+1,) i64 + frame_pointer (T+1, 3) f32
                                (optional) for frames in videos/<id>.mp4
<dir>/videos/<id>.mp4           a video-backed trajectory's recording, copied byte for byte
<dir>/previews/<clip_id>.mp4    H.264 previews for the labeling UI
<dir>/instructions.md           task instructions shown to people (optional)
```

A video-backed trajectory (frames given as a ``VideoFrames``) keeps its frames in the mp4:
``frame_indices[t]`` is the video frame shown at step t, ``frame_pointer[t]`` the mouse
cursor drawn on it (x, y, size in video pixels; NaN x: none), and the index row records the
mp4, its size in bytes and sha256 and the size frames are decoded to (``frame_height``,
``frame_width``). Loading it decodes nothing; clips and previews decode only their frames.

Labels are paid for, so every write is atomic and durable: SQLite runs in WAL mode with
``synchronous=FULL`` and each label is its own committed transaction; array and video files
are written to a temporary file, fsynced, renamed into place and their directory fsynced.
Bad input raises ``DatasetError`` naming the file and the field, and writes nothing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from embodied_pref.data import (
    FORMAT_VERSION,
    Clip,
    Label,
    Outcome,
    Query,
    Segment,
    Trajectory,
    check_id,
)
from embodied_pref.data.video import VideoError, VideoFrames, frame_count, write_video
from embodied_pref.durable import fsync_dir, temp_path, write_atomic

if TYPE_CHECKING:
    from imitation.data.types import TrajectoryWithRew

DB_FILE = "dataset.sqlite"
TRAJECTORY_DIR = "trajectories"
VIDEO_DIR = "videos"
PREVIEW_DIR = "previews"
INSTRUCTIONS_FILE = "instructions.md"
PREVIEW_CHUNK = 64
"""Frames decoded (and encoded) at a time when a preview is written."""


def _add_label_ties(conn: sqlite3.Connection) -> None:
    """Format 1 -> 2: labels get a ``ties`` column (JSON list of ranking positions, or NULL)."""
    conn.execute("ALTER TABLE labels ADD COLUMN ties TEXT")


def _add_trajectory_videos(conn: sqlite3.Connection) -> None:
    """Format 2 -> 3: a trajectory's frames may live in an mp4 (``video_file``, its
    ``video_sha256`` and ``video_bytes``); rows stored before keep their frames in npz (NULL)."""
    for column in ("video_file TEXT", "video_sha256 TEXT", "video_bytes INTEGER"):
        conn.execute(f"ALTER TABLE trajectories ADD COLUMN {column}")


def _add_roles_and_leases(conn: sqlite3.Connection) -> None:
    """Format 3 -> 4: annotators get a ``role`` (existing ones stay annotators) and a
    ``revoked_at``; the ``leases`` table records which query was handed to whom, until when."""
    conn.execute("ALTER TABLE annotators ADD COLUMN role TEXT NOT NULL DEFAULT 'annotator' "
                 f"CHECK (role IN {ROLES!r})")
    conn.execute("ALTER TABLE annotators ADD COLUMN revoked_at REAL")
    conn.execute(_LEASES_TABLE)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _add_label_ties, 2: _add_trajectory_videos, 3: _add_roles_and_leases,
}
"""``MIGRATIONS[v](conn)`` upgrades a database of format ``v`` to ``v + 1`` in place (inside
the caller's transaction)."""

_RESERVED_META = frozenset({"format_version"})

ROLES = ("annotator", "owner")
"""An annotator labels and undoes their own labels; an owner also exports every label and
sees the agreement page."""

_LEASES_TABLE = """CREATE TABLE leases (
        query_id TEXT NOT NULL REFERENCES queries (id),
        annotator TEXT NOT NULL,
        leased_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (query_id, annotator))"""

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE trajectories (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        env_id TEXT NOT NULL,
        seed INTEGER,
        embodiment TEXT NOT NULL,
        length INTEGER NOT NULL CHECK (length >= 1),
        obs_dim INTEGER NOT NULL,
        action_dim INTEGER NOT NULL,
        has_rewards INTEGER NOT NULL,
        has_frames INTEGER NOT NULL,
        frame_height INTEGER,
        frame_width INTEGER,
        terminated INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        file TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        video_file TEXT,
        video_sha256 TEXT,
        video_bytes INTEGER)""",
    """CREATE TABLE clips (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        trajectory_id TEXT NOT NULL REFERENCES trajectories (id),
        start INTEGER NOT NULL CHECK (start >= 0),
        length INTEGER NOT NULL CHECK (length >= 1))""",
    "CREATE INDEX clips_by_trajectory ON clips (trajectory_id)",
    """CREATE TABLE queries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        selector TEXT NOT NULL,
        score REAL,
        round INTEGER NOT NULL,
        created_at REAL NOT NULL)""",
    """CREATE TABLE query_clips (
        query_id TEXT NOT NULL REFERENCES queries (id),
        position INTEGER NOT NULL,
        clip_id TEXT NOT NULL REFERENCES clips (id),
        PRIMARY KEY (query_id, position))""",
    """CREATE TABLE labels (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        query_id TEXT NOT NULL REFERENCES queries (id),
        outcome TEXT NOT NULL CHECK (outcome IN ({outcomes})),
        ranking TEXT,
        annotator TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at REAL NOT NULL,
        ties TEXT)""".format(
        outcomes=", ".join(f"'{o.value}'" for o in Outcome)
    ),
    "CREATE INDEX labels_by_query ON labels (query_id)",
    f"""CREATE TABLE annotators (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        role TEXT NOT NULL DEFAULT 'annotator' CHECK (role IN {ROLES!r}),
        revoked_at REAL)""",
    _LEASES_TABLE,
)

_TRAJECTORY_COLUMNS = (
    "id, env_id, seed, embodiment, length, obs_dim, action_dim, has_rewards, has_frames, "
    "frame_height, frame_width, terminated, metadata, file, sha256, created_at, "
    "video_file, video_sha256, video_bytes"
)
_LABEL_COLUMNS = "id, query_id, outcome, ranking, annotator, source, created_at, ties"
_PAIRWISE_ONLY = frozenset({Outcome.LEFT, Outcome.RIGHT})
_Record = TypeVar("_Record", Trajectory, Clip, Query, Label)


class DatasetError(Exception):
    """A dataset file is missing, corrupt, of another format version, or given bad input.

    The message names the file and the field.
    """


# --- SQLite -------------------------------------------------------------------------------


def _connect(db_path: Path, *, create: bool) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    try:
        conn = sqlite3.connect(
            f"{db_path.resolve().as_uri()}?mode={mode}",
            uri=True,
            timeout=30.0,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as err:
        raise DatasetError(f"{db_path}: cannot open database ({err})") from err
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as err:
        conn.close()
        raise DatasetError(f"{db_path}: not a readable SQLite database ({err})") from err
    return conn


def _table_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]


class PreferenceDataset:
    """A dataset directory of trajectories, clips, queries, labels and annotators.

    Build one with :meth:`create` or :meth:`open`. One instance may be shared between
    threads (a lock serializes access to the connection); other processes may write the
    same directory at the same time (SQLite locking, 30 s busy timeout).
    """

    def __init__(self, root: Path, conn: sqlite3.Connection, *, cache_size: int = 8) -> None:
        self._root = root
        self._db_path = root / DB_FILE
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self._cache: collections.OrderedDict[str, Trajectory] = collections.OrderedDict()
        self._cache_size = max(0, int(cache_size))

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        description: str = "",
        instructions: str = "",
        exist_ok: bool = False,
        cache_size: int = 8,
    ) -> PreferenceDataset:
        """Create a dataset directory at ``path`` (parents included).

        ``exist_ok=True`` opens an existing dataset instead of failing; its description and
        instructions are left as they are.
        """
        root = Path(path)
        db_path = root / DB_FILE
        if root.exists() and not root.is_dir():
            raise DatasetError(f"{root}: exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        (root / TRAJECTORY_DIR).mkdir(exist_ok=True)
        (root / PREVIEW_DIR).mkdir(exist_ok=True)
        (root / VIDEO_DIR).mkdir(exist_ok=True)
        conn = _connect(db_path, create=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            exists = _table_count(conn) > 0  # an empty file is what an interrupted create leaves
            if exists:
                conn.execute("ROLLBACK")
                conn.close()
        except BaseException:
            conn.close()
            raise
        if exists:
            if not exist_ok:
                raise DatasetError(f"{db_path}: a dataset already exists (pass exist_ok=True)")
            return cls.open(root, cache_size=cache_size)
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            meta = {"format_version": FORMAT_VERSION, "description": description,
                    "created_at": time.time()}
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in meta.items()],
            )
            if instructions:
                write_atomic(root / INSTRUCTIONS_FILE, instructions.encode("utf-8"))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        fsync_dir(root)
        fsync_dir(root.resolve().parent)
        return cls(root, conn, cache_size=cache_size)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, cache_size: int = 8) -> PreferenceDataset:
        """Open an existing dataset directory; checks (and migrates) the format version."""
        root = Path(path)
        db_path = root / DB_FILE
        if not root.is_dir():
            raise DatasetError(f"{root}: not a dataset directory (no such directory)")
        if not db_path.is_file():
            raise DatasetError(f"{db_path}: missing, so {root} is not a dataset directory")
        conn = _connect(db_path, create=False)
        try:
            _check_version(conn, db_path)
        except BaseException:
            conn.close()
            raise
        return cls(root, conn, cache_size=cache_size)

    def close(self) -> None:
        """Close the database connection; the instance cannot be used afterwards."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._cache.clear()

    def __enter__(self) -> PreferenceDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceDataset({str(self._root)!r})"

    @property
    def path(self) -> Path:
        """The dataset directory."""
        return self._root

    @property
    def description(self) -> str:
        """The description given at creation."""
        return self.get_meta("description", "")

    def write_instructions(self, text: str) -> None:
        """Replace the task instructions shown to people (``instructions.md``)."""
        write_atomic(self._root / INSTRUCTIONS_FILE, text.encode("utf-8"))

    @property
    def instructions(self) -> str:
        """Task instructions for people (``instructions.md``), or ``""``."""
        path = self._root / INSTRUCTIONS_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    # --- transactions and errors ------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction, committed on exit (rolled back on any error)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise DatasetError(f"{self._db_path}: dataset is closed")
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as err:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(err, sqlite3.Error):
                    raise DatasetError(f"{self._db_path}: {err}") from err
                raise

    def _error(self, field: str, message: str, *, subject: str = "", file: Path | None = None
               ) -> DatasetError:
        where = f"{file or self._db_path}: " + (f"{subject}: " if subject else "")
        return DatasetError(f"{where}field '{field}': {message}")

    def _checked(self, kind: type[_Record], value: object, field: str) -> _Record:
        """``value`` validated again (a frozen dataclass can still be changed by force)."""
        if not isinstance(value, kind):
            raise self._error(field, f"expected a {kind.__name__}, found {type(value).__name__}")
        try:
            return dataclasses.replace(value)
        except ValueError as err:
            raise DatasetError(f"{self._db_path}: {kind.__name__} {value.id!r}: {err}") from None

    def _checked_batch(self, kind: type[_Record], items: Iterable[object], field: str
                       ) -> list[_Record]:
        checked = [self._checked(kind, item, field) for item in items]
        seen: set[str] = set()
        for record in checked:
            if record.id in seen:
                raise self._error("id", f"{kind.__name__} {record.id!r} appears twice in the batch")
            seen.add(record.id)
        return checked

    # --- trajectories ---------------------------------------------------------------------

    def add_trajectory(self, trajectory: Trajectory) -> str:
        """Store a trajectory (npz file + index row) and return its id.

        Frames given as a ``VideoFrames`` stay encoded: their mp4 is copied byte for byte to
        ``videos/<id>.mp4`` and the npz holds the frame indices (and cursor pointer). Before
        anything is written the mp4 is checked to hold every frame the trajectory shows
        (``DatasetError`` naming the mp4 and field 'frames'). The files and the index row
        land together or not at all.
        """
        trajectory = self._checked(Trajectory, trajectory, "trajectory")
        tid = trajectory.id
        frames = trajectory.frames
        arrays = {"observations": trajectory.observations, "actions": trajectory.actions}
        if trajectory.rewards is not None:
            arrays["rewards"] = trajectory.rewards
        video = frames if isinstance(frames, VideoFrames) else None
        if video is not None:
            _check_video_frames(video, tid)
            arrays["frame_indices"] = video.indices
            if video.pointer is not None:
                arrays["frame_pointer"] = video.pointer
        elif frames is not None:
            arrays["frames"] = frames
        npz_final = self._root / TRAJECTORY_DIR / f"{tid}.npz"
        video_relative = f"{VIDEO_DIR}/{tid}.mp4"
        temps: list[Path] = []
        placed: list[Path] = []
        try:
            npz_tmp = temp_path(npz_final)
            temps.append(npz_tmp)
            with open(npz_tmp, "xb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            digest = hashlib.sha256(npz_tmp.read_bytes()).hexdigest()
            moves = [(npz_tmp, npz_final)]
            video_row: tuple[str | None, str | None, int | None] = (None, None, None)
            if video is not None:
                video_final = self._root / video_relative
                video_final.parent.mkdir(exist_ok=True)
                video_tmp = temp_path(video_final, ".mp4")
                temps.append(video_tmp)
                video_digest, video_bytes = _copy_hashed(video.path, video_tmp)
                moves.append((video_tmp, video_final))
                video_row = (video_relative, video_digest, video_bytes)
            with self._transaction(write=True) as conn:
                if _exists(conn, "trajectories", tid):
                    raise self._error("id", f"trajectory {tid!r} is already stored")
                for tmp, final in moves:
                    os.replace(tmp, final)
                    placed.append(final)
                    fsync_dir(final.parent)
                conn.execute(
                    f"INSERT INTO trajectories ({_TRAJECTORY_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        tid, trajectory.env_id, trajectory.seed, trajectory.embodiment,
                        trajectory.length, trajectory.observations.shape[1],
                        trajectory.actions.shape[1], trajectory.rewards is not None,
                        frames is not None,
                        None if frames is None else frames.shape[1],
                        None if frames is None else frames.shape[2],
                        trajectory.terminated, json.dumps(trajectory.metadata),
                        f"{TRAJECTORY_DIR}/{tid}.npz", digest, time.time(), *video_row,
                    ),
                )
        except BaseException:
            for tmp in temps:
                tmp.unlink(missing_ok=True)
            for final in placed:  # the id was free, so these files are ours alone
                final.unlink(missing_ok=True)
            raise
        return tid

    def trajectory_ids(self) -> list[str]:
        """Ids of all stored trajectories, in insertion order."""
        with self._transaction(write=False) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM trajectories ORDER BY seq")]

    def trajectory_info(self, trajectory_id: str) -> dict[str, Any]:
        """The index row of a trajectory (no arrays loaded): id, env_id, seed, embodiment,
        length, obs_dim, action_dim, has_rewards, has_frames, frame_height, frame_width,
        terminated, metadata, file, sha256, created_at, and video_file, video_sha256,
        video_bytes (None unless the frames live in an mp4)."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                f"SELECT {_TRAJECTORY_COLUMNS} FROM trajectories WHERE id = ?", (trajectory_id,)
            ).fetchone()
        if row is None:
            raise self._error("trajectory_id", f"unknown trajectory {trajectory_id!r}")
        info = dict(zip([c.strip() for c in _TRAJECTORY_COLUMNS.split(",")], row))
        for key in ("has_rewards", "has_frames", "terminated"):
            info[key] = bool(info[key])
        info["metadata"] = json.loads(info["metadata"])
        return info

    def trajectory(self, trajectory_id: str) -> Trajectory:
        """Load a trajectory; its arrays are read-only. Verifies the npz's checksum and every
        field.

        A video-backed trajectory's frames are a ``VideoFrames`` over the stored mp4, which is
        checked cheaply here (present, of the recorded size in bytes, holding the frames the
        trajectory shows); its sha256 is checked by :meth:`verify` only, since hashing a
        100 MB recording costs ~0.3 s. A damaged mp4 that passes these checks fails at the
        first decode of a bad frame, with a ``VideoError`` (``DatasetError`` from
        :meth:`segment` and :meth:`write_preview`) naming the file and the frame index.
        """
        with self._lock:
            cached = self._cache.get(trajectory_id)
            if cached is not None:
                self._cache.move_to_end(trajectory_id)
                return cached
        trajectory = self._load_trajectory(self.trajectory_info(trajectory_id))
        with self._lock:
            if self._cache_size:
                self._cache[trajectory_id] = trajectory
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return trajectory

    def _load_trajectory(self, info: dict[str, Any]) -> Trajectory:
        path = self._root / info["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DatasetError(
                f"{path}: file missing (trajectory {info['id']!r} is indexed in {self._db_path})"
            ) from None
        intact = hashlib.sha256(data).hexdigest() == info["sha256"]
        note = "" if intact else " (checksum mismatch: file corrupt or truncated)"
        steps = info["length"]
        expected: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "observations": ((steps + 1, info["obs_dim"]), np.dtype(np.float32)),
            "actions": ((steps, info["action_dim"]), np.dtype(np.float32)),
        }
        if info["has_rewards"]:
            expected["rewards"] = ((steps,), np.dtype(np.float32))
        try:
            npz = np.load(io.BytesIO(data), allow_pickle=False)
            names = set(npz.files)
        except Exception as err:
            raise DatasetError(
                f"{path}: not a readable npz file ({type(err).__name__}: {err}){note}"
            ) from None
        if info["video_file"] is not None:
            expected["frame_indices"] = ((steps + 1,), np.dtype(np.int64))
            if "frame_pointer" in names:
                expected["frame_pointer"] = ((steps + 1, 3), np.dtype(np.float32))
        elif info["has_frames"]:
            shape = (steps + 1, info["frame_height"], info["frame_width"], 3)
            expected["frames"] = (shape, np.dtype(np.uint8))
        arrays: dict[str, np.ndarray] = {}
        for field, (shape, dtype) in expected.items():
            if field not in names:
                raise DatasetError(f"{path}: field '{field}': missing{note}")
            try:
                array = npz[field]
            except Exception as err:
                raise DatasetError(
                    f"{path}: field '{field}': unreadable ({type(err).__name__}: {err}){note}"
                ) from None
            if array.dtype != dtype:
                raise DatasetError(
                    f"{path}: field '{field}': expected dtype {dtype}, found {array.dtype}{note}"
                )
            if array.shape != shape:
                raise DatasetError(
                    f"{path}: field '{field}': expected shape {shape}, found {array.shape}{note}"
                )
            array.flags.writeable = False
            arrays[field] = array
        for field in sorted(names - expected.keys()):
            raise DatasetError(f"{path}: field '{field}': not recorded in {self._db_path}{note}")
        if not intact:
            raise DatasetError(f"{path}: checksum mismatch (file corrupt or truncated)")
        frames = arrays.get("frames")
        if info["video_file"] is not None:
            frames = self._open_video(info, arrays)
        try:
            return Trajectory(
                observations=arrays["observations"],
                actions=arrays["actions"],
                rewards=arrays.get("rewards"),
                frames=frames,
                env_id=info["env_id"],
                seed=info["seed"],
                embodiment=info["embodiment"],
                terminated=info["terminated"],
                metadata=info["metadata"],
                id=info["id"],
            )
        except ValueError as err:
            raise DatasetError(f"{path}: {err}") from None

    def _open_video(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> VideoFrames:
        """The frames of a video-backed trajectory, after the cheap checks of its mp4."""
        path = self._root / info["video_file"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DatasetError(
                f"{path}: file missing (trajectory {info['id']!r} is indexed in {self._db_path})"
            ) from None
        if size != info["video_bytes"]:
            raise DatasetError(
                f"{path}: field 'video_bytes': {size} bytes, {info['video_bytes']} recorded "
                "(file truncated or altered)"
            )
        try:
            return VideoFrames(
                path, indices=arrays["frame_indices"],
                size=(info["frame_height"], info["frame_width"]),
                pointer=arrays.get("frame_pointer"),
            )
        except VideoError as err:
            raise DatasetError(f"{err} (trajectory {info['id']!r})") from None

    def verify(self, trajectory_ids: Iterable[str] | None = None) -> None:
        """Check the sha256 of every stored file of these trajectories (all: None), mp4s
        included; raises ``DatasetError`` naming the first file that differs from what was
        stored. Reads every byte, so it costs ~3 ms per MB."""
        ids = self.trajectory_ids() if trajectory_ids is None else list(trajectory_ids)
        for tid in ids:
            info = self.trajectory_info(tid)
            files = [(info["file"], info["sha256"])]
            if info["video_file"] is not None:
                files.append((info["video_file"], info["video_sha256"]))
            for relative, recorded in files:
                path = self._root / relative
                try:
                    with open(path, "rb") as f:
                        digest = hashlib.file_digest(f, "sha256").hexdigest()
                except FileNotFoundError:
                    raise DatasetError(
                        f"{path}: file missing (trajectory {tid!r} is indexed in {self._db_path})"
                    ) from None
                if digest != recorded:
                    raise DatasetError(
                        f"{path}: checksum mismatch (file corrupt or altered since it was stored)"
                    )

    # --- clips ----------------------------------------------------------------------------

    def add_clips(self, clips: Iterable[Clip]) -> None:
        """Store clips in one transaction; each must fit inside a stored trajectory."""
        clips = self._checked_batch(Clip, clips, "clips")
        with self._transaction(write=True) as conn:
            for clip in clips:
                subject = f"clip {clip.id!r}"
                row = conn.execute(
                    "SELECT length FROM trajectories WHERE id = ?", (clip.trajectory_id,)
                ).fetchone()
                if row is None:
                    raise self._error(
                        "trajectory_id", f"unknown trajectory {clip.trajectory_id!r}",
                        subject=subject,
                    )
                if clip.start + clip.length > row[0]:
                    raise self._error(
                        "length",
                        f"steps [{clip.start}, {clip.start + clip.length}) do not fit in "
                        f"trajectory {clip.trajectory_id!r} of {row[0]} steps",
                        subject=subject,
                    )
                if _exists(conn, "clips", clip.id):
                    raise self._error("id", "already stored", subject=subject)
                conn.execute(
                    "INSERT INTO clips (id, trajectory_id, start, length) VALUES (?, ?, ?, ?)",
                    (clip.id, clip.trajectory_id, clip.start, clip.length),
                )

    def clip(self, clip_id: str) -> Clip:
        """The stored clip with this id."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT trajectory_id, start, length, id FROM clips WHERE id = ?", (clip_id,)
            ).fetchone()
        if row is None:
            raise self._error("clip_id", f"unknown clip {clip_id!r}")
        return Clip(*row)

    def clips(self) -> list[Clip]:
        """All stored clips, in insertion order."""
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT trajectory_id, start, length, id FROM clips ORDER BY seq")
            return [Clip(*row) for row in rows]

    def segment(self, clip: Clip | str) -> Segment:
        """The arrays of a clip (read-only views into the cached trajectory; frames of a
        video-backed trajectory are decoded, only the clip's)."""
        if isinstance(clip, str):
            clip = self.clip(clip)
        trajectory = self.trajectory(clip.trajectory_id)
        try:
            return trajectory.segment(clip.start, clip.length)
        except VideoError as err:
            raise DatasetError(f"{err} (clip {clip.id!r})") from None
        except ValueError as err:
            raise DatasetError(f"{self._db_path}: clip {clip.id!r}: {err}") from None

    # --- queries --------------------------------------------------------------------------

    def add_queries(self, queries: Iterable[Query]) -> None:
        """Store queries in one transaction; every clip they show must be stored."""
        queries = self._checked_batch(Query, queries, "queries")
        with self._transaction(write=True) as conn:
            for query in queries:
                subject = f"query {query.id!r}"
                if _exists(conn, "queries", query.id):
                    raise self._error("id", "already stored", subject=subject)
                for clip_id in query.clip_ids:
                    if not _exists(conn, "clips", clip_id):
                        raise self._error("clip_ids", f"unknown clip {clip_id!r}", subject=subject)
                conn.execute(
                    "INSERT INTO queries (id, selector, score, round, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (query.id, query.selector, query.score, query.round, query.created_at),
                )
                conn.executemany(
                    "INSERT INTO query_clips (query_id, position, clip_id) VALUES (?, ?, ?)",
                    [(query.id, i, clip_id) for i, clip_id in enumerate(query.clip_ids)],
                )

    def _select_queries(self, where: str = "", params: tuple[Any, ...] = ()) -> list[Query]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                f"SELECT id, selector, score, round, created_at FROM queries q {where} "
                "ORDER BY q.seq",
                params,
            ).fetchall()
            clip_ids: dict[str, list[str]] = collections.defaultdict(list)
            for query_id, clip_id in conn.execute(
                "SELECT qc.query_id, qc.clip_id FROM query_clips qc "
                f"JOIN queries q ON q.id = qc.query_id {where} ORDER BY qc.query_id, qc.position",
                params,
            ):
                clip_ids[query_id].append(clip_id)
        return [
            Query(clip_ids=tuple(clip_ids[qid]), selector=selector, score=score, round=rnd,
                  created_at=created_at, id=qid)
            for qid, selector, score, rnd, created_at in rows
        ]

    def query(self, query_id: str) -> Query:
        """The stored query with this id."""
        found = self._select_queries("WHERE q.id = ?", (query_id,))
        if not found:
            raise self._error("query_id", f"unknown query {query_id!r}")
        return found[0]

    def queries(self) -> list[Query]:
        """All stored queries, in insertion order."""
        return self._select_queries()

    def unlabeled_queries(self) -> list[Query]:
        """Queries without any label yet, in insertion order."""
        return self._select_queries(
            "WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.query_id = q.id)"
        )

    # --- labels ---------------------------------------------------------------------------

    def add_label(self, label: Label) -> None:
        """Store one label in its own transaction, committed (durably) before returning.

        Raises ``DatasetError`` (and writes nothing) for an unknown query, an outcome that
        does not fit the query (left/right on a triplet, a ranking on a pair) or a ranking
        that is not a permutation of the query's clip indices.
        """
        label = self._checked(Label, label, "label")
        subject = f"label {label.id!r}"
        with self._transaction(write=True) as conn:
            if not _exists(conn, "queries", label.query_id):
                raise self._error("query_id", f"unknown query {label.query_id!r}", subject=subject)
            n_clips = conn.execute(
                "SELECT count(*) FROM query_clips WHERE query_id = ?", (label.query_id,)
            ).fetchone()[0]
            if n_clips != 2 and label.outcome in _PAIRWISE_ONLY:
                raise self._error(
                    "outcome",
                    f"{label.outcome.value!r} answers a pairwise query, but query "
                    f"{label.query_id!r} shows {n_clips} clips; give a ranking",
                    subject=subject,
                )
            if label.outcome is Outcome.RANKING:
                if n_clips == 2:
                    raise self._error(
                        "outcome",
                        f"'ranking' is for queries of 3 clips; answer pairwise query "
                        f"{label.query_id!r} with 'left', 'right' or 'equal'",
                        subject=subject,
                    )
                if label.ranking is None or len(label.ranking) != n_clips:
                    raise self._error(
                        "ranking",
                        f"expected a permutation of 0..{n_clips - 1} for query "
                        f"{label.query_id!r}, found {label.ranking!r}",
                        subject=subject,
                    )
            if _exists(conn, "labels", label.id):
                raise self._error("id", "already stored", subject=subject)
            conn.execute(
                f"INSERT INTO labels ({_LABEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    label.id, label.query_id, label.outcome.value,
                    None if label.ranking is None else json.dumps(list(label.ranking)),
                    label.annotator, json.dumps(label.source), label.created_at,
                    json.dumps(list(label.ties)) if label.ties else None,
                ),
            )

    def _select_labels(self, where: str = "", params: tuple[Any, ...] = ()) -> list[Label]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                f"SELECT {_LABEL_COLUMNS} FROM labels {where} ORDER BY seq", params
            ).fetchall()
        labels = []
        for lid, query_id, outcome, ranking, annotator, source, created_at, ties in rows:
            try:
                labels.append(Label(
                    query_id=query_id, outcome=outcome,
                    ranking=None if ranking is None else tuple(json.loads(ranking)),
                    annotator=annotator, source=json.loads(source), created_at=created_at,
                    id=lid, ties=() if ties is None else tuple(json.loads(ties)),
                ))
            except (ValueError, TypeError) as err:
                raise DatasetError(f"{self._db_path}: label {lid!r}: {err}") from None
        return labels

    def labels(self) -> list[Label]:
        """All labels, in insertion order."""
        return self._select_labels()

    def labels_for(self, query_id: str) -> list[Label]:
        """The labels of one query, in insertion order."""
        self.query(query_id)  # unknown query -> DatasetError naming query_id
        return self._select_labels("WHERE query_id = ?", (query_id,))

    def delete_label(self, label_id: str) -> None:
        """Remove a label (undo)."""
        with self._transaction(write=True) as conn:
            if conn.execute("DELETE FROM labels WHERE id = ?", (label_id,)).rowcount == 0:
                raise self._error("label_id", f"unknown label {label_id!r}")

    # --- annotators -----------------------------------------------------------------------

    def add_annotator(self, name: str, role: str = "annotator") -> str:
        """Register an annotator and return their secret token (only its sha256 is stored)."""
        if not isinstance(name, str) or not name.strip():
            raise self._error("name", f"expected a non-empty annotator name, found {name!r}")
        if role not in ROLES:
            raise self._error("role", f"expected one of {ROLES}, found {role!r}")
        token = secrets.token_urlsafe(24)
        with self._transaction(write=True) as conn:
            if conn.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone():
                raise self._error("name", f"annotator {name!r} already exists")
            conn.execute(
                "INSERT INTO annotators (name, token_sha256, created_at, role) VALUES (?, ?, ?, ?)",
                (name, _token_hash(token), time.time(), role),
            )
        return token

    def revoke_annotator(self, name: str) -> None:
        """Invalidate an annotator's token; their labels stay."""
        with self._transaction(write=True) as conn:
            updated = conn.execute(
                "UPDATE annotators SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name)).rowcount
            if not updated:
                known = conn.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone()
                raise self._error("name", f"annotator {name!r} is already revoked" if known
                                  else f"no annotator {name!r}")

    def annotator_for_token(self, token: str) -> tuple[str, str] | None:
        """(name, role) of the annotator a token belongs to, or None (unknown or revoked)."""
        if not isinstance(token, str) or not token:
            return None
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT name, role FROM annotators WHERE token_sha256 = ? AND revoked_at IS NULL",
                (_token_hash(token),),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def annotators(self) -> list[str]:
        """Names of the annotators whose tokens are valid, in registration order."""
        return [entry["name"] for entry in self.annotator_records() if entry["revoked_at"] is None]

    def annotator_records(self) -> list[dict[str, Any]]:
        """Every annotator ever registered: name, role, created_at, revoked_at (or None)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT name, role, created_at, revoked_at FROM annotators ORDER BY seq").fetchall()
        return [dict(zip(("name", "role", "created_at", "revoked_at"), row)) for row in rows]

    # --- leases ---------------------------------------------------------------------------

    def lease(self, query_id: str, annotator: str, expires_at: float) -> None:
        """Hand a query to an annotator until ``expires_at`` (a later call renews it)."""
        with self._transaction(write=True) as conn:
            if not _exists(conn, "queries", query_id):
                raise self._error("query_id", f"unknown query {query_id!r}")
            conn.execute(
                "INSERT INTO leases (query_id, annotator, leased_at, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (query_id, annotator) DO UPDATE SET expires_at = excluded.expires_at",
                (query_id, annotator, time.time(), float(expires_at)),
            )

    def leases(self) -> list[tuple[str, str, float]]:
        """Every (query id, annotator, expires_at) ever handed out, expired ones included."""
        with self._transaction(write=False) as conn:
            return [tuple(row) for row in conn.execute(
                "SELECT query_id, annotator, expires_at FROM leases ORDER BY leased_at")]

    # --- run state ------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (e.g. the loop's iteration)."""
        if not isinstance(key, str) or not key:
            raise self._error("key", f"expected a non-empty str, found {key!r}")
        if key in _RESERVED_META:
            raise self._error("key", f"{key!r} is reserved")
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise self._error("value", f"expected a JSON value for meta {key!r} ({err})") from None
        with self._transaction(write=True) as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, text),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # --- previews -------------------------------------------------------------------------

    def preview_path(self, clip_id: str) -> Path:
        """Where the mp4 preview of a clip lives (it may not be written yet)."""
        try:
            check_id("clip_id", clip_id)
        except ValueError as err:
            raise DatasetError(f"{self._root / PREVIEW_DIR}: {err}") from None
        return self._root / PREVIEW_DIR / f"{clip_id}.mp4"

    def write_preview(self, clip_id: str, fps: float = 10.0, height: int | None = None) -> Path:
        """Encode the clip's frames ``[start, start+length]`` as an H.264 mp4 (yuv420p,
        faststart; odd sizes padded with black to even; scaled to ``height`` when given, the
        width keeping the aspect ratio) and return its path. Frames are decoded and encoded
        ``PREVIEW_CHUNK`` at a time, so a long clip of a video-backed trajectory never sits in
        memory (a 5-minute 360p episode is 4 GB decoded)."""
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
            raise self._error("fps", f"expected a positive frame rate, found {fps!r}")
        clip = self.clip(clip_id)
        frames = self.trajectory(clip.trajectory_id).frames
        if frames is None:
            info = self.trajectory_info(clip.trajectory_id)
            raise self._error(
                "frames",
                f"trajectory {clip.trajectory_id!r} has no frames, so clip {clip_id!r} has "
                "no preview",
                file=self._root / info["file"],
            )
        stop = clip.start + clip.length + 1
        if stop > len(frames):
            raise self._error("length", f"clip {clip_id!r} does not fit in trajectory "
                              f"{clip.trajectory_id!r} of {len(frames) - 1} steps")
        chunks = (frames[start:min(start + PREVIEW_CHUNK, stop)]
                  for start in range(clip.start, stop, PREVIEW_CHUNK))
        final = self.preview_path(clip_id)
        final.parent.mkdir(exist_ok=True)
        try:
            return write_video((frame for chunk in chunks for frame in chunk), final, fps=fps,
                               height=height)
        except VideoError as err:
            raise DatasetError(str(err)) from None

    # --- export ---------------------------------------------------------------------------

    def to_imitation(self, trajectory_ids: Iterable[str] | None = None) -> list[TrajectoryWithRew]:
        """Stored trajectories as ``imitation.data.types.TrajectoryWithRew`` (obs (T+1, D),
        acts (T, A), rews (T,) float32, infos None, terminal = terminated)."""
        try:
            from imitation.data.types import TrajectoryWithRew
        except ImportError as err:
            raise ImportError(
                "to_imitation needs the 'imitation' package (pip install imitation --no-deps)"
            ) from err

        ids = self.trajectory_ids() if trajectory_ids is None else list(trajectory_ids)
        for tid in ids:
            info = self.trajectory_info(tid)
            if not info["has_rewards"]:
                raise self._error(
                    "rewards",
                    f"trajectory {tid!r} has no ground-truth rewards; TrajectoryWithRew needs them",
                    file=self._root / info["file"],
                )
        result = []
        for tid in ids:
            trajectory = self.trajectory(tid)
            result.append(TrajectoryWithRew(
                obs=trajectory.observations, acts=trajectory.actions, infos=None,
                terminal=trajectory.terminated,
                rews=np.asarray(trajectory.rewards, dtype=np.float32),
            ))
        return result


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _exists(conn: sqlite3.Connection, table: str, record_id: str) -> bool:
    return conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (record_id,)).fetchone() is not None


def _check_video_frames(video: VideoFrames, trajectory_id: str) -> None:
    """Raise ``DatasetError`` naming the mp4 unless it (still) holds every frame ``video``
    shows: as many frames as when it was opened, and at least its largest index + 1."""
    try:
        available = frame_count(video.path)
    except VideoError as err:
        raise DatasetError(f"{err} (field 'frames' of trajectory {trajectory_id!r})") from None
    needed = int(video.indices.max()) + 1 if len(video.indices) else 0
    if available != video.source_frame_count or available < needed:
        raise DatasetError(
            f"{video.path}: field 'frames': the video has {available} frames, trajectory "
            f"{trajectory_id!r} needs frames up to index {needed - 1} of the "
            f"{video.source_frame_count} it had when it was opened"
        )


def _copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to the new file ``target`` (fsynced) and return its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as src, open(target, "xb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError as err:
        if not source.exists():
            raise DatasetError(f"{source}: field 'frames': file missing") from None
        raise DatasetError(f"{target}: cannot write ({err})") from err
    return digest.hexdigest(), size


def _check_version(conn: sqlite3.Connection, db_path: Path) -> None:
    """Check the stored format version; migrate older formats that have migrations."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    except sqlite3.Error as err:
        raise DatasetError(f"{db_path}: table 'meta' unreadable, not a dataset ({err})") from err
    if row is None:
        raise DatasetError(f"{db_path}: field 'format_version': missing from table 'meta'")
    found = json.loads(row[0])
    if found == FORMAT_VERSION:
        return
    steps = range(found, FORMAT_VERSION) if isinstance(found, int) else range(0)
    if not steps or any(v not in MIGRATIONS for v in steps):
        raise DatasetError(
            f"{db_path}: field 'format_version': found version {found!r}, expected "
            f"{FORMAT_VERSION} (this embodied-pref reads format {FORMAT_VERSION} and has no "
            f"migration from {found!r})"
        )
    try:
        conn.execute("BEGIN IMMEDIATE")
        current = json.loads(conn.execute(
            "SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0])
        for version in range(current, FORMAT_VERSION):
            MIGRATIONS[version](conn)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'",
                     (json.dumps(FORMAT_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
