"""The dataset's tables (SQLAlchemy Core) and the migrations between format versions, shared
by SQLite and PostgreSQL.

SQLite files keep the names, types and constraints format 4 always wrote; PostgreSQL gets
the same tables (``seq`` a serial, ``REAL`` timestamps double precision). ``MIGRATIONS[v]``
upgrades format ``v`` to ``v + 1`` in place; a database created now starts at
``FORMAT_VERSION``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    REAL,
    MetaData,
    Table,
    Text,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateColumn

from embodied_pref.data import FORMAT_VERSION, Outcome

ROLES = ("annotator", "owner")
"""An annotator labels and undoes their own labels; an owner also exports every label and
sees the agreement page."""

metadata = MetaData()
_REAL = Float().with_variant(REAL(), "sqlite")
"""SQLite's ``REAL`` as format 4 declared it; double precision elsewhere (timestamps)."""
_BIG = Integer().with_variant(BigInteger(), "postgresql")
"""64 bits, as every SQLite INTEGER is (seeds, video sizes past 2 GB)."""


def _seq() -> Column:
    """Insertion order: SQLite's ``INTEGER PRIMARY KEY AUTOINCREMENT``, a serial elsewhere."""
    return Column("seq", Integer, primary_key=True, autoincrement=True)


def _id() -> Column:
    return Column("id", Text, nullable=False, unique=True)


def _video_columns() -> list[Column]:
    """Where frames live in an mp4: its path in the dataset, SHA-256 and size (NULL: in the npz)."""
    return [Column("video_file", Text), Column("video_sha256", Text), Column("video_bytes", _BIG)]


