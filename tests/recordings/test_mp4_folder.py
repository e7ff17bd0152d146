import numpy as np
import pytest

from embodied_pref.data.video import VideoFrames, write_video
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError
from embodied_pref.recordings.mp4_folder import read_mp4_folder, write_mp4_folder

FRAMES, SIZE, FPS = 20, 32, 15


def frames(seed: int, count: int = FRAMES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def make_episode(seed: int, name: str, cameras=("video",), rewards: bool = True) -> RecordedEpisode:
    rng = np.random.default_rng(100 + seed)
    return RecordedEpisode(
        states=rng.normal(size=(FRAMES, 3)), actions=rng.normal(size=(FRAMES, 2)),
        cameras={camera: frames(seed * 10 + i) for i, camera in enumerate(cameras)}, fps=FPS,
        rewards=rng.normal(size=FRAMES) if rewards else None, name=name,
    )


def test_round_trip_one_camera_each(tmp_path):
    written = [make_episode(0, "pick_01"), make_episode(1, "pick_02", rewards=False)]
    write_mp4_folder(written, tmp_path, lossless=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "pick_01.mp4", "pick_01.npz", "pick_02.mp4", "pick_02.npz"]
    read = list(read_mp4_folder(tmp_path))
    assert [episode.name for episode in read] == ["pick_01", "pick_02"]
    for original, episode in zip(written, read, strict=True):
        assert list(episode.cameras) == ["video"] and isinstance(episode.cameras["video"], VideoFrames)
        np.testing.assert_array_equal(np.asarray(episode.cameras["video"]), original.cameras["video"])
        np.testing.assert_array_equal(episode.actions, original.actions)
        np.testing.assert_array_equal(episode.states, original.states)
        assert episode.fps == pytest.approx(FPS) and episode.source == str(tmp_path)
    np.testing.assert_array_equal(read[0].rewards, written[0].rewards)
    assert read[1].rewards is None


def test_round_trip_several_cameras(tmp_path):
    written = make_episode(2, "place", cameras=("top", "wrist"))
    write_mp4_folder([written], tmp_path, lossless=True)
    [episode] = read_mp4_folder(tmp_path)
    assert sorted(episode.cameras) == ["top", "wrist"]
    assert episode.metadata["files"] == {"top": "place.top.mp4", "wrist": "place.wrist.mp4"}
    for camera in ("top", "wrist"):
        np.testing.assert_array_equal(np.asarray(episode.cameras[camera]), written.cameras[camera])
    np.testing.assert_array_equal(episode.rewards, written.rewards)


def test_episodes_read_from_videos_write_back_unchanged(tmp_path):
    written = make_episode(3, "stack", cameras=("top", "wrist"))
    write_mp4_folder([written], tmp_path / "first", lossless=True)
    write_mp4_folder(read_mp4_folder(tmp_path / "first"), tmp_path / "second", lossless=True)
    [episode] = read_mp4_folder(tmp_path / "second")
    for camera in ("top", "wrist"):
        np.testing.assert_array_equal(np.asarray(episode.cameras[camera]), written.cameras[camera])
    np.testing.assert_array_equal(episode.actions, written.actions)


def test_videos_alone_have_empty_actions_and_states(tmp_path):
    write_video(frames(0), tmp_path / "a.mp4", fps=12)
    write_video(frames(1, 8), tmp_path / "b.mp4", fps=12)
    first, second = read_mp4_folder(tmp_path)
    assert first.actions.shape == (FRAMES, 0) and first.states.shape == (FRAMES, 0) and first.rewards is None
    assert second.length == 8 and first.fps == pytest.approx(12)
    assert next(read_mp4_folder(tmp_path, fps=30)).fps == 30


def test_lossy_video_stays_within_codec_tolerance(tmp_path):
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    smooth = np.stack([np.stack([50 + 3 * x, 50 + 3 * y, np.full_like(x, 10 + 10 * t)], axis=-1)
                       for t in range(FRAMES)]).astype(np.uint8)
    episode = RecordedEpisode(states=np.zeros((FRAMES, 1)), actions=np.zeros((FRAMES, 1)),
                              cameras={"video": smooth}, fps=FPS, name="smooth")
    write_mp4_folder([episode], tmp_path)
    [read] = read_mp4_folder(tmp_path)
    assert np.abs(np.asarray(read.cameras["video"]).astype(int) - smooth).mean() < 4  # levels of 255


def test_npz_length_must_match_the_video(tmp_path):
    write_video(frames(0), tmp_path / "a.mp4", fps=FPS)
    np.savez(tmp_path / "a.npz", actions=np.zeros((FRAMES - 1, 2)))
    with pytest.raises(RobotDataError, match=rf"a\.npz: key 'actions': {FRAMES - 1} rows, but the video has "
                                             rf"{FRAMES} frames"):
        list(read_mp4_folder(tmp_path))


def test_npz_arrays_are_checked(tmp_path):
    write_video(frames(0), tmp_path / "a.mp4", fps=FPS)
    np.savez(tmp_path / "a.npz", action=np.zeros((FRAMES, 2)))
    with pytest.raises(RobotDataError, match=r"a\.npz: key 'action': unknown"):
        list(read_mp4_folder(tmp_path))
    np.savez(tmp_path / "a.npz", rewards=np.zeros((FRAMES, 2)))
    with pytest.raises(RobotDataError, match=r"a\.npz: key 'rewards': expected \(N,\) numbers"):
        list(read_mp4_folder(tmp_path))


def test_npz_without_video(tmp_path):
    write_video(frames(0), tmp_path / "a.mp4", fps=FPS)
    np.savez(tmp_path / "b.npz", actions=np.zeros((FRAMES, 2)))
    with pytest.raises(RobotDataError, match=r"b\.npz: no video for it"):
        read_mp4_folder(tmp_path)


def test_unreadable_video(tmp_path):
    write_video(frames(0), tmp_path / "a.top.mp4", fps=FPS)
    (tmp_path / "a.wrist.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(RobotDataError, match=r"a\.wrist\.mp4: not a readable video file .*camera 'wrist'"):
        list(read_mp4_folder(tmp_path))


def test_cameras_of_one_episode_must_have_equal_lengths(tmp_path):
    write_video(frames(0), tmp_path / "a.top.mp4", fps=FPS)
    write_video(frames(1, 5), tmp_path / "a.wrist.mp4", fps=FPS)
    with pytest.raises(RobotDataError, match=rf"a\.wrist\.mp4: camera 'wrist': 5 frames, but a\.top\.mp4 has "
                                             rf"{FRAMES}"):
        list(read_mp4_folder(tmp_path))


def test_writer_refuses_names_that_would_read_back_differently(tmp_path):
    with pytest.raises(RobotDataError, match=r"camera 'observation\.images\.top': .* cannot contain '\.'"):
        write_mp4_folder([make_episode(0, "a", cameras=("observation.images.top",))], tmp_path)
    with pytest.raises(RobotDataError, match=r"field 'name'"):
        write_mp4_folder([make_episode(0, "run.2")], tmp_path)
    write_mp4_folder([make_episode(0, "a")], tmp_path)
    with pytest.raises(RobotDataError, match=r"a\.mp4: already exists"):
        write_mp4_folder([make_episode(1, "a")], tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.mp4", "a.npz"]
