"""The preference dataset: trajectories, clips, queries, labels, annotators and leases in one
set of tables (SQLite in the dataset directory, or PostgreSQL), arrays, videos and previews
as files in a directory.

```
<dir>/dataset.sqlite            the tables, for a SQLite dataset (see schema.py)
<dir>/trajectories/<id>.npz     a trajectory's arrays (see arrays.py)
<dir>/videos/<id>.mp4           a video-backed trajectory's recording
<dir>/previews/<clip_id>.mp4    H.264 previews for the labeling UI (see previews.py)
<dir>/instructions.md           task instructions shown to people (optional)
```

A video-backed trajectory (frames given as a ``VideoFrames``) keeps its frames in the mp4:
``frame_indices[t]`` is the video frame shown at step t, ``frame_pointer[t]`` the mouse
cursor drawn on it (x, y, size in video pixels; NaN x: none), and the index row records the
mp4, its size in bytes and sha256 and the size frames are decoded to (``frame_height``,
``frame_width``). Loading it decodes nothing; clips and previews decode only their frames.

Labels are paid for, so every write is atomic and durable: each label is its own committed
transaction (SQLite in WAL mode with ``synchronous=FULL``; PostgreSQL's durable commit);
array and video files are written to a temporary file, fsynced, renamed into place and their
directory fsynced. Bad input raises ``DatasetError`` naming the file and the field, and
writes nothing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from embodied_pref.data import Clip, Label, Outcome, Query, Segment, Trajectory
from embodied_pref.data.video import VideoError
from embodied_pref.durable import fsync_dir, write_atomic
from embodied_pref.store import schema
from embodied_pref.store.arrays import (
    TRAJECTORY_DIR,
    VIDEO_DIR,
    StagedFiles,
    load_trajectory,
    place,
    stage_trajectory,
    verify_files,
)
from embodied_pref.store.errors import ConflictError, DatasetError
from embodied_pref.store.location import BEGIN_KEY, Location, parse_location
from embodied_pref.store.previews import PREVIEW_DIR, preview_path, write_frames_preview
from embodied_pref.store.schema import ROLES, annotators, clips, labels, leases, meta, queries
from embodied_pref.store.schema import query_clips, trajectories, trajectory_views

if TYPE_CHECKING:
    from imitation.data.types import TrajectoryWithRew

INSTRUCTIONS_FILE = "instructions.md"
FILES_META = "files_dir"
"""Meta key of a PostgreSQL dataset's file directory (absolute), recorded on create."""
_RESERVED_META = frozenset({"format_version", FILES_META})
_TRAJECTORY_COLUMNS = [c for c in trajectories.c if c.name != "seq"]
_VIEW_COLUMNS = [c for c in trajectory_views.c if c.name != "trajectory_id"]
_LABEL_COLUMNS = [labels.c[name] for name in (
    "id", "query_id", "outcome", "ranking", "annotator", "source", "created_at", "ties")]
_CLIP_COLUMNS = (clips.c.trajectory_id, clips.c.start, clips.c.length, clips.c.id)
_LOCK_QUERY = select(queries.c.id).where(queries.c.id == bindparam("query_id")).with_for_update()
"""A label's query row, locked until the commit (PostgreSQL; SQLite's write transaction holds
the database). The checks come in the next statement: PostgreSQL reads them in a snapshot
taken after the lock, so they see what the writer before committed."""
_LABEL_CHECK = select(
    select(func.count()).where(query_clips.c.query_id == bindparam("query_id")).scalar_subquery(),
    exists().where(labels.c.id == bindparam("label_id")),
    exists().where(labels.c.query_id == bindparam("query_id"),
                   labels.c.annotator == bindparam("annotator")),
)
"""The query's clip count, whether the label id is taken and whether the annotator answered
the query, in one round trip (statements built once: labels are the hot path)."""
_INSERT_LABEL = insert(labels)
_PAIRWISE_ONLY = frozenset({Outcome.LEFT, Outcome.RIGHT})
_Record = TypeVar("_Record", Trajectory, Clip, Query, Label)


