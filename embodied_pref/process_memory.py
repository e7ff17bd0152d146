"""The peak memory of this process, for reports and benchmarks."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident set in bytes. On Linux VmHWM, which starts afresh at exec:
    getrusage's ru_maxrss survives exec, so a process started by a large parent would report
    the parent's memory from before the fork. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS)."""
    status = Path("/proc/self/status")
    if status.exists():
        peak = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(peak.split()[1]) * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
