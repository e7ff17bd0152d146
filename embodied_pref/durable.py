"""Files that survive a crash: written whole or not at all, and on disk before the call returns."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flushes a directory's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_files(paths: Sequence[Path], threads: int = 8) -> None:
    """`fsync_file` for many files at once, from a few threads: the file system writes
    concurrent fsyncs out in shared journal commits instead of one commit per file."""
    if len(paths) < 2:
        for path in paths:
            fsync_file(path)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(paths))) as pool:
        list(pool.map(fsync_file, paths))


def temp_path(final: Path, suffix: str = ".tmp") -> Path:
    """A hidden, unique sibling of `final` to write before renaming it into place."""
    return final.with_name(f".{final.stem}.{secrets.token_hex(6)}{suffix}")


def write_atomic(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` so that readers see the old file or the whole new one."""
    tmp = temp_path(final)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
