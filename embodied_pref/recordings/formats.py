"""Which reader and writer a recording needs: LeRobot (a directory with meta/info.json),
robomimic (an HDF5 file) or a folder of mp4 files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError

Format = Literal["auto", "lerobot", "robomimic", "mp4"]
HDF5_SUFFIXES = (".hdf5", ".h5")


def detect_format(source: Path) -> str:
    """lerobot, robomimic or mp4, from what `source` is; RobotDataError if none fits."""
    if source.is_dir() and (source / "meta" / "info.json").is_file():
        return "lerobot"
    if source.is_file() and source.suffix.lower() in HDF5_SUFFIXES:
        return "robomimic"
    if source.is_dir() and any(source.glob("*.mp4")):
        return "mp4"
    if not source.exists():
        raise RobotDataError(f"{source}: file missing")
    raise RobotDataError(f"{source}: field 'format': not a LeRobot dataset (no meta/info.json), a robomimic "
                         f"file ({'/'.join(HDF5_SUFFIXES)}) or a folder of mp4 files; pass --format")


def read_episodes(source: Path, source_format: Format = "auto", cameras: tuple[str, ...] | None = None,
                  fps: float | None = None) -> tuple[str, Iterator[RecordedEpisode]]:
    """(the format, its episodes read one at a time); `cameras` limits the cameras read (None:
    all), `fps` stamps formats that do not record it (robomimic; mp4 files carry their own)."""
    # pyarrow and h5py come with the `robot` extra: a format's reader is imported when it is read.
    from embodied_pref.recordings.lerobot import read_lerobot
    from embodied_pref.recordings.mp4_folder import read_mp4_folder
    from embodied_pref.recordings.robomimic import read_robomimic

    chosen = detect_format(source) if source_format == "auto" else source_format
    camera_list = None if cameras is None else list(cameras)
    if chosen == "lerobot":
        return chosen, read_lerobot(source, cameras=camera_list)
    if chosen == "robomimic":
        return chosen, read_robomimic(source, cameras=camera_list, **({} if fps is None else {"fps": fps}))
    if chosen == "mp4":
        return chosen, read_mp4_folder(source, fps=fps)
    raise RobotDataError(f"{source}: field 'format': expected auto, lerobot, robomimic or mp4, found {chosen!r}")


def write_episodes(episodes: Iterable[RecordedEpisode], target: Path,
                   target_format: Literal["lerobot", "robomimic"]) -> Path:
    """Write episodes as a LeRobot v3.0 dataset directory or a robomimic HDF5 file."""
    if target_format == "lerobot":
        from embodied_pref.recordings.lerobot_writer import write_lerobot

        return write_lerobot(episodes, target, version="v3.0")
    if target_format == "robomimic":
        from embodied_pref.recordings.robomimic import write_robomimic

        return write_robomimic(episodes, target)
    raise RobotDataError(f"{target}: field 'format': expected lerobot or robomimic, found {target_format!r}")
