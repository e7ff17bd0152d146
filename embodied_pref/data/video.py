"""Frames that live in an mp4 file (H.264 or AV1) and are decoded on demand.

```
write_video(frames, "run.mp4", fps=20)            # (H, W, 3) uint8 frames streamed to an mp4
frames = VideoFrames("run.mp4")                   # array-like (N, H, W, 3) uint8, nothing decoded
clip = frames[120:166]                            # (46, H, W, 3) uint8: only these are decoded
```

A ``VideoFrames`` demuxes its file once (no decoding) to index the presentation time of
every frame, so frame ``i`` of the file is the ``i``-th smallest pts. Reading a frame seeks
to the keyframe at or before it and decodes forward; reading onwards from the last decoded
frame continues without a seek. A small LRU cache keeps recently decoded frames. Lossy
codecs change pixel values: compare decoded frames with decoded frames, or write with
``lossless=True`` (H.264 in RGB, qp 0) where exact values matter.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import threading
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from embodied_pref.durable import fsync_dir, fsync_file, temp_path

DEFAULT_GOP = 30
"""Frames between keyframes when writing. A read seeks to the keyframe before its frame and
decodes forward, so random access decodes ~GOP/2 frames. Measured on 600 frames of 360×640
textured moving pattern (H.264, preset fast, crf 23): GOP 10 / 30 / 60 / 250 give 21.8 / 18.9
/ 18.1 / 17.5 MB and 17 / 33 / 99 / 179 ms to read a random frame: GOP 30 costs 8% more bytes
than 250 and reads a random frame 5× faster."""

ENCODERS = {"h264": "libx264", "av1": "libsvtav1"}
"""Codec name -> the FFmpeg encoder ``VideoWriter`` uses for it."""

_DEFAULT_CRF = {"h264": 23, "av1": 35}
_DEFAULT_PRESET = {"h264": "medium", "av1": "8"}


class VideoError(ValueError):
    """A video file is missing, unreadable, too short or cannot be written.

    The message starts with the file's path and names the frame index or field concerned.
    """


def pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad (..., H, W, 3) frames with black at the bottom/right to even H and W (yuv420p)."""
    height, width = frames.shape[-3:-1]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        padding = [(0, 0)] * (frames.ndim - 3) + [(0, pad_h), (0, pad_w), (0, 0)]
        frames = np.pad(frames, padding)
    return np.ascontiguousarray(frames)


# --- reading ------------------------------------------------------------------------------