def _reason(err: SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's statement dump."""
    return str(err.orig if isinstance(err, DBAPIError) else err).strip()


def _connect(location: Location, *, create: bool) -> tuple[Engine, Connection]:
    engine = location.engine(create=create)
    try:
        return engine, engine.connect()
    except SQLAlchemyError as err:
        engine.dispose()
        what = "not a readable SQLite database" if location.is_sqlite else "cannot connect"
        raise DatasetError(f"{location.name}: {what} ({_reason(err)})") from None


def _release(engine: Engine, conn: Connection) -> None:
    conn.close()
    engine.dispose()


@contextlib.contextmanager
def _begin(conn: Connection, *, write: bool) -> Iterator[Connection]:
    """One transaction, committed on exit; a SQLite write takes the write lock up front."""
    if write and conn.dialect.name == "sqlite":
        conn.info[BEGIN_KEY] = "BEGIN IMMEDIATE"
    with conn.begin():
        yield conn


class PreferenceDataset:
    """A dataset of trajectories, clips, queries, labels and annotators.

    Build one with :meth:`create` or :meth:`open`, from a directory or a URL (``sqlite:///dir``
    or ``postgresql://...?files=dir``, see ``embodied_pref.store.location``). One instance may
    be shared between threads (a lock serializes access to its connection); other processes
    may write the same dataset at the same time (SQLite: database locking with a 30 s busy
    timeout; PostgreSQL: row locks and unique constraints).
    """

    def __init__(self, target: str, location: Location, root: Path, engine: Engine,
                 conn: Connection, *, cache_size: int = 8) -> None:
        self._target = target
        self._location = location
        self._root = root
        self._db_path = location.name
        self._engine = engine
        self._conn: Connection | None = conn
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
        """Create a dataset at ``path``, a directory (parents included) or a URL.

        ``exist_ok=True`` opens an existing dataset instead of failing; its description and
        instructions are left as they are.
        """
        location = parse_location(path)
        root = location.files
        if root is None:
            raise DatasetError(
                f"{location.name}: parameter 'files': a new PostgreSQL dataset needs the "
                "directory of its arrays, videos and previews (postgresql://...?files=/path)")
        if root.exists() and not root.is_dir():
            raise DatasetError(f"{root}: exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        for folder in (TRAJECTORY_DIR, PREVIEW_DIR, VIDEO_DIR):
            (root / folder).mkdir(exist_ok=True)
        engine, conn = _connect(location, create=True)
        values: dict[str, Any] = {"description": description, "created_at": time.time()}
        if not location.is_sqlite:
            values[FILES_META] = str(root.resolve())
        try:
            with _begin(conn, write=True):
                # an empty SQLite file is what an interrupted create leaves
                found = schema.has_dataset(conn)
                if not found:
                    schema.create_tables(conn, values)
                    if instructions:
                        write_atomic(root / INSTRUCTIONS_FILE, instructions.encode("utf-8"))
        except SQLAlchemyError as err:
            _release(engine, conn)
            raise DatasetError(f"{location.name}: {_reason(err)}") from None
        except BaseException:
            _release(engine, conn)
            raise
        if found:
            _release(engine, conn)
            if not exist_ok:
                raise DatasetError(f"{location.name}: a dataset already exists (pass exist_ok=True)")
            return cls.open(path, cache_size=cache_size)
        fsync_dir(root)
        fsync_dir(root.resolve().parent)
        return cls(os.fspath(path), location, root, engine, conn, cache_size=cache_size)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, cache_size: int = 8) -> PreferenceDataset:
        """Open an existing dataset (a directory or a URL); checks (and migrates) the format
        version."""
        location = parse_location(path)
        if location.is_sqlite:
            root = location.files
            if not root.is_dir():
                raise DatasetError(f"{root}: not a dataset directory (no such directory)")
            if not Path(location.name).is_file():
                raise DatasetError(f"{location.name}: missing, so {root} is not a dataset directory")
        engine, conn = _connect(location, create=False)
        try:
            stored_root = _check_version(conn, location)
        except BaseException:
            _release(engine, conn)
            raise
        root = location.files or stored_root
        if not root.is_dir():
            _release(engine, conn)
            raise DatasetError(f"{root}: the dataset's file directory is missing (arrays, videos "
                               f"and previews of {location.name}; give ?files= where it is "
                               "mounted)")
        return cls(os.fspath(path), location, root, engine, conn, cache_size=cache_size)

    def close(self) -> None:
        """Close the database connection; the instance cannot be used afterwards."""
        with self._lock:
            if self._conn is not None:
                _release(self._engine, self._conn)
                self._conn = None
            self._cache.clear()

    def __enter__(self) -> PreferenceDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceDataset({self.name!r})"

    @property
    def path(self) -> Path:
        """The dataset directory (of a PostgreSQL dataset: its file directory)."""
        return self._root

    @property
    def url(self) -> str:
        """The directory or URL this dataset was opened with (give it to :meth:`open` in
        another process)."""
        return self._target

    @property
    def name(self) -> str:
        """The directory, or the URL without its password, for messages."""
        return str(self._root) if self._location.is_sqlite else self._location.name

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._location.url.get_backend_name()

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
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        """One transaction, committed on exit (rolled back on any error)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise DatasetError(f"{self._db_path}: dataset is closed")
            try:
                with _begin(conn, write=write):
                    yield conn
            except SQLAlchemyError as err:
                raise DatasetError(f"{self._db_path}: {_reason(err)}") from err

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

    def add_trajectory(self, trajectory: Trajectory, clips_: Iterable[Clip] = ()) -> str:
        """Store a trajectory (npz file + index row), and optionally clips of it, and return its id.

        Frames given as a ``VideoFrames`` stay encoded: their mp4 is copied byte for byte to
        ``videos/<sha256>.mp4`` (once, however many trajectories it holds) and the npz holds the
        frame indices (and cursor pointer). Before anything is written the mp4 is checked to
        hold every frame the trajectory shows (``DatasetError`` naming the mp4 and field
        'frames'). Further cameras (``views``) are stored alike, a trajectory_views row each.
        The files, the index rows and the clips land together or not at all.
        """
        return self.add_trajectories([(trajectory, clips_)])[0]

    def add_trajectories(self, items: Iterable[tuple[Trajectory, Iterable[Clip]]]) -> list[str]:
        """Store several trajectories, each with its clips, as :meth:`add_trajectory` does, in
        one transaction (one commit and one directory fsync for the lot: an importer's batches);
        all land together or none does. Returns their ids."""
        items = [(trajectory, list(clips_)) for trajectory, clips_ in items]
        checked = self._checked_batch(Trajectory, [trajectory for trajectory, _ in items], "trajectory")
        own_clips = self._checked_batch(Clip, [clip for _, clips_ in items for clip in clips_], "clips")
        ids = [trajectory.id for trajectory in checked]
        staged: list[StagedFiles] = []
        try:
            for trajectory in checked:
                staging = {final for files in staged for _, final in files.moves}
                staged.append(stage_trajectory(self._root, trajectory, staging))
            with self._transaction(write=True) as conn:
                stored = _existing(conn, trajectories, ids)
                if stored:
                    raise self._error("id", f"trajectory {stored[0]!r} is already stored")
                place(staged)
                if checked:
                    conn.execute(insert(trajectories), [_trajectory_row(trajectory, files.row)
                                                        for trajectory, files in zip(checked, staged)])
                views = [{"trajectory_id": trajectory.id, **view} for trajectory, files in zip(checked, staged)
                         for view in files.views]
                if views:
                    conn.execute(insert(trajectory_views), views)
                self._insert_clips(conn, own_clips, {trajectory.id: trajectory.length for trajectory in checked})
        except BaseException:
            for files in staged:
                files.discard()
            raise
        return ids

    def trajectory_ids(self) -> list[str]:
        """Ids of all stored trajectories, in insertion order."""
        with self._transaction(write=False) as conn:
            return list(conn.scalars(select(trajectories.c.id).order_by(trajectories.c.seq)))

    def trajectory_info(self, trajectory_id: str) -> dict[str, Any]:
        """The index row of a trajectory (no arrays loaded): id, env_id, seed, embodiment,
        length, obs_dim, action_dim, has_rewards, has_frames, frame_height, frame_width,
        terminated, metadata, file, sha256, created_at, and video_file, video_sha256,
        video_bytes (None unless the frames live in an mp4); views: its further cameras'
        rows (camera, position, frame_height, frame_width, video_file, video_sha256,
        video_bytes), in position order."""
        with self._transaction(write=False) as conn:
            row = conn.execute(select(*_TRAJECTORY_COLUMNS)
                               .where(trajectories.c.id == trajectory_id)).mappings().first()
            views = conn.execute(select(*_VIEW_COLUMNS).where(trajectory_views.c.trajectory_id == trajectory_id)
                                 .order_by(trajectory_views.c.position)).mappings().all()
        if row is None:
            raise self._error("trajectory_id", f"unknown trajectory {trajectory_id!r}")
        info = dict(row, views=[dict(view) for view in views])
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
        trajectory = load_trajectory(self._root, self.trajectory_info(trajectory_id),
                                     self._db_path)
        with self._lock:
            if self._cache_size:
                self._cache[trajectory_id] = trajectory
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return trajectory

    def verify(self, trajectory_ids: Iterable[str] | None = None) -> None:
        """Check the sha256 of every stored file of these trajectories (all: None), mp4s
        included; raises ``DatasetError`` naming the first file that differs from what was
        stored. Reads every byte, so it costs ~3 ms per MB."""
        ids = self.trajectory_ids() if trajectory_ids is None else list(trajectory_ids)
        for tid in ids:
            verify_files(self._root, self.trajectory_info(tid), self._db_path)

    # --- clips ----------------------------------------------------------------------------

    def add_clips(self, clips_: Iterable[Clip]) -> None:
        """Store clips in one transaction; each must fit inside a stored trajectory."""
        checked = self._checked_batch(Clip, clips_, "clips")
        with self._transaction(write=True) as conn:
            self._insert_clips(conn, checked)

    def _insert_clips(self, conn: Connection, checked: list[Clip], lengths: dict[str, int] | None = None
                      ) -> None:
        """Insert clips, each checked to fit its trajectory (`lengths`: those of trajectories
        inserted in this transaction; the others' are read) and to have a new id."""
        lengths = dict(lengths or {})
        unread = sorted({clip.trajectory_id for clip in checked} - set(lengths))
        for chunk in _chunks(unread):
            rows = conn.execute(select(trajectories.c.id, trajectories.c.length).where(trajectories.c.id.in_(chunk)))
            lengths.update((trajectory_id, length) for trajectory_id, length in rows)
        for clip in checked:
            subject = f"clip {clip.id!r}"
            length = lengths.get(clip.trajectory_id)
            if length is None:
                raise self._error(
                    "trajectory_id", f"unknown trajectory {clip.trajectory_id!r}",
                    subject=subject,
                )
            if clip.start + clip.length > length:
                raise self._error(
                    "length",
                    f"steps [{clip.start}, {clip.start + clip.length}) do not fit in "
                    f"trajectory {clip.trajectory_id!r} of {length} steps",
                    subject=subject,
                )
        stored = _existing(conn, clips, [clip.id for clip in checked])
        if stored:
            raise self._error("id", "already stored", subject=f"clip {stored[0]!r}")
        if checked:
            conn.execute(insert(clips), [{"id": clip.id, "trajectory_id": clip.trajectory_id, "start": clip.start,
                                          "length": clip.length} for clip in checked])

    def clip(self, clip_id: str) -> Clip:
        """The stored clip with this id."""
        with self._transaction(write=False) as conn:
            row = conn.execute(select(*_CLIP_COLUMNS).where(clips.c.id == clip_id)).first()
        if row is None:
            raise self._error("clip_id", f"unknown clip {clip_id!r}")
        return Clip(*row)

    def clips(self) -> list[Clip]:
        """All stored clips, in insertion order."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(select(*_CLIP_COLUMNS).order_by(clips.c.seq))
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

    def clip_frames(self, clip: Clip | str, camera: str | None = None) -> np.ndarray | None:
        """The frames of a clip from its trajectory's further camera `camera` (None: the
        trajectory's own frames, those people compare), decoded: (L+1, H, W, 3) uint8."""
        if isinstance(clip, str):
            clip = self.clip(clip)
        try:
            return self.trajectory(clip.trajectory_id).view_frames(camera, clip.start, clip.length)
        except VideoError as err:
            raise DatasetError(f"{err} (clip {clip.id!r})") from None
        except ValueError as err:
            raise DatasetError(f"{self._db_path}: clip {clip.id!r}: {err}") from None

    # --- queries --------------------------------------------------------------------------

    def add_queries(self, queries_: Iterable[Query]) -> None:
        """Store queries in one transaction; every clip they show must be stored."""
        checked = self._checked_batch(Query, queries_, "queries")
        with self._transaction(write=True) as conn:
            for query in checked:
                subject = f"query {query.id!r}"
                if _exists(conn, queries, query.id):
                    raise self._error("id", "already stored", subject=subject)
                for clip_id in query.clip_ids:
                    if not _exists(conn, clips, clip_id):
                        raise self._error("clip_ids", f"unknown clip {clip_id!r}", subject=subject)
                conn.execute(insert(queries).values(
                    id=query.id, selector=query.selector, score=query.score, round=query.round,
                    created_at=query.created_at))
                conn.execute(insert(query_clips), [
                    {"query_id": query.id, "position": i, "clip_id": clip_id}
                    for i, clip_id in enumerate(query.clip_ids)])

    def _select_queries(self, *where: Any) -> list[Query]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(queries.c.id, queries.c.selector, queries.c.score, queries.c.round,
                       queries.c.created_at).where(*where).order_by(queries.c.seq)).all()
            clip_ids: dict[str, list[str]] = collections.defaultdict(list)
            for query_id, clip_id in conn.execute(
                    select(query_clips.c.query_id, query_clips.c.clip_id)
                    .join(queries, queries.c.id == query_clips.c.query_id).where(*where)
                    .order_by(query_clips.c.query_id, query_clips.c.position)):
                clip_ids[query_id].append(clip_id)
        return [
            Query(clip_ids=tuple(clip_ids[qid]), selector=selector, score=score, round=rnd,
                  created_at=created_at, id=qid)
            for qid, selector, score, rnd, created_at in rows
        ]

    def query(self, query_id: str) -> Query:
        """The stored query with this id."""
        found = self._select_queries(queries.c.id == query_id)
        if not found:
            raise self._error("query_id", f"unknown query {query_id!r}")
        return found[0]

    def queries(self) -> list[Query]:
        """All stored queries, in insertion order."""
        return self._select_queries()

    def unlabeled_queries(self) -> list[Query]:
        """Queries without any label yet, in insertion order."""
        return self._select_queries(~exists().where(labels.c.query_id == queries.c.id))

    # --- labels ---------------------------------------------------------------------------

    def add_label(self, label: Label, *, once_per_annotator: bool = False) -> None:
        """Store one label in its own transaction, committed (durably) before returning.

        Raises ``DatasetError`` (and writes nothing) for an unknown query, an outcome that
        does not fit the query (left/right on a triplet, a ranking on a pair) or a ranking
        that is not a permutation of the query's clip indices; with ``once_per_annotator``,
        also when the label's annotator already answered the query (field 'annotator'). The
        query's row stays locked until the commit, so writers in other processes label one
        query one at a time and this check cannot race.
        """
        label = self._checked(Label, label, "label")
        subject = f"label {label.id!r}"
        with self._transaction(write=True) as conn:
            if conn.scalar(_LOCK_QUERY, {"query_id": label.query_id}) is None:
                raise self._error("query_id", f"unknown query {label.query_id!r}", subject=subject)
            n_clips, id_taken, answered = conn.execute(_LABEL_CHECK, {
                "query_id": label.query_id, "label_id": label.id, "annotator": label.annotator,
            }).one()
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
            if id_taken:
                raise self._error("id", "already stored", subject=subject)
            if once_per_annotator and answered:
                raise ConflictError(f"{self._db_path}: {subject}: field 'annotator': "
                                    f"{label.annotator!r} already answered query "
                                    f"{label.query_id!r}")
            conn.execute(_INSERT_LABEL, dict(
                id=label.id, query_id=label.query_id, outcome=label.outcome.value,
                ranking=None if label.ranking is None else json.dumps(list(label.ranking)),
                annotator=label.annotator, source=json.dumps(label.source),
                created_at=label.created_at,
                ties=json.dumps(list(label.ties)) if label.ties else None,
            ))

    def _select_labels(self, *where: Any) -> list[Label]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(select(*_LABEL_COLUMNS).where(*where).order_by(labels.c.seq)).all()
        result = []
        for lid, query_id, outcome, ranking, annotator, source, created_at, ties in rows:
            try:
                result.append(Label(
                    query_id=query_id, outcome=outcome,
                    ranking=None if ranking is None else tuple(json.loads(ranking)),
                    annotator=annotator, source=json.loads(source), created_at=created_at,
                    id=lid, ties=() if ties is None else tuple(json.loads(ties)),
                ))
            except (ValueError, TypeError) as err:
                raise DatasetError(f"{self._db_path}: label {lid!r}: {err}") from None
        return result

    def labels(self) -> list[Label]:
        """All labels, in insertion order."""
        return self._select_labels()

    def labels_for(self, query_id: str) -> list[Label]:
        """The labels of one query, in insertion order."""
        self.query(query_id)  # unknown query -> DatasetError naming query_id
        return self._select_labels(labels.c.query_id == query_id)

    def delete_label(self, label_id: str) -> None:
        """Remove a label (undo)."""
        with self._transaction(write=True) as conn:
            if conn.execute(delete(labels).where(labels.c.id == label_id)).rowcount == 0:
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
            if conn.scalar(select(annotators.c.seq).where(annotators.c.name == name)):
                raise self._error("name", f"annotator {name!r} already exists")
            conn.execute(insert(annotators).values(
                name=name, token_sha256=_token_hash(token), created_at=time.time(), role=role))
        return token

    def revoke_annotator(self, name: str) -> None:
        """Invalidate an annotator's token; their labels stay."""
        with self._transaction(write=True) as conn:
            updated = conn.execute(
                update(annotators)
                .where(annotators.c.name == name, annotators.c.revoked_at.is_(None))
                .values(revoked_at=time.time())).rowcount
            if not updated:
                known = conn.scalar(select(annotators.c.seq).where(annotators.c.name == name))
                raise self._error("name", f"annotator {name!r} is already revoked" if known
                                  else f"no annotator {name!r}")

    def annotator_for_token(self, token: str) -> tuple[str, str] | None:
        """(name, role) of the annotator a token belongs to, or None (unknown or revoked)."""
        if not isinstance(token, str) or not token:
            return None
        with self._transaction(write=False) as conn:
            row = conn.execute(
                select(annotators.c.name, annotators.c.role)
                .where(annotators.c.token_sha256 == _token_hash(token),
                       annotators.c.revoked_at.is_(None))).first()
        return None if row is None else (row[0], row[1])

    def annotators(self) -> list[str]:
        """Names of the annotators whose tokens are valid, in registration order."""
        return [entry["name"] for entry in self.annotator_records() if entry["revoked_at"] is None]

    def annotator_records(self) -> list[dict[str, Any]]:
        """Every annotator ever registered: name, role, created_at, revoked_at (or None)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(annotators.c.name, annotators.c.role, annotators.c.created_at,
                       annotators.c.revoked_at).order_by(annotators.c.seq)).mappings().all()
        return [dict(row) for row in rows]

    # --- leases ---------------------------------------------------------------------------

    def lease(self, query_id: str, annotator: str, expires_at: float) -> None:
        """Hand a query to an annotator until ``expires_at`` (a later call renews it)."""
        with self._transaction(write=True) as conn:
            if not _exists(conn, queries, query_id):
                raise self._error("query_id", f"unknown query {query_id!r}")
            schema.upsert(conn, leases, {"query_id": query_id, "annotator": annotator,
                                         "leased_at": time.time(),
                                         "expires_at": float(expires_at)},
                          keys=("query_id", "annotator"), updated=("expires_at",))

    def leases(self) -> list[tuple[str, str, float]]:
        """Every (query id, annotator, expires_at) ever handed out, expired ones included."""
        with self._transaction(write=False) as conn:
            return [tuple(row) for row in conn.execute(
                select(leases.c.query_id, leases.c.annotator, leases.c.expires_at)
                .order_by(leases.c.leased_at))]

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
            schema.upsert(conn, meta, {"key": key, "value": text}, keys=("key",),
                          updated=("value",))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        with self._transaction(write=False) as conn:
            value = conn.scalar(select(meta.c.value).where(meta.c.key == key))
        return default if value is None else json.loads(value)

    # --- previews -------------------------------------------------------------------------

    def preview_path(self, clip_id: str) -> Path:
        """Where the mp4 preview of a clip lives (it may not be written yet)."""
        try:
            return preview_path(self._root, clip_id)
        except ValueError as err:
            raise DatasetError(f"{self._root / PREVIEW_DIR}: {err}") from None

    def write_preview(self, clip_id: str, fps: float = 10.0, height: int | None = None) -> Path:
        """Encode the clip's frames ``[start, start+length]`` as an H.264 mp4 (yuv420p,
        faststart; odd sizes padded with black to even; scaled to ``height`` when given, the
        width keeping the aspect ratio) and return its path; a long clip of a video-backed
        trajectory is decoded a chunk at a time."""
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
        try:
            return write_frames_preview(frames, clip.start, stop, self.preview_path(clip_id),
                                        fps, height)
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


def _exists(conn: Connection, table: Any, record_id: str) -> bool:
    return conn.scalar(select(table.c.id).where(table.c.id == record_id)) is not None


_IN_CHUNK = 500
"""Ids per ``IN (...)`` query (well under every backend's limit on bound parameters)."""


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    return (ids[i:i + _IN_CHUNK] for i in range(0, len(ids), _IN_CHUNK))


def _existing(conn: Connection, table: Any, ids: list[str]) -> list[str]:
    """Those of `ids` that `table` holds, in `ids` order."""
    found = {record_id for chunk in _chunks(ids) for record_id in conn.scalars(
        select(table.c.id).where(table.c.id.in_(chunk)))}
    return [record_id for record_id in ids if record_id in found]


def _trajectory_row(trajectory: Trajectory, file_columns: dict[str, Any]) -> dict[str, Any]:
    """The trajectories table's row for `trajectory`, whose files `file_columns` describes."""
    frames = trajectory.frames
    return dict(
        id=trajectory.id, env_id=trajectory.env_id, seed=trajectory.seed,
        embodiment=trajectory.embodiment, length=trajectory.length,
        obs_dim=trajectory.observations.shape[1], action_dim=trajectory.actions.shape[1],
        has_rewards=int(trajectory.rewards is not None), has_frames=int(frames is not None),
        frame_height=None if frames is None else frames.shape[1],
        frame_width=None if frames is None else frames.shape[2],
        terminated=int(trajectory.terminated), metadata=json.dumps(trajectory.metadata),
        created_at=time.time(), **file_columns,
    )


def _check_version(conn: Connection, location: Location) -> Path | None:
    """Check the stored format version, migrating older formats that have migrations;
    returns the file directory recorded in a PostgreSQL dataset (None for SQLite)."""
    name = location.name
    try:
        with _begin(conn, write=False):
            if not schema.has_dataset(conn):
                raise DatasetError(f"{name}: table 'meta' missing, not a dataset (create one "
                                   "first, e.g. `embodied-pref collect --dataset URL`)")
            found = schema.stored_version(conn)
            files = conn.scalar(select(meta.c.value).where(meta.c.key == FILES_META))
        if schema.needs_migration(found):
            with _begin(conn, write=True):
                schema.migrate(conn)
    except schema.FormatError as err:
        raise DatasetError(f"{name}: {err}") from None
    except SQLAlchemyError as err:
        raise DatasetError(f"{name}: table 'meta' unreadable, not a dataset ({_reason(err)})"
                           ) from None
    if files is None:
        if not location.is_sqlite:
            raise DatasetError(f"{name}: field '{FILES_META}': missing from table 'meta' "
                               "(give the file directory as ?files=/path)")
        return None
    return Path(json.loads(files))
