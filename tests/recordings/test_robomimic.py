import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError
from embodied_pref.recordings.robomimic import (
    QualityPreference,
    quality_preferences,
    read_robomimic,
    robomimic_info,
    write_robomimic,
)

STATE_KEYS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")
ENV_ARGS = {"env_name": "PickPlaceCan", "type": 1, "env_kwargs": {"control_freq": 20}}
# Written out of order: the file's order is by N (demo_0, demo_2, demo_3, demo_10).
NAMES = ("demo_10", "demo_0", "demo_3", "demo_2")
MASKS = {"train": ["demo_0", "demo_2", "demo_10"], "valid": ["demo_3"],
         "better": ["demo_10"], "okay": ["demo_0", "demo_3"], "worse": ["demo_2"]}


def make_episode(rng: np.random.Generator, name: str, frames: int) -> RecordedEpisode:
    dones = np.zeros(frames, np.int64)
    dones[-1] = 1
    return RecordedEpisode(
        states=rng.standard_normal((frames, sum(STATE_KEYS.values()))).astype(np.float32),
        actions=rng.uniform(-1, 1, (frames, 7)).astype(np.float32),
        cameras={camera: rng.integers(0, 256, (frames, 6, 8, 3), dtype=np.uint8) for camera in CAMERAS},
        rewards=rng.random(frames).astype(np.float32), fps=20.0, name=name,
        metadata={"dones": dones.tolist()},
    )


@pytest.fixture
def episodes() -> dict[str, RecordedEpisode]:
    rng = np.random.default_rng(0)
    return {name: make_episode(rng, name, frames) for name, frames in zip(NAMES, (5, 4, 6, 3))}


@pytest.fixture
def written(tmp_path: Path, episodes: dict[str, RecordedEpisode]) -> Path:
    return write_robomimic(episodes.values(), tmp_path / "can_mh.hdf5", env_args=ENV_ARGS, masks=MASKS,
                           state_keys=STATE_KEYS)


# --- round trip ---------------------------------------------------------------------------


def test_info_describes_the_written_file(written: Path) -> None:
    info = robomimic_info(written)
    assert info.demos == ("demo_0", "demo_2", "demo_3", "demo_10")
    assert info.env_args == ENV_ARGS
    assert info.low_dim_keys == {key: (width,) for key, width in STATE_KEYS.items()}
    assert info.image_keys == {camera: (6, 8, 3) for camera in CAMERAS}
    assert info.other_keys == {}
    assert info.action_dim == 7
    assert info.total == 5 + 4 + 6 + 3
    assert info.masks == {name: tuple(demos) for name, demos in MASKS.items()}


def test_write_then_read_gives_the_episodes_back_in_demo_order(
        written: Path, episodes: dict[str, RecordedEpisode]) -> None:
    read = list(read_robomimic(written, fps=10.0))
    assert [episode.name for episode in read] == ["demo_0", "demo_2", "demo_3", "demo_10"]
    for episode in read:
        original = episodes[episode.name]
        np.testing.assert_array_equal(episode.states, original.states)
        np.testing.assert_array_equal(episode.actions, original.actions)
        np.testing.assert_array_equal(episode.rewards, original.rewards)
        assert set(episode.cameras) == set(CAMERAS)
        for camera in CAMERAS:
            assert episode.cameras[camera].dtype == np.uint8
            np.testing.assert_array_equal(episode.cameras[camera], original.cameras[camera])
        assert episode.fps == 10.0
        assert episode.source == str(written)
        assert episode.metadata["state_keys"] == STATE_KEYS
        assert list(episode.metadata["state_keys"]) == sorted(STATE_KEYS)
        assert episode.metadata["dones"] == original.metadata["dones"]
        in_masks = sorted(name for name, demos in MASKS.items() if episode.name in demos)
        assert episode.metadata["masks"] == in_masks


