"""A trajectory's array and video files in the dataset's directory: written atomically
beside the index row that names them, read back with every field checked.

```
trajectories/<id>.npz   observations (T+1, D) f32, actions (T, A) f32, rewards (T,) f32
                        (optional), and either frames (T+1, H, W, 3) u8, or frame_indices
                        (T+1,) i64 + frame_pointer (T+1, 3) f32 (optional) for frames in
                        videos/<id>.mp4; for the k-th further camera (`Trajectory.views`,
                        rows of the trajectory_views table) view{k}_frames, or
                        view{k}_frame_indices (+ view{k}_frame_pointer) in its own mp4
videos/<sha256>.mp4     a video-backed trajectory's recording, copied byte for byte and
                        named by its content: the episodes of one recording (LeRobot v3.0
                        keeps many per file) share one copy (datasets written before name
                        theirs videos/<id>.mp4; the index row names the file either way)
```

Files are written to a hidden temporary name; ``place`` fsyncs them (together), renames them
into place and fsyncs each directory once, inside the transaction that inserts the index rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.data.video import VideoError, VideoFrames, frame_count
from embodied_pref.durable import fsync_dir, fsync_files, temp_path
from embodied_pref.store.errors import DatasetError

TRAJECTORY_DIR = "trajectories"
VIDEO_DIR = "videos"


@dataclasses.dataclass
class StagedFiles:
    """A trajectory's files, written under temporary names and not yet in place."""

    moves: list[tuple[Path, Path]]
    """(temporary file, final path) pairs."""
    row: dict[str, Any]
    """The index row's file columns: file, sha256, video_file, video_sha256, video_bytes."""
    views: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The trajectory_views rows of its further cameras (without trajectory_id)."""
    placed: list[Path] = dataclasses.field(default_factory=list)

    def discard(self) -> None:
        """Remove what was written (the trajectory's id was free, so these files are ours)."""
        for tmp, _ in self.moves:
            tmp.unlink(missing_ok=True)
        for final in self.placed:
            final.unlink(missing_ok=True)


def place(batch: list[StagedFiles]) -> None:
    """Make every file of `batch` durable, rename it into place, then fsync each directory
    the files went to, once."""
    fsync_files([tmp for staged in batch for tmp, _ in staged.moves])
    directories: dict[Path, None] = {}
    for staged in batch:
        for tmp, final in staged.moves:
            os.replace(tmp, final)
            staged.placed.append(final)
            directories[final.parent] = None
    for directory in directories:
        fsync_dir(directory)


def stage_trajectory(root: Path, trajectory: Trajectory, staging: AbstractSet[Path] = frozenset()) -> StagedFiles:
    """Write the npz (and copy the mp4 of each ``VideoFrames``, after checking that it holds
    every frame the trajectory shows) under temporary names in ``root``. ``staging``: final
    paths that files staged earlier in the same batch will take (an mp4 there is not copied
    again)."""
    tid = trajectory.id
    relative = f"{TRAJECTORY_DIR}/{tid}.npz"
    no_video = {"video_file": None, "video_sha256": None, "video_bytes": None}
    staged = StagedFiles(moves=[], row={"file": relative, **no_video})
    staged.views = [{"camera": camera, "position": k, "frame_height": view.shape[1], "frame_width": view.shape[2],
                     **no_video} for k, (camera, view) in enumerate(trajectory.views.items())]
    cameras = [("", "frames", trajectory.frames, staged.row)]
    cameras += [(f"view{k}_", f"views[{camera!r}]", view, staged.views[k])
                for k, (camera, view) in enumerate(trajectory.views.items())]
    arrays = {"observations": trajectory.observations, "actions": trajectory.actions}
    if trajectory.rewards is not None:
        arrays["rewards"] = trajectory.rewards
    for prefix, field, frames, _ in cameras:
        if isinstance(frames, VideoFrames):
            check_video_frames(frames, tid, field)
            arrays[f"{prefix}frame_indices"] = frames.indices
            if frames.pointer is not None:
                arrays[f"{prefix}frame_pointer"] = frames.pointer
        elif frames is not None:
            arrays[f"{prefix}frames"] = frames
    try:
        npz_final = root / relative
        npz_tmp = temp_path(npz_final)
        staged.moves.append((npz_tmp, npz_final))
        npz = io.BytesIO()
        # raw frames compress well; states and actions (video-backed or frameless) hardly
        (np.savez_compressed if any(name.endswith("frames") for name in arrays) else np.savez)(npz, **arrays)
        with open(npz_tmp, "xb") as f:  # fsynced by `place`
            f.write(npz.getbuffer())
        staged.row["sha256"] = hashlib.sha256(npz.getbuffer()).hexdigest()
        for _, _, frames, columns in cameras:
            if isinstance(frames, VideoFrames):
                on_their_way = {*staging, *(final for _, final in staged.moves)}
                columns.update(_stage_video(root, frames.path, staged, on_their_way))
    except BaseException:
        staged.discard()
        raise
    return staged


_COPIED: dict[tuple[str, int, int], tuple[Path, str]] = {}
"""(source path, size, mtime_ns) -> (dataset directory, sha256) of recordings already copied
in, so that the next episode of the same file neither copies nor hashes it again."""


def _stage_video(root: Path, source: Path, staged: StagedFiles, staging: AbstractSet[Path]) -> dict[str, Any]:
    """The index row's video columns for frames from `source`: its copy videos/<sha256>.mp4,
    staged in `staged` unless the dataset holds it already or `staging` has it on its way."""
    folder = root / VIDEO_DIR
    folder.mkdir(exist_ok=True)
    try:
        status = source.stat()
    except FileNotFoundError:
        raise DatasetError(f"{source}: field 'frames': file missing") from None
    key = (str(source.resolve()), status.st_size, status.st_mtime_ns)
    known = _COPIED.get(key)
    if known is not None and known[0] == root.resolve():
        final = folder / f"{known[1]}.mp4"
        if final in staging or (final.is_file() and final.stat().st_size == status.st_size):
            return {"video_file": f"{VIDEO_DIR}/{final.name}", "video_sha256": known[1],
                    "video_bytes": status.st_size}
    tmp = temp_path(folder / "incoming.mp4", ".mp4")
    try:
        digest, size = copy_hashed(source, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    final = folder / f"{digest}.mp4"
    if final.is_file() and final.stat().st_size == size:
        tmp.unlink()
    else:
        staged.moves.append((tmp, final))
    _COPIED[key] = (root.resolve(), digest)
    return {"video_file": f"{VIDEO_DIR}/{final.name}", "video_sha256": digest, "video_bytes": size}


def load_trajectory(root: Path, info: dict[str, Any], index: str) -> Trajectory:
    """The trajectory whose index row is ``info``, its arrays read-only; ``index`` names the
    database in errors. Checks the npz's checksum and every field, and the mp4 cheaply."""
    path = root / info["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: file missing (trajectory {info['id']!r} is indexed in {index})"
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
    cameras = [("", info)] + [(f"view{view['position']}_", view) for view in info["views"]]
    for prefix, camera in cameras:
        if camera["video_file"] is not None:
            expected[f"{prefix}frame_indices"] = ((steps + 1,), np.dtype(np.int64))
            if f"{prefix}frame_pointer" in names:
                expected[f"{prefix}frame_pointer"] = ((steps + 1, 3), np.dtype(np.float32))
        elif prefix or info["has_frames"]:
            shape = (steps + 1, camera["frame_height"], camera["frame_width"], 3)
            expected[f"{prefix}frames"] = (shape, np.dtype(np.uint8))
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
        raise DatasetError(f"{path}: field '{field}': not recorded in {index}{note}")
    if not intact:
        raise DatasetError(f"{path}: checksum mismatch (file corrupt or truncated)")
    frames = [arrays.get(f"{prefix}frames") if camera["video_file"] is None
              else _open_video(root, info["id"], camera, arrays, prefix, index) for prefix, camera in cameras]
    try:
        return Trajectory(
            observations=arrays["observations"],
            actions=arrays["actions"],
            rewards=arrays.get("rewards"),
            frames=frames[0],
            env_id=info["env_id"],
            seed=info["seed"],
            embodiment=info["embodiment"],
            terminated=info["terminated"],
            metadata=info["metadata"],
            id=info["id"],
            views={view["camera"]: view_frames for view, view_frames in zip(info["views"], frames[1:])},
        )
    except ValueError as err:
        raise DatasetError(f"{path}: {err}") from None


def _open_video(root: Path, trajectory_id: str, camera: dict[str, Any], arrays: dict[str, np.ndarray],
                prefix: str, index: str) -> VideoFrames:
    """The frames of one camera of a video-backed trajectory (`camera`: its index row or
    trajectory_views row; `prefix`: its npz names' prefix), after the cheap checks of its mp4."""
    path = root / camera["video_file"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: file missing (trajectory {trajectory_id!r} is indexed in {index})"
        ) from None
    if size != camera["video_bytes"]:
        raise DatasetError(
            f"{path}: field 'video_bytes': {size} bytes, {camera['video_bytes']} recorded "
            "(file truncated or altered)"
        )
    try:
        return VideoFrames(
            path, indices=arrays[f"{prefix}frame_indices"],
            size=(camera["frame_height"], camera["frame_width"]),
            pointer=arrays.get(f"{prefix}frame_pointer"),
        )
    except VideoError as err:
        raise DatasetError(f"{err} (trajectory {trajectory_id!r})") from None


def verify_files(root: Path, info: dict[str, Any], index: str) -> None:
    """Check the sha256 of the trajectory's npz (and mp4s) against its index rows ``info``."""
    files = [(info["file"], info["sha256"])]
    files += [(camera["video_file"], camera["video_sha256"]) for camera in (info, *info["views"])
              if camera["video_file"] is not None]
    for relative, recorded in files:
        path = root / relative
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            raise DatasetError(
                f"{path}: file missing (trajectory {info['id']!r} is indexed in {index})"
            ) from None
        if digest != recorded:
            raise DatasetError(
                f"{path}: checksum mismatch (file corrupt or altered since it was stored)"
            )


def check_video_frames(video: VideoFrames, trajectory_id: str, field: str = "frames") -> None:
    """Raise ``DatasetError`` naming the mp4 and the trajectory's `field` unless the mp4
    (still) holds every frame ``video`` shows: as many frames as when it was opened, and at
    least its largest index + 1."""
    try:
        available = frame_count(video.path)
    except VideoError as err:
        raise DatasetError(f"{err} (field '{field}' of trajectory {trajectory_id!r})") from None
    needed = int(video.indices.max()) + 1 if len(video.indices) else 0
    if available != video.source_frame_count or available < needed:
        raise DatasetError(
            f"{video.path}: field '{field}': the video has {available} frames, trajectory "
            f"{trajectory_id!r} needs frames up to index {needed - 1} of the "
            f"{video.source_frame_count} it had when it was opened"
        )


def copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to the new file ``target`` (not fsynced: `place` does) and return its
    sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as src, open(target, "xb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
    except FileNotFoundError as err:
        if not source.exists():
            raise DatasetError(f"{source}: field 'frames': file missing") from None
        raise DatasetError(f"{target}: cannot write ({err})") from err
    return digest.hexdigest(), size
