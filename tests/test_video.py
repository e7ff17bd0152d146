import os
import pickle
import threading

import av
import numpy as np
import pytest

from embodied_pref.data.video import (
    VideoError,
    VideoFrames,
    VideoWriter,
    draw_pointer,
    frame_count,
    write_video,
)

HEIGHT, WIDTH, FRAMES, GOP = 64, 96, 150, 12


def moving_pattern(count: int, height: int = HEIGHT, width: int = WIDTH, seed: int = 0):
    """Frames that differ from each other everywhere: gradients that drift, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    for t in range(count):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[..., 0] = (3 * x + 5 * t) % 256
        frame[..., 1] = (4 * y + 3 * t) % 256
        frame[..., 2] = rng.integers(0, 64, size=(height, width))
        yield frame


def decode_sequentially(path) -> np.ndarray:
    """Every frame of the file, decoded front to back with plain PyAV: (F, H, W, 3) uint8."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A lossy H.264 recording (B-frames, a keyframe every 12 frames) and its frames as a
    front-to-back decode gives them."""
    path = tmp_path_factory.mktemp("video") / "recording.mp4"
    write_video(moving_pattern(FRAMES), path, fps=20, gop=GOP)
    return path, decode_sequentially(path)


def test_frame_count_and_shape(recording):
    path, sequential = recording
    assert frame_count(path) == FRAMES == len(sequential)
    frames = VideoFrames(path)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and len(frames) == FRAMES
    assert frames.dtype == np.uint8 and frames.source_frame_count == FRAMES
    np.testing.assert_array_equal(frames.indices, np.arange(FRAMES))
    assert not frames.indices.flags.writeable


def test_random_access_equals_sequential_decode(recording):
    path, sequential = recording
    frames = VideoFrames(path, cache_frames=0)  # every read decodes
    order = np.random.default_rng(0).permutation(FRAMES).tolist()
    order += list(range(FRAMES - 1, -1, -1))  # backwards, one frame at a time
    order += [0, GOP - 1, GOP, GOP + 1, FRAMES - 1, 3 * GOP, 1]  # across GOPs and back
    for index in order:
        frame = frames[index]
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, sequential[index], err_msg=f"frame {index}")
    np.testing.assert_array_equal(frames[-1], sequential[-1])
    np.testing.assert_array_equal(np.asarray(frames), sequential)


def test_slices_index_arrays_and_cache(recording):
    path, sequential = recording
    frames = VideoFrames(path, cache_frames=8)
    np.testing.assert_array_equal(frames[100:130], sequential[100:130])
    np.testing.assert_array_equal(frames[::7], sequential[::7])
    np.testing.assert_array_equal(frames[-5:], sequential[-5:])
    np.testing.assert_array_equal(frames[140:3:-9], sequential[140:3:-9])
    picks = np.array([120, 3, 3, 77, -1])
    np.testing.assert_array_equal(frames[picks], sequential[picks])
    mask = np.arange(FRAMES) % 11 == 0
    np.testing.assert_array_equal(frames[mask], sequential[mask])
    assert frames[10:10].shape == (0, HEIGHT, WIDTH, 3)
    again = frames[[120, 3]]
    again[:] = 0  # what a read returns is the caller's own copy
    np.testing.assert_array_equal(frames[[120, 3]], sequential[[120, 3]])
    assert len(frames._cache) <= 8
    for bad in (FRAMES, -FRAMES - 1, [0, FRAMES]):
        with pytest.raises(IndexError, match="out of range"):
            frames[bad]
    with pytest.raises(IndexError):
        frames[np.zeros((2, 2), dtype=np.int64)]


def test_indices_subset_drops_and_repeats_frames(recording):
    path, sequential = recording
    indices = np.array([0, 2, 5, 5, 60, 149, 30])
    frames = VideoFrames(path, indices=indices)
    assert frames.shape == (7, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(np.asarray(frames), sequential[indices])
    np.testing.assert_array_equal(frames[3], sequential[5])
    np.testing.assert_array_equal(frames[1:4], sequential[[2, 5, 5]])


def test_size_scales_every_frame(recording):
    path, sequential = recording
    frames = VideoFrames(path, size=(32, 48))
    assert frames.shape == (FRAMES, 32, 48, 3)
    assert frames[17].shape == (32, 48, 3)
    halved = sequential[17].reshape(32, 2, 48, 2, 3).mean(axis=(1, 3))
    assert np.abs(frames[17].astype(float) - halved).mean() < 12  # the same picture, smaller
    assert np.abs(frames[17].astype(float) - sequential[90][::2, ::2]).mean() > 30


def test_pointer_is_drawn_only_where_given(recording):
    path, sequential = recording
    indices = np.arange(0, 40)
    pointer = np.full((40, 3), np.nan, dtype=np.float32)
    pointer[5] = (20, 10, 16)
    pointer[6] = (90, 60, 16)  # near the corner: clipped
    frames = VideoFrames(path, indices=indices, pointer=pointer)
    decoded = np.asarray(frames)
    shown = [5, 6]
    hidden = [i for i in range(40) if i not in shown]
    np.testing.assert_array_equal(decoded[hidden], sequential[indices[hidden]])
    changed = np.any(decoded[5] != sequential[5], axis=-1)
    rows, cols = np.nonzero(changed)
    assert rows.min() >= 10 and rows.max() <= 10 + 16 and cols.min() >= 20 and cols.max() <= 20 + 16
    assert changed.sum() > 40
    cursor = decoded[5][changed]
    assert (cursor == 255).all(axis=-1).any() and (cursor == 0).all(axis=-1).any()
    assert np.any(decoded[6] != sequential[6])
    # the same source frame without a pointer is still the plain frame (cache keys apart)
    plain = VideoFrames(path, indices=[5, 5], pointer=[[20, 10, 16], [np.nan, 0, 0]])
    np.testing.assert_array_equal(plain[0], decoded[5])
    np.testing.assert_array_equal(plain[1], sequential[5])
    scaled = VideoFrames(path, indices=indices, size=(32, 48), pointer=pointer)
    assert scaled[5].shape == (32, 48, 3)
    assert np.abs(scaled[5].astype(float) - VideoFrames(path, size=(32, 48))[5]).max() > 100


def test_draw_pointer_clips_at_edges():
    image = np.full((10, 10, 3), 128, dtype=np.uint8)
    draw_pointer(image, 8.0, 8.0, 20.0)
    changed = (image != 128).any(axis=-1)
    assert changed[8:, 8:].any() and not changed[:8].any() and not changed[:, :8].any()
    before = image.copy()
    draw_pointer(image, 50.0, -40.0, 5.0)  # entirely outside: nothing to draw
    np.testing.assert_array_equal(image, before)


def test_bad_arguments_and_files_name_the_file(recording, tmp_path):
    path, _ = recording
    with pytest.raises(VideoError, match=f"{path}: field 'indices': frame {FRAMES} requested"):
        VideoFrames(path, indices=[0, FRAMES])
    with pytest.raises(VideoError, match="field 'indices'"):
        VideoFrames(path, indices=[-1])
    with pytest.raises(VideoError, match="field 'indices'"):
        VideoFrames(path, indices=[0.5])
    with pytest.raises(VideoError, match="field 'size'"):
        VideoFrames(path, size=(0, 10))
    with pytest.raises(VideoError, match=r"field 'pointer': expected shape \(150, 3\)"):
        VideoFrames(path, pointer=np.zeros((3, 3)))
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoError, match=f"{missing}: file missing"):
        frame_count(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError, match=f"{garbage}: not a readable video"):
        VideoFrames(garbage)
    audio_only = tmp_path / "audio.mp4"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(VideoError, match=f"{audio_only}: field 'streams': no video stream"):
        frame_count(audio_only)


def test_damaged_file_fails_at_decode_naming_file_and_frame(recording, tmp_path):
    path, sequential = recording
    data = path.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    assert frame_count(truncated) < FRAMES  # the index says more than the file holds
    with pytest.raises(VideoError, match=f"{truncated}: field 'indices'"):
        VideoFrames(truncated, indices=[FRAMES - 1])
    zeroed = tmp_path / "zeroed.mp4"
    start = data.index(b"mdat") + 8
    zeroed.write_bytes(data[:start] + bytes(len(data) - start))
    frames = VideoFrames(zeroed)
    assert len(frames) == FRAMES  # demuxing alone cannot tell
    with pytest.raises(VideoError, match=rf"{zeroed}: frame 40: cannot decode"):
        frames[40]
    intact = VideoFrames(path)
    np.testing.assert_array_equal(intact[40], sequential[40])


def test_pickle_close_and_threads(recording):
    path, sequential = recording
    frames = VideoFrames(path, indices=np.arange(0, FRAMES, 2), cache_frames=4)
    frames[10]
    copy = pickle.loads(pickle.dumps(frames))
    assert copy.shape == frames.shape and copy.path == frames.path
    np.testing.assert_array_equal(copy[10:20], sequential[20:40:2])
    frames.close()
    np.testing.assert_array_equal(frames[3], sequential[6])  # reopens

    errors = []

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for index in rng.integers(0, len(frames), size=25):
            if not np.array_equal(frames[int(index)], sequential[2 * int(index)]):
                errors.append(int(index))

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_lossless_writing_is_exact_and_odd_sizes_are_padded(tmp_path):
    original = np.stack(list(moving_pattern(20, height=21, width=33)))
    path = write_video(original, tmp_path / "exact.mp4", fps=10, lossless=True)
    frames = VideoFrames(path)
    assert frames.shape == (20, 22, 34, 3)
    decoded = np.asarray(frames)
    np.testing.assert_array_equal(decoded[:, :21, :33], original)
    assert not decoded[:, 21:].any() and not decoded[:, :, 33:].any()  # black padding


def _real_time_threads() -> list[int]:
    """Threads of this process under SCHED_FIFO or SCHED_RR."""
    threads = [int(t) for t in os.listdir("/proc/self/task")]
    return [t for t in threads if os.sched_getscheduler(t) in (os.SCHED_FIFO, os.SCHED_RR)]


def test_av1_round_trip(tmp_path):
    assert not _real_time_threads()
    with VideoWriter(tmp_path / "av1.mp4", fps=10, codec="av1", gop=10) as writer:
        for k, frame in enumerate(moving_pattern(30)):
            writer.write(frame)
            # libsvtav1 run as root makes the thread that opens it (and its own threads) real-time.
            assert not _real_time_threads(), f"after frame {k}"
    path = writer.path
    assert not _real_time_threads()
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name in ("libdav1d", "av1")
    sequential = decode_sequentially(path)
    frames = VideoFrames(path, cache_frames=0)
    assert frame_count(path) == len(frames) == 30
    for index in (29, 0, 15, 14, 3):
        np.testing.assert_array_equal(frames[index], sequential[index])
    original = np.stack(list(moving_pattern(30)))
    assert np.abs(sequential.astype(float) - original).mean() < 10  # lossy but close


def test_writer_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(target, fps=10) as writer:
            writer.write(np.zeros((8, 8, 3), np.uint8))
            raise RuntimeError("boom")
    with pytest.raises(VideoError, match=f"{target}: frame 1: expected \\(H, W, 3\\) uint8"):
        write_video([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)], target,
                    fps=10)
    with pytest.raises(VideoError, match=f"{target}: frame 1: size"):
        write_video([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], target, fps=10)
    with pytest.raises(VideoError, match="field 'frames': no frames written"):
        write_video([], target, fps=10)
    assert list(tmp_path.iterdir()) == []
    for bad, field in [(dict(fps=0), "fps"), (dict(fps=10, codec="vp9"), "codec"),
                       (dict(fps=10, codec="av1", lossless=True), "lossless"),
                       (dict(fps=10, gop=0), "gop")]:
        with pytest.raises(VideoError, match=f"field '{field}'"):
            VideoWriter(target, **bad)
    target.write_bytes(b"old")
    write_video(moving_pattern(3), target, fps=10)
    assert frame_count(target) == 3 and list(tmp_path.iterdir()) == [target]