def test_written_file_has_robomimic_layout(written: Path, episodes: dict[str, RecordedEpisode]) -> None:
    with h5py.File(written, "r") as file:
        assert file["data"].attrs["total"] == 18
        assert json.loads(file["data"].attrs["env_args"]) == ENV_ARGS
        assert [name.decode() for name in file["mask/train"][()]] == MASKS["train"]
        demo = file["data/demo_3"]
        assert demo.attrs["num_samples"] == 6
        assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
        original = episodes["demo_3"]
        np.testing.assert_array_equal(demo["obs/robot0_eef_quat"][()], original.states[:, 3:7])
        for key in ("robot0_gripper_qpos", "agentview_image"):
            obs, next_obs = demo[f"obs/{key}"][()], demo[f"next_obs/{key}"][()]
            np.testing.assert_array_equal(next_obs[:-1], obs[1:])
            np.testing.assert_array_equal(next_obs[-1], obs[-1])


def test_filter_key_reads_only_its_demos_in_demo_order(written: Path) -> None:
    assert [episode.name for episode in read_robomimic(written, filter_key="train")] == \
        ["demo_0", "demo_2", "demo_10"]
    assert [episode.name for episode in read_robomimic(written, filter_key="okay")] == ["demo_0", "demo_3"]


def test_state_keys_are_concatenated_in_the_order_asked(
        written: Path, episodes: dict[str, RecordedEpisode]) -> None:
    episode = next(read_robomimic(written, state_keys=["robot0_gripper_qpos", "robot0_eef_pos"],
                                  cameras=["robot0_eye_in_hand_image"]))
    original = episodes["demo_0"]
    expected = np.hstack([original.states[:, 7:9], original.states[:, :3]])
    np.testing.assert_array_equal(episode.states, expected)
    assert list(episode.metadata["state_keys"].items()) == [("robot0_gripper_qpos", 2), ("robot0_eef_pos", 3)]
    assert list(episode.cameras) == ["robot0_eye_in_hand_image"]