meta = Table(
    "meta", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
trajectories = Table(
    "trajectories", metadata,
    _seq(), _id(),
    Column("env_id", Text, nullable=False),
    Column("seed", _BIG),
    Column("embodiment", Text, nullable=False),
    Column("length", Integer, CheckConstraint("length >= 1"), nullable=False),
    Column("obs_dim", Integer, nullable=False),
    Column("action_dim", Integer, nullable=False),
    Column("has_rewards", Integer, nullable=False),
    Column("has_frames", Integer, nullable=False),
    Column("frame_height", Integer),
    Column("frame_width", Integer),
    Column("terminated", Integer, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("file", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("created_at", _REAL, nullable=False),
    *_video_columns(),
    sqlite_autoincrement=True,
)
clips = Table(
    "clips", metadata,
    _seq(), _id(),
    Column("trajectory_id", Text, ForeignKey("trajectories.id"), nullable=False),
    Column("start", Integer, CheckConstraint("start >= 0"), nullable=False),
    Column("length", Integer, CheckConstraint("length >= 1"), nullable=False),
    Index("clips_by_trajectory", "trajectory_id"),
    sqlite_autoincrement=True,
)
queries = Table(
    "queries", metadata,
    _seq(), _id(),
    Column("selector", Text, nullable=False),
    Column("score", _REAL),
    Column("round", Integer, nullable=False),
    Column("created_at", _REAL, nullable=False),
    sqlite_autoincrement=True,
)
query_clips = Table(
    "query_clips", metadata,
    Column("query_id", Text, ForeignKey("queries.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("clip_id", Text, ForeignKey("clips.id"), nullable=False),
)
labels = Table(
    "labels", metadata,
    _seq(), _id(),
    Column("query_id", Text, ForeignKey("queries.id"), nullable=False),
    Column("outcome", Text, CheckConstraint(
        "outcome IN ({})".format(", ".join(f"'{o.value}'" for o in Outcome))), nullable=False),
    Column("ranking", Text),
    Column("annotator", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", _REAL, nullable=False),
    Column("ties", Text),
    Index("labels_by_query", "query_id"),
    sqlite_autoincrement=True,
)
annotators = Table(
    "annotators", metadata,
    _seq(),
    Column("name", Text, nullable=False, unique=True),
    Column("token_sha256", Text, nullable=False, unique=True),
    Column("created_at", _REAL, nullable=False),
    Column("role", Text, CheckConstraint(f"role IN {ROLES!r}"), nullable=False,
           server_default="annotator"),
    Column("revoked_at", _REAL),
    sqlite_autoincrement=True,
)
leases = Table(
    "leases", metadata,
    Column("query_id", Text, ForeignKey("queries.id"), primary_key=True),
    Column("annotator", Text, primary_key=True),
    Column("leased_at", _REAL, nullable=False),
    Column("expires_at", _REAL, nullable=False),
)

trajectory_views = Table(
    "trajectory_views", metadata,
    Column("trajectory_id", Text, ForeignKey("trajectories.id"), primary_key=True),
    Column("camera", Text, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("frame_height", Integer, nullable=False),
    Column("frame_width", Integer, nullable=False),
    *_video_columns(),
)
"""A trajectory's further cameras (`Trajectory.views`): its frames in the npz as
``view{position}_frames``, or in an mp4 (``video_*``, as the trajectory's own) read at
``view{position}_frame_indices``."""


def _add_columns(conn: Connection, table: Table, *names: str) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for columns of ``table`` as declared above."""
    for name in names:
        spec = CreateColumn(table.c[name]).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {spec}")


def _add_label_ties(conn: Connection) -> None:
    """Format 1 -> 2: labels get a ``ties`` column (JSON list of ranking positions, or NULL)."""
    _add_columns(conn, labels, "ties")


def _add_trajectory_videos(conn: Connection) -> None:
    """Format 2 -> 3: a trajectory's frames may live in an mp4 (``video_file``, its
    ``video_sha256`` and ``video_bytes``); rows stored before keep their frames in npz (NULL)."""
    _add_columns(conn, trajectories, "video_file", "video_sha256", "video_bytes")


def _add_roles_and_leases(conn: Connection) -> None:
    """Format 3 -> 4: annotators get a ``role`` (existing ones stay annotators) and a
    ``revoked_at``; the ``leases`` table records which query was handed to whom, until when."""
    _add_columns(conn, annotators, "role", "revoked_at")
    leases.create(conn)


def _add_trajectory_views(conn: Connection) -> None:
    """Format 4 -> 5: the ``trajectory_views`` table of further cameras (none before)."""
    trajectory_views.create(conn)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _add_label_ties, 2: _add_trajectory_videos, 3: _add_roles_and_leases, 4: _add_trajectory_views,
}
"""``MIGRATIONS[v](conn)`` upgrades a database of format ``v`` to ``v + 1`` in place (inside
the caller's transaction)."""


class FormatError(Exception):
    """The stored format version is missing or has no migration to ``FORMAT_VERSION``."""


def has_dataset(conn: Connection) -> bool:
    """Whether any of the dataset's tables exists (an empty database has none)."""
    return bool(set(inspect(conn).get_table_names()) & set(metadata.tables))


def create_tables(conn: Connection, values: Mapping[str, Any]) -> None:
    """Create every table at ``FORMAT_VERSION`` and store ``values`` (JSON) in ``meta``."""
    metadata.create_all(conn)
    rows = {"format_version": FORMAT_VERSION, **values}
    conn.execute(meta.insert(), [{"key": k, "value": json.dumps(v)} for k, v in rows.items()])


def stored_version(conn: Connection, *, lock: bool = False) -> Any:
    """The ``format_version`` in ``meta`` (raises ``FormatError`` when it is missing); with
    ``lock``, its row stays locked until the transaction ends (PostgreSQL)."""
    statement = select(meta.c.value).where(meta.c.key == "format_version")
    value = conn.scalar(statement.with_for_update() if lock else statement)
    if value is None:
        raise FormatError("field 'format_version': missing from table 'meta'")
    return json.loads(value)


def needs_migration(found: Any) -> bool:
    """False for ``FORMAT_VERSION``; True for a version with migrations up to it; raises
    ``FormatError`` for any other."""
    if found == FORMAT_VERSION:
        return False
    steps = range(found, FORMAT_VERSION) if isinstance(found, int) else range(0)
    if not steps or any(v not in MIGRATIONS for v in steps):
        raise FormatError(
            f"field 'format_version': found version {found!r}, expected {FORMAT_VERSION} "
            f"(this embodied-pref reads format {FORMAT_VERSION} and has no migration from "
            f"{found!r})"
        )
    return True


def migrate(conn: Connection) -> None:
    """Apply the migrations from the stored version to ``FORMAT_VERSION`` inside the caller's
    write transaction (SQLite's holds the database; PostgreSQL's locks the version's row, so
    a second process waits, then finds the new version)."""
    found = stored_version(conn, lock=True)
    if not needs_migration(found):
        return  # another process migrated it first
    for version in range(found, FORMAT_VERSION):
        MIGRATIONS[version](conn)
    conn.execute(update(meta).where(meta.c.key == "format_version")
                 .values(value=json.dumps(FORMAT_VERSION)))


def upsert(conn: Connection, table: Table, row: Mapping[str, Any], keys: tuple[str, ...],
           updated: tuple[str, ...]) -> None:
    """Insert ``row``, or set its ``updated`` columns where a row with the same ``keys``
    exists (``INSERT ... ON CONFLICT DO UPDATE``, atomic on both backends)."""
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[conn.dialect.name]
    statement = insert(table).values(**row)
    conn.execute(statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: statement.excluded[name] for name in updated}))
