"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary directory, a server
listening only on a unix socket there, a fresh database per test, stopped at the end.

Debian's ``postgresql`` package provides the binaries (`make postgres` installs it). The
server refuses to run as root, so under root it runs as the ``postgres`` user (``nobody``
where that user does not exist) through ``runuser``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN_GLOB = "/usr/lib/postgresql/*/bin"


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), or None."""
    found = sorted(Path("/").glob(BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name))
    found = [path for path in found if (path / "pg_ctl").is_file()]
    return found[-1] if found else None


class Cluster:
    """A running cluster in ``root``; ``url(name)`` reaches a database on its socket."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root, self.bin_dir = root, bin_dir
        self.data, self.socket_dir = root / "data", root
        self._user_prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if _user_exists("postgres") else "nobody"
            shutil.chown(root, user)
            self._user_prefix = ["runuser", "-u", user, "--"]
        self._names = itertools.count()

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._user_prefix, *args], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust",
                  "-U", "postgres", "--no-sync", "-E", "UTF8")
        # synchronous_commit off by default here: the store's connections must turn it on
        # themselves for a commit to be durable (the store's tests check that they do).
        options = (f"-k {self.socket_dir} -c listen_addresses='' -c max_connections=200 "
                   "-c synchronous_commit=off")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        """A fresh, empty database; its name."""
        import psycopg

        name = f"test_{next(self._names)}"
        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started cluster in a new directory under the system's temporary directory (which the
    server's user can reach, unlike pytest's per-user one), stopped and removed on exit; fails
    the test when PostgreSQL is not installed."""
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.fail(f"PostgreSQL server binaries missing (looked for {BIN_GLOB}/pg_ctl): "
                    "`make postgres` installs Debian's postgresql", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="embodied-pref-pg-"))
    try:
        cluster = Cluster(root, bin_dir)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
