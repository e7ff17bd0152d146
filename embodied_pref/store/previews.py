"""H.264 previews of clips for the labeling UI: ``previews/<clip_id>.mp4`` in the dataset's
directory, encoded a chunk of frames at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embodied_pref.data import check_id
from embodied_pref.data.video import write_video

PREVIEW_DIR = "previews"
PREVIEW_CHUNK = 64
"""Frames decoded (and encoded) at a time when a preview is written."""


def preview_path(root: Path, clip_id: str) -> Path:
    """Where the preview of a clip lives (it may not be written yet); ``ValueError`` for an
    id that is not a file name."""
    check_id("clip_id", clip_id)
    return root / PREVIEW_DIR / f"{clip_id}.mp4"


def write_frames_preview(frames: Sequence[np.ndarray], start: int, stop: int, final: Path,
                         fps: float, height: int | None) -> Path:
    """Encode ``frames[start:stop]`` to ``final`` (``VideoError`` on failure), slicing
    ``PREVIEW_CHUNK`` frames at a time so that a long clip of a video-backed trajectory never
    sits in memory decoded (a 5-minute 360p episode is 4 GB)."""
    chunks = (frames[first:min(first + PREVIEW_CHUNK, stop)]
              for first in range(start, stop, PREVIEW_CHUNK))
    final.parent.mkdir(exist_ok=True)
    return write_video((frame for chunk in chunks for frame in chunk), final, fps=fps,
                       height=height)