def test_defaults_one_state_key_position_names_and_final_done(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    plain = [RecordedEpisode(states=rng.standard_normal((4, 5)).astype(np.float32),
                             actions=rng.standard_normal((4, 2)).astype(np.float32), cameras={}, fps=15.0,
                             name=f"rollout-{i}") for i in range(2)]
    path = write_robomimic(plain, tmp_path / "rollouts.hdf5")
    info = robomimic_info(path)
    assert info.demos == ("demo_0", "demo_1")
    assert info.low_dim_keys == {"state": (5,)} and info.image_keys == {} and info.env_args == {}
    read = list(read_robomimic(path))
    for episode, original in zip(read, plain):
        np.testing.assert_array_equal(episode.states, original.states)
        assert episode.rewards is None
        assert episode.metadata["dones"] == [0, 0, 0, 1]
        assert episode.metadata["masks"] == []


def test_read_episodes_write_back_unchanged(written: Path, tmp_path: Path) -> None:
    info = robomimic_info(written)
    copy = write_robomimic(read_robomimic(written), tmp_path / "copy.hdf5", env_args=info.env_args,
                           masks=info.masks, state_keys=STATE_KEYS)
    assert robomimic_info(copy) == dataclasses.replace(info, path=copy)
    for ours, theirs in zip(read_robomimic(copy), read_robomimic(written)):
        np.testing.assert_array_equal(ours.states, theirs.states)
        np.testing.assert_array_equal(ours.cameras["agentview_image"], theirs.cameras["agentview_image"])


# --- quality masks as preferences ---------------------------------------------------------


def test_quality_preferences_pair_every_higher_level_demo_with_every_lower_one() -> None:
    masks = {"better": ["b1", "b2"], "okay": ["o1", "o2", "o3"], "worse": ["w1"], "train": ["b1", "w1"]}
    pairs = quality_preferences(masks)
    assert len(pairs) == 2 * 3 + 2 * 1 + 3 * 1
    assert len(set(pairs)) == len(pairs)
    rank = {"better": 0, "okay": 1, "worse": 2}
    for pair in pairs:
        assert rank[pair.preferred_mask] < rank[pair.rejected_mask]
        assert pair.preferred in masks[pair.preferred_mask] and pair.rejected in masks[pair.rejected_mask]
    assert QualityPreference("b2", "w1", "better", "worse") in pairs
    assert QualityPreference("w1", "b2", "worse", "better") not in pairs


def test_quality_preferences_skip_absent_levels_and_take_custom_ones(written: Path) -> None:
    assert quality_preferences({"better": ["a"], "worse": ["b", "c"]}) == [
        QualityPreference("a", "b", "better", "worse"), QualityPreference("a", "c", "better", "worse")]
    assert quality_preferences({"better": ["a"], "train": ["b"]}) == []
    operators = {"better_operator_1": ["x"], "worse_operator_1": ["y"]}
    assert quality_preferences(operators, levels=("better_operator_1", "worse_operator_1")) == [
        QualityPreference("x", "y", "better_operator_1", "worse_operator_1")]
    file_pairs = quality_preferences(robomimic_info(written).masks)
    assert len(file_pairs) == 1 * 2 + 1 * 1 + 2 * 1


def test_quality_preferences_reject_a_demo_in_two_levels() -> None:
    with pytest.raises(RobotDataError, match=r"'better'.*'worse'.*'d7'"):
        quality_preferences({"better": ["d1", "d7"], "okay": ["d2"], "worse": ["d7"]})


# --- streaming ----------------------------------------------------------------------------


def _corrupt_actions(path: Path, demo: str) -> None:
    """Store `demo`'s actions gzip-compressed, then overwrite the compressed bytes with junk."""
    with h5py.File(path, "r+") as file:
        actions = file[f"data/{demo}/actions"][()]
        del file[f"data/{demo}/actions"]
        file.create_dataset(f"data/{demo}/actions", data=actions, chunks=actions.shape, compression="gzip")
    with h5py.File(path, "r") as file:
        chunk = file[f"data/{demo}/actions"].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)


def test_reading_streams_one_demo_at_a_time(written: Path) -> None:
    _corrupt_actions(written, "demo_3")
    assert robomimic_info(written).demos == ("demo_0", "demo_2", "demo_3", "demo_10")
    assert [episode.name for episode in read_robomimic(written, filter_key="better")] == ["demo_10"]
    stream = read_robomimic(written)
    assert [next(stream).name, next(stream).name] == ["demo_0", "demo_2"]
    with pytest.raises(RobotDataError, match=r"can_mh\.hdf5: key '/data/demo_3/actions': unreadable"):
        next(stream)


# --- errors -------------------------------------------------------------------------------


def test_not_an_hdf5_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(RobotDataError, match=r"notes\.hdf5: not an HDF5 file"):
        robomimic_info(text)
    with pytest.raises(RobotDataError, match=r"absent\.hdf5: file missing"):
        read_robomimic(tmp_path / "absent.hdf5")


def test_no_data_group(tmp_path: Path) -> None:
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as file:
        file.create_group("mask")
    with pytest.raises(RobotDataError,
                       match=r"empty\.hdf5: key 'data': expected the group of demos, found nothing"):
        read_robomimic(path)


def test_demo_missing_actions(written: Path) -> None:
    with h5py.File(written, "r+") as file:
        del file["data/demo_2/actions"]
    stream = read_robomimic(written)
    next(stream)
    with pytest.raises(RobotDataError, match=r"can_mh\.hdf5: key '/data/demo_2/actions': missing"):
        next(stream)


def test_obs_length_differs_from_actions(written: Path) -> None:
    with h5py.File(written, "r+") as file:
        del file["data/demo_0/obs/robot0_eef_pos"]
        file["data/demo_0/obs/robot0_eef_pos"] = np.zeros((3, 3), np.float32)
    with pytest.raises(RobotDataError,
                       match=r"key '/data/demo_0/obs/robot0_eef_pos': 3 frames, but 4 actions"):
        next(read_robomimic(written))


