"""Where a dataset lives: a directory (SQLite inside it) or a PostgreSQL database plus a
directory of files, and the SQLAlchemy engine that reaches its tables.

```
runs/ds                                    the directory; tables in runs/ds/dataset.sqlite
sqlite:///runs/ds                          the same, as a URL (sqlite:////abs/path: absolute)
postgresql://user@host/db?files=/shared/ds tables in PostgreSQL; arrays, videos, previews and
                                           instructions in /shared/ds, a directory every
                                           worker reads (recorded on create, so ?files= may
                                           be left out when opening)
```

SQLite keeps the durability settings the store always had: WAL, ``synchronous=FULL``,
foreign keys on, a 30 s busy timeout, and write transactions that take the write lock at
``BEGIN IMMEDIATE``. PostgreSQL connections set ``synchronous_commit=on`` (a commit returns
once it is on disk); writers lock rows, not the database.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from embodied_pref.store.errors import DatasetError

DB_FILE = "dataset.sqlite"
FILES_PARAMETER = "files"
"""The PostgreSQL URL's query parameter naming the directory of array, video and preview
files."""
BEGIN_KEY = "embodied_pref_begin"
"""``Connection.info`` key holding the statement that opens SQLite's next transaction."""


@dataclasses.dataclass(frozen=True)
class Location:
    """A dataset's tables and files."""

    url: URL
    """The SQLAlchemy URL of the tables (``sqlite:///<dir>/dataset.sqlite`` or
    ``postgresql+psycopg://...`` without the ``files`` parameter)."""
    files: Path | None
    """The directory of arrays, videos, previews and instructions; None for a PostgreSQL URL
    without ``?files=``, whose directory is the one recorded in the database."""

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def name(self) -> str:
        """What error messages call the database: the SQLite file, or the URL without its
        password."""
        if self.is_sqlite:
            return str(self.url.database)
        return self.url.render_as_string(hide_password=True)

    def engine(self, *, create: bool) -> Engine:
        """An engine whose connections are opened on demand and closed when released (the
        dataset holds one); SQLite's file must exist unless ``create``."""
        if self.is_sqlite:
            return _sqlite_engine(Path(str(self.url.database)), create=create)
        try:
            # Durable commits whatever the server's default: a label is acknowledged only
            # once its commit is on disk.
            return create_engine(self.url, poolclass=NullPool,
                                 connect_args={"options": "-c synchronous_commit=on"})
        except ImportError as err:
            raise DatasetError(f"{self.name}: PostgreSQL datasets need psycopg ({err}); "
                               "`pip install -e .[postgresql]` installs it") from None


def parse_location(target: str | os.PathLike[str]) -> Location:
    """The location a dataset path or URL names (see the module docstring)."""
    text = os.fspath(target)
    if "://" not in text:
        return _sqlite_location(Path(text))
    try:
        url = make_url(text)
    except ArgumentError as err:
        raise DatasetError(f"{text}: not a dataset URL ({err})") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database:
            raise DatasetError(f"{text}: expected sqlite:///<dataset directory>")
        return _sqlite_location(Path(url.database))
    if backend != "postgresql":
        raise DatasetError(f"{text}: expected a directory, sqlite:///<directory> or "
                            f"postgresql://...?{FILES_PARAMETER}=<directory>, found {backend}://")
    files = url.query.get(FILES_PARAMETER)
    if isinstance(files, tuple):
        raise DatasetError(f"{text}: parameter '{FILES_PARAMETER}' given more than once")
    url = url.difference_update_query([FILES_PARAMETER]).set(drivername="postgresql+psycopg")
    return Location(url, None if files is None else Path(files))


def _sqlite_location(root: Path) -> Location:
    return Location(URL.create("sqlite", database=str(root / DB_FILE)), root)


def _sqlite_engine(db_path: Path, *, create: bool) -> Engine:
    mode = "rwc" if create else "rw"

    def connect() -> sqlite3.Connection:
        # The driver's own transaction handling is off: ``begin`` below opens each one.
        return sqlite3.connect(f"{db_path.resolve().as_uri()}?mode={mode}", uri=True,
                               timeout=30.0, isolation_level=None, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = FULL",
                       "foreign_keys = ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def begin(conn) -> None:
        conn.exec_driver_sql(conn.info.pop(BEGIN_KEY, "BEGIN"))

    return engine
