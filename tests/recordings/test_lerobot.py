import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embodied_pref.data.video import VideoFrames, frame_count, write_video
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError
from embodied_pref.recordings.lerobot import lerobot_info, read_lerobot
from embodied_pref.recordings.lerobot_writer import write_lerobot

EPISODES, FRAMES, SIZE, FPS = 6, 20, 32, 10
CAMERAS = ("top", "wrist")
KEYS = tuple(f"observation.images.{camera}" for camera in CAMERAS)


def make_episode(index: int, frames: int = FRAMES, cameras=CAMERAS, rewards: bool = True,
                 state_dim: int = 4) -> RecordedEpisode:
    rng = np.random.default_rng(index)
    return RecordedEpisode(
        states=rng.normal(size=(frames, state_dim)), actions=rng.normal(size=(frames, 2)),
        cameras={camera: rng.integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8) for camera in cameras},
        fps=FPS, rewards=rng.normal(size=frames) if rewards else None, task=f"task {index % 2}",
        name=f"take_{index}",
    )


@pytest.fixture(scope="module")
def episodes():
    return [make_episode(i, frames=FRAMES + i) for i in range(EPISODES)]


@pytest.fixture(scope="module")
def datasets(episodes, tmp_path_factory):
    """Both versions of the same six episodes, losslessly encoded; v3.0 two episodes a file."""
    base = tmp_path_factory.mktemp("lerobot")
    return {version: write_lerobot(episodes, base / version, version=version, robot_type="so100",
                                   episodes_per_file=2, lossless=True)
            for version in ("v2.1", "v3.0")}


@pytest.fixture
def copy_of(datasets, tmp_path):
    """A fresh copy of a dataset of one version, to damage."""
    return lambda version: shutil.copytree(datasets[version], tmp_path / version)


def assert_same_episode(written: RecordedEpisode, read: RecordedEpisode) -> None:
    assert read.length == written.length
    np.testing.assert_array_equal(read.actions, written.actions)
    np.testing.assert_array_equal(read.states, written.states)
    np.testing.assert_array_equal(read.rewards, written.rewards)
    assert sorted(read.cameras) == sorted(f"observation.images.{c}" for c in written.cameras)
    for camera, frames in written.cameras.items():
        decoded = read.cameras[f"observation.images.{camera}"]
        assert isinstance(decoded, VideoFrames)
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(frames))
    assert read.task == written.task and read.fps == written.fps


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_round_trip_is_exact_with_lossless_video(episodes, datasets, version):
    read = list(read_lerobot(datasets[version]))
    assert [episode.name for episode in read] == [f"episode_{i:06d}" for i in range(EPISODES)]
    for index, (written, episode) in enumerate(zip(episodes, read, strict=True)):
        assert_same_episode(written, episode)
        assert episode.metadata == {"episode_index": index, "task_index": index % 2,
                                    "tasks": [f"task {index % 2}"], "codebase_version": version}
        assert episode.source == str(datasets[version])


def test_v3_packs_several_episodes_per_file_and_locates_them(datasets):
    root = datasets["v3.0"]
    assert sorted(p.name for p in (root / "data/chunk-000").iterdir()) == [f"file-00{i}.parquet" for i in range(3)]
    meta = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    lengths = [FRAMES + i for i in range(EPISODES)]
    assert [row["length"] for row in meta] == lengths
    assert [row["data/file_index"] for row in meta] == [0, 0, 1, 1, 2, 2]
    assert [row["dataset_from_index"] for row in meta] == np.cumsum([0] + lengths[:-1]).tolist()
    assert [row["dataset_to_index"] for row in meta] == np.cumsum(lengths).tolist()
    for key in KEYS:
        for file in range(3):
            mp4 = root / f"videos/{key}/chunk-000/file-{file:03d}.mp4"
            assert frame_count(mp4) == lengths[2 * file] + lengths[2 * file + 1]
        second = meta[1]  # the second episode of file 0 starts where the first ends
        assert second[f"videos/{key}/from_timestamp"] == pytest.approx(lengths[0] / FPS)
        assert second[f"videos/{key}/to_timestamp"] == pytest.approx((lengths[0] + lengths[1]) / FPS)
    data = pq.read_table(root / "data/chunk-000/file-001.parquet")
    assert data.column("episode_index").to_pylist() == [2] * lengths[2] + [3] * lengths[3]
    assert data.column("index").to_pylist() == list(range(sum(lengths[:2]), sum(lengths[:4])))
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["codebase_version"], info["total_episodes"], info["total_frames"], info["total_tasks"]) == (
        "v3.0", EPISODES, sum(lengths), 2)
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.to_pylist() == [{"task_index": 0, "task": "task 0"}, {"task_index": 1, "task": "task 1"}]
    assert tasks.schema.pandas_metadata["index_columns"] == ["task"]  # LeRobot looks tasks up by this index


