"""A folder of mp4 files, one episode each (or one per camera), read as `RecordedEpisode`s and
written back.

```
folder/pick_01.mp4            episode "pick_01", camera "video"
folder/pick_01.npz            optional: actions (N, A), states (N, D), rewards (N,)
folder/place_02.top.mp4       episode "place_02", camera "top"
folder/place_02.wrist.mp4     episode "place_02", camera "wrist"
```

A file name splits at its last dot before ".mp4": ``<name>.<camera>.mp4``; a name without a
dot is camera "video" of episode ``<name>``. An episode without actions gets (N, 0) actions,
without states (N, 0) states. The frames stay in the mp4 files as `VideoFrames`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

from embodied_pref.data.video import VideoError, VideoFrames, write_video
from embodied_pref.durable import write_atomic
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError

DEFAULT_CAMERA = "video"
"""The camera of an episode stored as a plain ``<name>.mp4``."""

ARRAY_KEYS = ("actions", "states", "rewards")
"""What a ``<name>.npz`` may hold, each with one row per video frame."""


def read_mp4_folder(directory: str | os.PathLike[str], fps: float | None = None) -> Iterator[RecordedEpisode]:
    """The folder's episodes, one at a time, ordered by name.

    ``fps``: the recordings' frame rate (None: each episode's first camera's, from its video
    stream). The file names are checked here (an npz without an mp4 raises); each episode's
    videos and arrays when it is read. Episodes' ``source`` is the folder and their
    metadata holds the file of each camera (``files``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RobotDataError(f"{directory}: not a directory")
    episodes: dict[str, dict[str, Path]] = {}
    for mp4 in _visible(directory, "*.mp4"):
        name, dot, camera = mp4.stem.rpartition(".")
        name, camera = (name, camera) if dot else (camera, DEFAULT_CAMERA)
        episodes.setdefault(name, {})[camera] = mp4
    for npz in _visible(directory, "*.npz"):
        if npz.stem not in episodes:
            raise RobotDataError(f"{npz}: no video for it (expected {npz.stem}.mp4 or {npz.stem}.<camera>.mp4)")
    if not episodes:
        raise RobotDataError(f"{directory}: no .mp4 files")
    return (_read_episode(directory, name, cameras, fps) for name, cameras in sorted(episodes.items()))


def _visible(directory: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern``, sorted, without hidden ones (such as unfinished writes)."""
    return sorted(path for path in directory.glob(pattern) if not path.name.startswith("."))


def _read_episode(directory: Path, name: str, files: dict[str, Path], fps: float | None) -> RecordedEpisode:
    cameras = {}
    for camera, mp4 in files.items():
        try:
            cameras[camera] = VideoFrames(mp4)
        except VideoError as err:
            raise RobotDataError(f"{err} (camera {camera!r})") from None
    counts = {camera: len(frames) for camera, frames in cameras.items()}
    n = counts[min(counts)]
    for camera, count in counts.items():
        if count != n:
            raise RobotDataError(f"{files[camera]}: camera {camera!r}: {count} frames, but "
                                 f"{files[min(counts)].name} has {n}")
    arrays = _arrays(directory / f"{name}.npz", n)
    if fps is None:
        fps = _stream_fps(files[min(files)])
    return RecordedEpisode(
        states=arrays.get("states", np.zeros((n, 0), np.float32)),
        actions=arrays.get("actions", np.zeros((n, 0), np.float32)), cameras=cameras, fps=fps,
        rewards=arrays.get("rewards"), name=name, source=str(directory),
        metadata={"files": {camera: mp4.name for camera, mp4 in files.items()}},
    )


def _arrays(npz: Path, frames: int) -> dict[str, np.ndarray]:
    """The arrays of ``npz`` ({} when there is none), each checked to have ``frames`` rows."""
    if not npz.exists():
        return {}
    try:
        with np.load(npz, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise RobotDataError(f"{npz}: not a readable .npz file ({err})") from None
    for key, array in arrays.items():
        if key not in ARRAY_KEYS:
            raise RobotDataError(f"{npz}: key {key!r}: unknown (expected any of {list(ARRAY_KEYS)})")
        expected = 1 if key == "rewards" else 2
        if array.ndim != expected or array.dtype.kind not in "biuf":
            shape = "(N,)" if key == "rewards" else "(N, D)"
            raise RobotDataError(f"{npz}: key {key!r}: expected {shape} numbers, found dtype {array.dtype} "
                                 f"shape {array.shape}")
        if len(array) != frames:
            raise RobotDataError(f"{npz}: key {key!r}: {len(array)} rows, but the video has {frames} frames")
    return arrays


def _stream_fps(mp4: Path) -> float:
    """The frame rate the first video stream of ``mp4`` declares."""
    try:
        with av.open(str(mp4)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except (av.FFmpegError, OSError, IndexError) as err:
        raise RobotDataError(f"{mp4}: field 'fps': cannot read the video stream's frame rate ({err})") from None
    if not rate or rate <= 0:
        raise RobotDataError(f"{mp4}: field 'fps': the video stream declares no frame rate (pass fps=)")
    return float(rate)


def write_mp4_folder(episodes: Iterable[RecordedEpisode], directory: str | os.PathLike[str],
                     lossless: bool = False) -> Path:
    """Write each episode as ``<name>.mp4`` (one camera named "video") or ``<name>.<camera>.mp4``,
    plus ``<name>.npz`` with its actions, states and rewards, and return ``directory``.

    Episodes are named by their ``name`` (``episode_000003`` for the 4th when empty). Names
    must not contain a dot where the camera name has to be parsed back, camera names never,
    and existing files are not overwritten. Each file is written atomically.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for position, episode in enumerate(episodes):
        name = episode.name or f"episode_{position:06d}"
        where = f"{episode.source or '<episodes>'}: episode {name!r}"
        if not episode.cameras:
            raise RobotDataError(f"{where}: field 'cameras': an mp4 folder needs at least one camera")
        single = list(episode.cameras) == [DEFAULT_CAMERA]
        if ("." in name and single) or "/" in name:
            raise RobotDataError(f"{where}: field 'name': cannot contain '/' (or '.' with camera "
                                 f"{DEFAULT_CAMERA!r} alone): it would read back as another episode or camera")
        targets = {}
        for camera in episode.cameras:
            if "." in camera or "/" in camera:
                raise RobotDataError(f"{where}: camera {camera!r}: a camera name in an mp4 folder cannot "
                                     "contain '.' or '/'")
            targets[camera] = directory / (f"{name}.mp4" if single else f"{name}.{camera}.mp4")
        npz = directory / f"{name}.npz"
        for path in [*targets.values(), npz]:
            if path.exists():
                raise RobotDataError(f"{path}: already exists ({where})")
        for camera, mp4 in targets.items():
            write_video(episode.cameras[camera], mp4, fps=episode.fps, lossless=lossless)
        arrays = {"actions": episode.actions, "states": episode.states}
        if episode.rewards is not None:
            arrays["rewards"] = episode.rewards
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(npz, buffer.getvalue())
    return directory