def _open_input(path: Path) -> tuple[Any, Any]:
    """The opened container and its first video stream."""
    try:
        container = av.open(str(path), "r")
    except FileNotFoundError:
        raise VideoError(f"{path}: file missing") from None
    except (av.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: not a readable video file ({err})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: field 'streams': no video stream")
    return container, container.streams.video[0]


@dataclasses.dataclass(frozen=True)
class _FrameIndex:
    """Where each frame of a file sits, in presentation order (from demuxing, no decoding)."""

    pts: np.ndarray
    """(F,) int64 presentation timestamps, increasing."""
    latest_keyframe: np.ndarray
    """(F,) int64 index of the last keyframe at or before each frame (-1: none)."""
    height: int
    """Frame height in pixels, as coded."""
    width: int
    """Frame width in pixels, as coded."""


def _read_index(path: Path) -> _FrameIndex:
    """Demux every packet of the first video stream (reads the file, decodes nothing).

    Remembered per file size and modification time: the episodes of a recording that holds
    many of them (LeRobot v3.0) each open it, and demuxing it once serves them all."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise VideoError(f"{path}: file missing") from None
    except OSError as err:
        raise VideoError(f"{path}: not a readable video file ({err})") from None
    return _demuxed_index(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _demuxed_index(name: str, size: int, mtime_ns: int) -> _FrameIndex:
    """`_read_index` of the file `name` as it is at (`size`, `mtime_ns`)."""
    path = Path(name)
    container, stream = _open_input(path)
    stamps: list[int] = []
    keyframes: list[bool] = []
    try:
        for packet in container.demux(stream):
            if packet.pts is None and packet.dts is None:
                continue  # the empty packet that ends the stream
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
            keyframes.append(packet.is_keyframe)
        height, width = stream.codec_context.height, stream.codec_context.width
    except (av.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: packet {len(stamps)}: unreadable ({err})") from None
    finally:
        container.close()
    if not stamps:
        raise VideoError(f"{path}: field 'frames': the video stream has no frames")
    if not (height > 0 and width > 0):
        raise VideoError(f"{path}: field 'size': unknown frame size {height}x{width}")
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    pts = np.asarray(stamps, dtype=np.int64)[order]
    if np.any(np.diff(pts) == 0):
        duplicate = int(np.flatnonzero(np.diff(pts) == 0)[0])
        raise VideoError(
            f"{path}: frame {duplicate + 1}: same presentation time as frame {duplicate}"
        )
    is_key = np.asarray(keyframes, dtype=bool)[order]
    latest = np.maximum.accumulate(np.where(is_key, np.arange(len(pts)), -1))
    pts.flags.writeable = latest.flags.writeable = False  # shared by every reader of the file
    return _FrameIndex(pts=pts, latest_keyframe=latest, height=height, width=width)


def frame_count(path: str | os.PathLike[str]) -> int:
    """The number of frames in the first video stream of ``path``, counted by demuxing its
    packets (nothing is decoded). Raises ``VideoError`` if unreadable or without video."""
    return len(_read_index(Path(path)).pts)


def draw_pointer(image: np.ndarray, x: float, y: float, size: float) -> None:
    """Draw a mouse-cursor arrow (white, black outline) ``size`` pixels tall with its tip at
    pixel ``(x, y)`` into ``image`` (H, W, 3) uint8, in place; parts outside are clipped."""
    tip_x, tip_y = int(round(x)), int(round(y))
    extent = max(int(round(size)), 1)
    height, width = image.shape[:2]
    x0, x1 = max(tip_x, 0), min(tip_x + extent, width)
    y0, y1 = max(tip_y, 0), min(tip_y + extent + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    dy, dx = np.mgrid[y0 - tip_y : y1 - tip_y, x0 - tip_x : x1 - tip_x].astype(np.float32)
    # a triangle with corners (0, 0), (0, size), (0.7 size, 0.7 size): the classic arrow
    def inside(margin: float) -> np.ndarray:
        below_tip = (dx >= margin) & (dy >= dx + 1.4 * margin)
        return below_tip & (dy <= extent - 3 / 7 * dx - 1.4 * margin)

    outline, fill = inside(0.0), inside(1.0)
    region = image[y0:y1, x0:x1]
    region[outline] = 0
    region[fill] = 255


class VideoFrames:
    """Read-only, array-like frames of an mp4: ``frames[i]`` -> (H, W, 3) uint8,
    ``frames[a:b]`` / ``frames[index_array]`` -> (n, H, W, 3) uint8, ``np.asarray(frames)``
    decodes everything. Only the frames asked for (and those between them and their
    keyframe) are decoded.

    - ``indices``: (N,) int64 source-frame index of each frame of this sequence (None: all
      frames of the file, in order); lets a recording drop frames without re-encoding.
    - ``size``: ``(height, width)`` to decode to (scaled by FFmpeg's swscale), None: the
      source size.
    - ``pointer``: (N, 3) float32 ``(x, y, size)`` of a mouse cursor in source pixels, drawn
      on the source-resolution frame before scaling; NaN x: no cursor on that frame.
    - ``cache_frames``: how many decoded frames to keep (LRU).

    Raises ``VideoError`` naming the file when it is missing or unreadable or when an index
    lies beyond its frame count, and naming the frame index when a frame cannot be decoded.
    Safe to share between threads (reads are serialized); pickles as its path and index and
    reopens the file on the next read (so does a read after ``close``).
    """

    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        path: str | os.PathLike[str],
        indices: np.ndarray | Iterable[int] | None = None,
        size: tuple[int, int] | None = None,
        pointer: np.ndarray | None = None,
        cache_frames: int = 64,
    ) -> None:
        self.path = Path(path)
        self._index = _read_index(self.path)
        self.indices = self._checked_indices(indices)
        self.size = self._checked_size(size)
        self.pointer = self._checked_pointer(pointer)
        if (isinstance(cache_frames, bool) or not isinstance(cache_frames, (int, np.integer))
                or cache_frames < 0):
            raise VideoError(
                f"{self.path}: field 'cache_frames': expected an int >= 0, found {cache_frames!r}"
            )
        self.cache_frames = int(cache_frames)
        self.shape = (len(self.indices), *self.size, 3)
        self._lock = threading.RLock()
        self._reset_state()

    # --- validation -------------------------------------------------------------------------

    def _checked_indices(self, indices: Any) -> np.ndarray:
        available = len(self._index.pts)
        if indices is None:
            result = np.arange(available, dtype=np.int64)
        else:
            result = np.asarray(indices)
            if result.ndim != 1 or (result.size and result.dtype.kind not in "iu"):
                raise VideoError(
                    f"{self.path}: field 'indices': expected (N,) integer frame indices, found "
                    f"dtype {result.dtype} shape {tuple(result.shape)}"
                )
            result = result.astype(np.int64)
            if result.size and result.min() < 0:
                raise VideoError(
                    f"{self.path}: field 'indices': frame {int(result.min())} is negative"
                )
            if result.size and result.max() >= available:
                raise VideoError(
                    f"{self.path}: field 'indices': frame {int(result.max())} requested, but the "
                    f"file has {available} frames"
                )
        result.flags.writeable = False
        return result

    def _checked_size(self, size: Any) -> tuple[int, int]:
        if size is None:
            return (self._index.height, self._index.width)
        try:
            height, width = (int(v) for v in size)
            valid = height >= 1 and width >= 1 and tuple(size) == (height, width)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise VideoError(
                f"{self.path}: field 'size': expected (height, width) positive ints, found {size!r}"
            )
        return (height, width)

    def _checked_pointer(self, pointer: Any) -> np.ndarray | None:
        if pointer is None:
            return None
        result = np.asarray(pointer, dtype=np.float32)
        if result.shape != (len(self.indices), 3):
            raise VideoError(
                f"{self.path}: field 'pointer': expected shape ({len(self.indices)}, 3), found "
                f"{tuple(result.shape)}"
            )
        shown = ~np.isnan(result[:, 0])
        if not np.isfinite(result[shown]).all() or (result[shown, 2] <= 0).any():
            raise VideoError(
                f"{self.path}: field 'pointer': expected finite (x, y) and size > 0 where x is "
                "not NaN"
            )
        result = result.copy()
        result.flags.writeable = False
        return result

    # --- array protocol ---------------------------------------------------------------------

    @property
    def source_frame_count(self) -> int:
        """Frames in the file when it was indexed (``frame_count(path)`` then)."""
        return len(self._index.pts)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"VideoFrames({str(self.path)!r}, shape={self.shape})"

    def __getitem__(self, key: Any) -> np.ndarray:
        count = len(self)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            position = int(key) + count if key < 0 else int(key)
            if not 0 <= position < count:
                raise IndexError(f"{self.path}: frame {key} out of range for {count} frames")
            return self._read(np.array([position]))[0]
        if isinstance(key, slice):
            return self._read(np.arange(count)[key])
        positions = np.asarray(key)
        if positions.dtype == bool:
            if positions.shape != (count,):
                raise IndexError(
                    f"{self.path}: boolean index of shape {positions.shape}, expected ({count},)"
                )
            positions = np.flatnonzero(positions)
        if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
            raise IndexError(
                f"{self.path}: expected an int, a slice or (n,) int indices, found {key!r}"
            )
        positions = positions.astype(np.int64)
        if positions.size and (positions.min() < -count or positions.max() >= count):
            raise IndexError(f"{self.path}: frame indices out of range for {count} frames")
        return self._read(np.where(positions < 0, positions + count, positions))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        frames = self._read(np.arange(len(self)))
        return frames if dtype is None else frames.astype(dtype, copy=False)

    # --- decoding ---------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._container: Any = None
        self._stream: Any = None
        self._input_size: tuple[int, int] = (0, 0)
        self._decoded: Any = None  # the decoder's frame iterator since the last seek
        self._last: int | None = None  # source index of the last frame it gave
        self._frame: Any = None  # that frame
        self._reformatter = VideoReformatter()  # keeps its swscale context between frames
        self._cache: collections.OrderedDict[tuple[Any, ...], np.ndarray] = (
            collections.OrderedDict()
        )

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """Frames at these positions of the sequence: (n, H, W, 3) uint8."""
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.uint8)
        with self._lock:
            wanted: dict[tuple[Any, ...], list[int]] = {}
            for row, position in enumerate(positions):
                key = self._cache_key(int(position))
                cached = self._cache.get(key)
                if cached is None:
                    wanted.setdefault(key, []).append(row)
                else:
                    self._cache.move_to_end(key)
                    out[row] = cached
            by_source: dict[int, list[tuple[Any, ...]]] = {}
            for key in wanted:
                by_source.setdefault(key[0], []).append(key)
            for source in sorted(by_source):
                frame = self._decode(source)
                for key in by_source[source]:
                    image = self._render(frame, key[1])
                    out[wanted[key]] = image
                    self._remember(key, image)
        return out

    def _cache_key(self, position: int) -> tuple[Any, ...]:
        source = int(self.indices[position])
        if self.pointer is None or np.isnan(self.pointer[position, 0]):
            return (source, None)
        return (source, tuple(float(v) for v in self.pointer[position]))

    def _remember(self, key: tuple[Any, ...], image: np.ndarray) -> None:
        if self.cache_frames == 0:
            return
        image.flags.writeable = False
        self._cache[key] = image
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def _render(self, frame: Any, pointer: tuple[float, float, float] | None) -> np.ndarray:
        height, width = self.size
        if pointer is None:
            return self._reformatter.reformat(frame, width=width, height=height,
                                              format="rgb24").to_ndarray()
        image = np.array(self._reformatter.reformat(frame, format="rgb24").to_ndarray())
        draw_pointer(image, *pointer)
        if image.shape[:2] == (height, width):
            return image
        scaled = av.VideoFrame.from_ndarray(image, format="rgb24")
        return self._reformatter.reformat(scaled, width=width, height=height).to_ndarray()

    def _decode(self, source: int) -> Any:
        """The decoded ``av.VideoFrame`` of source frame ``source``."""
        latest_keyframe = int(self._index.latest_keyframe[source])
        onwards = (self._decoded is not None and self._last is not None
                   and self._last < source and 0 <= latest_keyframe <= self._last + 1)
        if not onwards:
            self._seek(int(self._index.pts[source]))
        from_seek = not onwards
        while True:
            found = self._next_frame(source)
            if found == source:
                return self._frame
            if found > source:
                if from_seek and self._index.pts[0] < self._index.pts[source]:
                    # the container landed past the frame: start over from the first frame
                    self._seek(int(self._index.pts[0]))
                    from_seek = False
                    continue
                self._decoded = None
                raise VideoError(
                    f"{self.path}: frame {source}: missing from the decoded stream (file corrupt?)"
                )

    def _next_frame(self, source: int) -> int:
        """Decode one more frame into ``self._frame`` and return its source index."""
        try:
            frame = next(self._decoded, None)
        except (av.FFmpegError, OSError) as err:
            self._decoded = None
            raise VideoError(f"{self.path}: frame {source}: cannot decode ({err})") from None
        if frame is None:
            self._decoded = None
            raise VideoError(
                f"{self.path}: frame {source}: the stream ended before it (file truncated?)"
            )
        found = int(np.searchsorted(self._index.pts, frame.pts)) if frame.pts is not None else -1
        if not (0 <= found < len(self._index.pts) and self._index.pts[found] == frame.pts):
            self._decoded = None
            raise VideoError(
                f"{self.path}: frame {source}: decoded a frame with pts {frame.pts} that is not "
                "in the file's index (file changed or corrupt?)"
            )
        self._frame, self._last = frame, found
        return found

    def _seek(self, pts: int) -> None:
        if self._container is None:
            self._container, self._stream = _open_input(self.path)
        try:
            self._container.seek(pts, stream=self._stream, backward=True)
        except (av.FFmpegError, OSError) as err:
            self._decoded = None
            raise VideoError(f"{self.path}: seeking to pts {pts} failed ({err})") from None
        self._decoded = self._container.decode(self._stream)
        self._last = None

    def close(self) -> None:
        """Release the file and the cache; a later read reopens the file."""
        with self._lock:
            if self._container is not None:
                self._container.close()
            self._reset_state()

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in
                ("path", "_index", "indices", "size", "pointer", "cache_frames", "shape")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._reset_state()


# --- writing ------------------------------------------------------------------------------


class VideoWriter:
    """Streams (H, W, 3) uint8 frames into an mp4, atomically: the frames go to a hidden
    temporary file that is fsynced and renamed to ``path`` when the ``with`` block ends
    without error; on error nothing is left behind.

    ``codec``: ``"h264"`` (libx264, yuv420p) or ``"av1"`` (libsvtav1, yuv420p); ``crf``:
    constant-rate quality (None: 23 for H.264, 35 for AV1; lower is better and bigger);
    ``gop``: frames between keyframes; ``preset``: the encoder's speed preset (None: medium
    for H.264, 8 for AV1); ``lossless``: H.264 in RGB with qp 0 (exact frames, large files).
    ``height``: scale every frame to this height (the width keeps the aspect ratio; both
    rounded down to even) while encoding; None keeps the size. Odd frame sizes are padded with
    black to even ones. The file is "faststart" (index first), so a browser can play it while
    it downloads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        codec: str = "h264",
        crf: int | None = None,
        gop: int = DEFAULT_GOP,
        preset: str | None = None,
        lossless: bool = False,
        height: int | None = None,
    ) -> None:
        self.path = Path(path)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < 1e6:
            raise VideoError(
                f"{self.path}: field 'fps': expected a positive frame rate, found {fps!r}"
            )
        if codec not in ENCODERS:
            raise VideoError(
                f"{self.path}: field 'codec': expected one of {sorted(ENCODERS)}, found {codec!r}"
            )
        if lossless and codec != "h264":
            raise VideoError(
                f"{self.path}: field 'lossless': only codec 'h264' has a lossless mode"
            )
        if isinstance(gop, bool) or not isinstance(gop, int) or gop < 1:
            raise VideoError(f"{self.path}: field 'gop': expected an int >= 1, found {gop!r}")
        if height is not None and (isinstance(height, bool) or not isinstance(height, int)
                                   or height < 2):
            raise VideoError(f"{self.path}: field 'height': expected an int >= 2 or None, "
                             f"found {height!r}")
        self.fps, self.codec, self.gop, self.lossless = fps, codec, gop, lossless
        self.height = height
        self.crf = _DEFAULT_CRF[codec] if crf is None else crf
        self.preset = _DEFAULT_PRESET[codec] if preset is None else preset
        self.frames_written = 0
        self._tmp: Path | None = None
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> VideoWriter:
        self._tmp = temp_path(self.path, ".mp4")
        try:
            self._container = av.open(str(self._tmp), "w", format="mp4",
                                      options={"movflags": "+faststart"})
        except (av.FFmpegError, OSError) as err:
            self._tmp.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: cannot create the video file ({err})") from None
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 frame; every frame must have the first one's size."""
        if self._container is None:
            raise VideoError(f"{self.path}: write inside 'with VideoWriter(...) as writer:'")
        image = np.asarray(frame)
        index = self.frames_written
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise VideoError(
                f"{self.path}: frame {index}: expected (H, W, 3) uint8, found dtype "
                f"{image.dtype} shape {tuple(image.shape)}"
            )
        image = pad_even(image)
        if self._stream is None:
            self._input_size = image.shape[:2]
            self._stream = self._add_stream(*self._encoded_size(*image.shape[:2]))
        elif self._input_size != image.shape[:2]:
            raise VideoError(
                f"{self.path}: frame {index}: size {image.shape[:2]} differs from the first "
                f"frame's {self._input_size} (after padding to even)"
            )
        picture = av.VideoFrame.from_ndarray(image, format="rgb24")
        if (self._stream.height, self._stream.width) != self._input_size:
            picture = picture.reformat(width=self._stream.width, height=self._stream.height)
        try:
            # The first frame opens the encoder.
            with _threads_kept_out_of_real_time() if index == 0 else contextlib.nullcontext():
                packets = self._stream.encode(picture)
            for packet in packets:
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as err:
            raise VideoError(f"{self.path}: frame {index}: encoding failed ({err})") from None
        self.frames_written += 1

    def _encoded_size(self, height: int, width: int) -> tuple[int, int]:
        if self.height is None:
            return height, width
        scaled = self.height - self.height % 2
        return scaled, max(2, int(width * scaled / height) // 2 * 2)

    def _add_stream(self, height: int, width: int) -> Any:
        encoder = "libx264rgb" if self.lossless else ENCODERS[self.codec]
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream(encoder, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if self.lossless else "yuv420p"
        stream.codec_context.gop_size = self.gop
        quality = {"qp": "0"} if self.lossless else {"crf": str(self.crf)}
        stream.options = {**quality, "preset": str(self.preset)}
        return stream

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        placed = False
        try:
            if exc_type is None:
                self._finish()
                placed = True
        finally:
            if self._container is not None:
                with contextlib.suppress(Exception):
                    self._container.close()
                self._container = None
            if not placed:
                self._tmp.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self.frames_written == 0:
            raise VideoError(f"{self.path}: field 'frames': no frames written")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except (av.FFmpegError, OSError) as err:
            raise VideoError(f"{self.path}: finishing the video failed ({err})") from None
        self._container = None
        fsync_file(self._tmp)
        os.replace(self._tmp, self.path)
        fsync_dir(self.path.parent)


_REAL_TIME_POLICIES = {getattr(os, name) for name in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, name)}


def _scheduling_policies() -> dict[int, int]:
    """{thread id: scheduling policy} of this process's threads (Linux; empty elsewhere)."""
    tasks = Path("/proc/self/task")
    if not (hasattr(os, "sched_getscheduler") and tasks.is_dir()):
        return {}
    policies = {}
    for entry in tasks.iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            policies[int(entry.name)] = os.sched_getscheduler(int(entry.name))
    return policies


@contextlib.contextmanager
def _threads_kept_out_of_real_time() -> Iterator[None]:
    """libsvtav1, run as root, switches the thread that opens it to SCHED_FIFO at the highest
    priority, and the encoder threads it starts inherit that: a busy Python process would then
    keep every other process off its cores for good. Each thread the block leaves real-time,
    that was not before, gets its old policy back (a new thread the ordinary one)."""
    before = _scheduling_policies()
    try:
        yield
    finally:
        for thread, policy in _scheduling_policies().items():
            if policy in _REAL_TIME_POLICIES and before.get(thread) not in _REAL_TIME_POLICIES:
                with contextlib.suppress(OSError):
                    os.sched_setscheduler(thread, before.get(thread, os.SCHED_OTHER), os.sched_param(0))


def write_video(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike[str],
    fps: float,
    codec: str = "h264",
    **options: Any,
) -> Path:
    """Write (H, W, 3) uint8 frames to an mp4 atomically (see ``VideoWriter`` for
    ``options``: crf, gop, preset, lossless, height) and return its path."""
    with VideoWriter(path, fps, codec, **options) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path