def test_v2_layout_has_one_file_per_episode_and_camera(datasets):
    root = datasets["v2.1"]
    assert len(list((root / "data/chunk-000").glob("episode_*.parquet"))) == EPISODES
    for key in KEYS:
        assert frame_count(root / f"videos/chunk-000/{key}/episode_000005.mp4") == FRAMES + 5
    rows = [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
    assert rows[3] == {"episode_index": 3, "tasks": ["task 1"], "length": FRAMES + 3}
    stats = [json.loads(line) for line in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    assert [row["episode_index"] for row in stats] == list(range(EPISODES))


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_stats_describe_every_frame(episodes, datasets, version):
    stats = json.loads((datasets[version] / "meta/stats.json").read_text())
    actions = np.concatenate([episode.actions for episode in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(axis=0))
    np.testing.assert_allclose(stats["action"]["max"], actions.max(axis=0))
    assert stats["action"]["count"] == [len(actions)]
    rewards = np.concatenate([episode.rewards for episode in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["next.reward"]["mean"], [rewards.mean()], rtol=1e-6)
    pixels = np.concatenate([episode.cameras["top"] for episode in episodes]) / 255
    np.testing.assert_allclose(np.reshape(stats[KEYS[0]]["mean"], 3), pixels.mean(axis=(0, 1, 2)), rtol=1e-6)
    assert np.shape(stats[KEYS[0]]["std"]) == (3, 1, 1)


def test_info_describes_the_dataset(datasets):
    info = lerobot_info(datasets["v3.0"])
    assert (info.version, info.fps, info.total_episodes, info.total_frames) == (
        "v3.0", FPS, EPISODES, sum(FRAMES + i for i in range(EPISODES)))
    assert (info.camera_keys, info.state_dim, info.action_dim, info.robot_type) == (KEYS, 4, 2, "so100")
    assert lerobot_info(datasets["v2.1"]).version == "v2.1"


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_reads_chosen_episodes_and_cameras_in_the_order_asked(episodes, datasets, version):
    read = list(read_lerobot(datasets[version], episodes=[4, 1, 5], cameras=[KEYS[1]]))
    assert [episode.metadata["episode_index"] for episode in read] == [4, 1, 5]
    assert all(list(episode.cameras) == [KEYS[1]] for episode in read)
    np.testing.assert_array_equal(np.asarray(read[0].cameras[KEYS[1]]), episodes[4].cameras["wrist"])
    np.testing.assert_array_equal(read[1].actions, episodes[1].actions)


def test_v3_reads_only_the_files_of_the_episodes_asked(copy_of, episodes, monkeypatch):
    root = copy_of("v3.0")
    (root / "data/chunk-000/file-000.parquet").unlink()
    for key in KEYS:
        (root / f"videos/{key}/chunk-000/file-001.mp4").write_bytes(b"not a video")
    [episode] = read_lerobot(root, episodes=[5])
    assert_same_episode(episodes[5], episode)
    with pytest.raises(RobotDataError, match=r"file-000\.parquet: file missing"):
        next(read_lerobot(root, episodes=[0]))

    opened = []
    original = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda path, **kw: opened.append(str(path)) or original(path, **kw))
    read = list(read_lerobot(root, episodes=[4, 5], cameras=[]))
    assert [episode.length for episode in read] == [FRAMES + 4, FRAMES + 5]
    assert [path for path in opened if "/data/" in path] == [str(root / "data/chunk-000/file-002.parquet")]


def test_lossy_video_stays_close_and_keeps_episode_boundaries(tmp_path):
    y, x = np.mgrid[0:SIZE, 0:SIZE]

    def smooth(offset: int, frames: int) -> np.ndarray:
        # smooth gradients (H.264 keeps them within a few levels) over a blue level that steps by
        # 20 from frame to frame, so that a frame from one position off is far from its original
        return np.stack([np.stack([60 + 2 * x + offset, 60 + 2 * y, np.full_like(x, 10 + 20 * t)], axis=-1)
                         for t in range(frames)]).astype(np.uint8)

    written = [RecordedEpisode(states=np.zeros((12, 1)), actions=np.ones((12, 1)),
                               cameras={"top": smooth(12 * i, 12)}, fps=FPS) for i in range(3)]
    root = write_lerobot(written, tmp_path / "lossy", episodes_per_file=3)
    for original, episode in zip(written, read_lerobot(root), strict=True):
        decoded = np.asarray(episode.cameras[KEYS[0]]).astype(int)
        target = original.cameras["top"].astype(int)
        assert np.abs(decoded - target).mean() < 4  # codec tolerance, in levels of 255
        # every decoded frame is nearest to its own original among the episode's frames
        distances = np.abs(decoded[:, None] - target[None]).mean(axis=(2, 3, 4))
        np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(len(target)))


def test_exporting_read_episodes_converts_between_versions(datasets, episodes, tmp_path):
    root = write_lerobot(read_lerobot(datasets["v3.0"], episodes=[2, 3]), tmp_path / "v21", version="v2.1",
                         lossless=True)
    read = list(read_lerobot(root))
    for written, episode in zip(episodes[2:4], read, strict=True):
        assert_same_episode(written, episode)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_files_spill_into_further_chunks(tmp_path, version):
    written = [make_episode(i, cameras=("top",)) for i in range(5)]
    root = write_lerobot(written, tmp_path / version, version=version, episodes_per_file=1, chunks_size=2,
                         lossless=True)
    assert sorted(path.name for path in (root / "data").iterdir()) == ["chunk-000", "chunk-001", "chunk-002"]
    read = list(read_lerobot(root))
    for original, episode in zip(written, read, strict=True):
        assert_same_episode(original, episode)


def test_reads_variable_length_list_columns(copy_of, episodes):
    root = copy_of("v3.0")
    path = root / "data/chunk-000/file-000.parquet"
    as_lists = pa.list_(pa.float32())
    rewrite_parquet(path, lambda table: table.set_column(
        table.schema.get_field_index("action"), "action", table.column("action").cast(as_lists)))
    assert pq.read_schema(path).field("action").type == as_lists
    np.testing.assert_array_equal(next(read_lerobot(root)).actions, episodes[0].actions)


def test_episodes_without_states_or_rewards(tmp_path):
    written = [make_episode(i, rewards=False, state_dim=0, cameras=()) for i in range(2)]
    root = write_lerobot(written, tmp_path / "bare", version="v3.0")
    features = lerobot_info(root).features
    assert "observation.state" not in features and "next.reward" not in features
    with pytest.raises(RobotDataError, match="state_key 'observation.state': no such feature"):
        read_lerobot(root)
    read = list(read_lerobot(root, state_key=None))
    assert read[1].states.shape == (FRAMES, 0) and read[1].rewards is None and read[1].cameras == {}
    np.testing.assert_array_equal(read[1].actions, written[1].actions)


# --- errors -------------------------------------------------------------------------------


def edit_info(root, **changes):
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del info[key]
        else:
            info[key] = value
    path.write_text(json.dumps(info))


def rewrite_parquet(path, change):
    pq.write_table(change(pq.read_table(path)), path)


def test_missing_info_json(tmp_path):
    with pytest.raises(RobotDataError, match=r"meta/info\.json: file missing"):
        read_lerobot(tmp_path)


def test_info_without_a_required_key(copy_of):
    root = copy_of("v3.0")
    edit_info(root, fps=None)
    with pytest.raises(RobotDataError, match=r"meta/info\.json: key 'fps': missing"):
        lerobot_info(root)


def test_unsupported_codebase_version(copy_of):
    root = copy_of("v2.1")
    edit_info(root, codebase_version="v1.6")
    with pytest.raises(RobotDataError, match=r"info\.json: key 'codebase_version': .* found 'v1\.6'"):
        read_lerobot(root)


def test_missing_parquet(copy_of):
    root = copy_of("v2.1")
    (root / "data/chunk-000/episode_000002.parquet").unlink()
    read = read_lerobot(root)
    assert next(read).length == FRAMES and next(read).length == FRAMES + 1
    with pytest.raises(RobotDataError, match=r"episode_000002\.parquet: file missing"):
        next(read)


def test_missing_mp4(copy_of):
    root = copy_of("v3.0")
    (root / f"videos/{KEYS[1]}/chunk-000/file-000.mp4").unlink()
    with pytest.raises(RobotDataError, match=rf"{KEYS[1]}/chunk-000/file-000\.mp4: file missing \(camera '{KEYS[1]}'"):
        next(read_lerobot(root))


def test_missing_column(copy_of):
    root = copy_of("v3.0")
    path = root / "data/chunk-000/file-001.parquet"
    rewrite_parquet(path, lambda table: table.drop_columns(["action"]))
    with pytest.raises(RobotDataError, match=r"file-001\.parquet: column 'action': missing"):
        list(read_lerobot(root))


def test_row_count_differs_from_recorded_length(copy_of):
    root = copy_of("v2.1")
    path = root / "meta/episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["length"] += 1
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(RobotDataError, match=rf"episode_000001\.parquet: column 'episode_index': episode 1 has "
                                             rf"{FRAMES + 1} rows, but .*episodes\.jsonl gives its length"):
        list(read_lerobot(root))


def test_video_shorter_than_the_episode(copy_of):
    root = copy_of("v2.1")
    mp4 = root / f"videos/chunk-000/{KEYS[0]}/episode_000003.mp4"
    write_video(np.zeros((5, SIZE, SIZE, 3), np.uint8), mp4, fps=FPS)
    with pytest.raises(RobotDataError, match=rf"episode_000003\.mp4: camera '{KEYS[0]}': episode 3: needs frames "
                                             rf"0\.\.{FRAMES + 2}, but the video has 5 frames"):
        list(read_lerobot(root))


def test_v3_episode_past_the_end_of_its_video(copy_of):
    root = copy_of("v3.0")
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    column = f"videos/{KEYS[0]}/from_timestamp"
    rewrite_parquet(path, lambda table: table.set_column(
        table.schema.get_field_index(column), column, pa.array([0.0, 5.0, 0, 0, 0, 0])))
    with pytest.raises(RobotDataError, match=rf"file-000\.mp4: camera '{KEYS[0]}': episode 1: needs frames 50\.\."):
        list(read_lerobot(root))


def test_non_consecutive_frame_index(copy_of):
    root = copy_of("v3.0")
    path = root / "data/chunk-000/file-001.parquet"

    def swap(table):
        frame_index = table.column("frame_index").to_numpy().copy()
        frame_index[[3, 4]] = frame_index[[4, 3]]
        return table.set_column(table.schema.get_field_index("frame_index"), "frame_index", pa.array(frame_index))

    rewrite_parquet(path, swap)
    with pytest.raises(RobotDataError, match=r"file-001\.parquet: column 'frame_index': episode 2: expected "
                                             r"consecutive frames .* found 4 at its row 3"):
        list(read_lerobot(root))


def test_unknown_camera_and_episode(datasets):
    with pytest.raises(RobotDataError, match=r"info\.json: camera 'observation\.images\.side'"):
        read_lerobot(datasets["v3.0"], cameras=["observation.images.side"])
    with pytest.raises(RobotDataError, match=r"file-000\.parquet: episode 9: not in the dataset"):
        read_lerobot(datasets["v3.0"], episodes=[9])


# --- writing ------------------------------------------------------------------------------


def test_a_failed_write_leaves_nothing(tmp_path):
    def crashing():
        yield make_episode(0)
        yield make_episode(1)
        raise RuntimeError("robot unplugged")

    with pytest.raises(RuntimeError, match="unplugged"):
        write_lerobot(crashing(), tmp_path / "out", episodes_per_file=1)
    mismatched = [make_episode(0), make_episode(1, state_dim=3)]
    with pytest.raises(RobotDataError, match=r"episode 1 \('take_1'\): field 'state_dim': 3, but the first"):
        write_lerobot(mismatched, tmp_path / "out", version="v2.1")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_write_over_a_dataset(datasets):
    with pytest.raises(RobotDataError, match="already exists and is not an empty directory"):
        write_lerobot([make_episode(0)], datasets["v3.0"])