def test_requested_key_absent(written: Path) -> None:
    with pytest.raises(RobotDataError, match=r"can_mh\.hdf5: key '/data/demo_0/obs/joint_pos': missing"):
        read_robomimic(written, state_keys=["robot0_eef_pos", "joint_pos"])
    with pytest.raises(RobotDataError, match=r"key '/data/demo_0/obs/sideview_image': missing"):
        read_robomimic(written, cameras=["sideview_image"])
    with h5py.File(written, "r+") as file:
        del file["data/demo_3/obs/agentview_image"]
    stream = read_robomimic(written, filter_key="valid")
    with pytest.raises(RobotDataError, match=r"key '/data/demo_3/obs/agentview_image': missing"):
        next(stream)


def test_image_key_must_be_uint8_hwc3(written: Path) -> None:
    with pytest.raises(RobotDataError, match=r"key '/data/demo_0/obs/robot0_eef_pos': expected "
                                             r"\(N, H, W, 3\) uint8 images, found float32 \(4, 3\)"):
        read_robomimic(written, cameras=["robot0_eef_pos"])
    with h5py.File(written, "r+") as file:
        file["data/demo_0/obs/agentview_depth"] = np.zeros((4, 6, 8, 1), np.float32)
    assert robomimic_info(written).other_keys == {"agentview_depth": (6, 8, 1)}
    with pytest.raises(RobotDataError,
                       match=r"'/data/demo_0/obs/agentview_depth': expected \(N, H, W, 3\) uint8"):
        read_robomimic(written, cameras=["agentview_depth"])
    with pytest.raises(RobotDataError, match=r"'/data/demo_0/obs/agentview_image': expected a low-dim"):
        read_robomimic(written, state_keys=["agentview_image"])


def test_mask_naming_an_unknown_demo(written: Path, tmp_path: Path,
                                     episodes: dict[str, RecordedEpisode]) -> None:
    with h5py.File(written, "r+") as file:
        file["mask/extra"] = np.array(["demo_0", "demo_99"], dtype="S")
    with pytest.raises(RobotDataError, match=r"can_mh\.hdf5: key '/mask/extra': names demo 'demo_99'"):
        robomimic_info(written)
    target = tmp_path / "out.hdf5"
    with pytest.raises(RobotDataError, match=r"out\.hdf5: mask 'valid': names demo 'demo_5'"):
        write_robomimic(episodes.values(), target, masks={"valid": ["demo_5"]}, state_keys=STATE_KEYS)
    assert not target.exists()


def test_unknown_filter_key(written: Path) -> None:
    with pytest.raises(RobotDataError, match=r"can_mh\.hdf5: filter_key 'expert': no key 'mask/expert' "
                                             r"\(masks: \['better', 'okay', 'train', 'valid', 'worse'\]\)"):
        read_robomimic(written, filter_key="expert")


def test_write_rejects_state_keys_that_do_not_split_the_states(tmp_path: Path,
                                                               episodes: dict[str, RecordedEpisode]) -> None:
    with pytest.raises(RobotDataError, match=r"out\.hdf5: episode 'demo_10': state_keys: .* sum to 5, "
                                             r"but the states have 9 columns"):
        write_robomimic(episodes.values(), tmp_path / "out.hdf5",
                        state_keys={"robot0_eef_pos": 3, "object": 2})


def test_failed_write_leaves_the_old_file_and_no_temporary(
        written: Path, episodes: dict[str, RecordedEpisode]) -> None:
    before = written.read_bytes()

    def failing():
        yield episodes["demo_0"]
        raise RuntimeError("recording interrupted")

    with pytest.raises(RuntimeError, match="recording interrupted"):
        write_robomimic(failing(), written, state_keys=STATE_KEYS)
    assert written.read_bytes() == before
    assert [path.name for path in written.parent.iterdir()] == [written.name]
