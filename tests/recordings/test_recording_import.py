"""Recorded episodes into a preference dataset: trajectories of N − 1 steps whose frames stay
video-backed (one stored copy per source mp4), clips, resumable imports, the episode given back
by `from_trajectory`, and graded pairs stored as labels with their provenance."""

import numpy as np
import pytest

from embodied_pref.data import Outcome
from embodied_pref.data.video import VideoFrames, write_video
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError, from_trajectory
from embodied_pref.recordings.importing import (
    GradedPair,
    RecordingImportConfig,
    add_graded_labels,
    import_episodes,
)
from embodied_pref.store import PreferenceDataset

N, H, W = 21, 16, 24


def frames(seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def episode(name: str, seed: int, cameras: dict) -> RecordedEpisode:
    rng = np.random.default_rng(seed)
    return RecordedEpisode(states=rng.normal(size=(N, 5)), actions=rng.normal(size=(N, 3)), cameras=cameras,
                           fps=10.0, rewards=rng.normal(size=N), task="push the block", name=name,
                           source="/recordings/sample", metadata={"operator": seed})


@pytest.fixture
def episodes(tmp_path):
    """Two episodes sharing one mp4 (frames 0..20 and 21..41) and one whose frames are arrays."""
    shared = write_video(np.concatenate([frames(0), frames(1)]), tmp_path / "shared.mp4", fps=10, lossless=True)
    return [episode("ep0", 0, {"top": VideoFrames(shared, indices=np.arange(N))}),
            episode("ep1", 1, {"top": VideoFrames(shared, indices=np.arange(N, 2 * N))}),
            episode("ep2", 2, {"top": frames(2), "wrist": frames(3)})]


def test_episodes_become_video_backed_trajectories_and_come_back(tmp_path, episodes):
    config = RecordingImportConfig(camera="top", clip_length=5, lossless=True, progress=False)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        summary = import_episodes(episodes, ds, "lerobot", config)
        assert len(summary.stored) == 3 and summary.clips == 3 * 4 and summary.already == ()
        videos = {ds.trajectory_info(t)["video_file"] for t in summary.stored}
        assert len(videos) == 2  # ep0 and ep1 share their recording's one copy
        assert sorted(p.name for p in (ds.path / "videos").iterdir()) == sorted(v.split("/")[1] for v in videos)
        assert not list(ds.path.glob(".import-*"))
        for original in episodes:
            stored = ds.trajectory(summary.trajectory_of[original.name])
            assert stored.length == N - 1 and isinstance(stored.frames, VideoFrames)
            np.testing.assert_array_equal(np.asarray(stored.frames), np.asarray(original.cameras["top"]))
            back = from_trajectory(stored)
            np.testing.assert_array_equal(back.actions, original.actions)
            np.testing.assert_array_equal(back.states, original.states)
            np.testing.assert_array_equal(back.rewards, original.rewards)
            assert (back.name, back.task, back.fps, back.metadata) == (original.name, original.task, 10.0,
                                                                       original.metadata)
            assert list(back.cameras) == ["top"]

        again = import_episodes(episodes, ds, "lerobot", config)
        assert again.stored == () and sorted(again.already) == sorted(summary.stored) and again.clips == 0
        assert len(ds.clips()) == 12
        other = import_episodes(episodes[:1], ds, "robomimic", config)  # another source: another trajectory
        assert len(other.stored) == 1 and len(ds.trajectory_ids()) == 4


def test_an_import_that_fails_midway_keeps_its_finished_batches_and_resumes(tmp_path, episodes):
    many = [episode(f"ep{k}", k, {"top": frames(k)}) for k in range(7)]

    def failing_after_five():
        yield from many[:5]
        raise RobotDataError("episode 5: unreadable")

    config = RecordingImportConfig(camera="top", clip_length=5, batch_episodes=2, progress=False)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        with pytest.raises(RobotDataError, match="episode 5"):
            import_episodes(failing_after_five(), ds, "lerobot", config)
        assert len(ds.trajectory_ids()) == 5 and len(ds.clips()) == 5 * 4  # two whole batches and the fifth
        assert not list(ds.path.glob(".import-*"))  # its scratch mp4s are gone too
        resumed = import_episodes(many, ds, "lerobot", config)
        assert len(resumed.already) == 5 and len(resumed.stored) == 2 and resumed.clips == 2 * 4
        assert len(ds.trajectory_ids()) == 7


def test_the_camera_is_chosen_or_left_out(tmp_path, episodes):
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        first = import_episodes(episodes[2:], ds, "a", RecordingImportConfig(clip_length=5, progress=False))
        wrist = import_episodes(episodes[2:], ds, "b", RecordingImportConfig(camera="wrist", clip_length=5,
                                                                             encode_frames=False, progress=False))
        none = import_episodes(episodes[2:], ds, "c", RecordingImportConfig(camera="", clip_length=5, progress=False))
        (a,), (b,), (c,) = first.stored, wrist.stored, none.stored
        assert ds.trajectory(a).metadata["recording"]["camera"] == "top"
        np.testing.assert_array_equal(ds.trajectory(b).frames, frames(3))  # raw, in the npz
        assert ds.trajectory_info(b)["video_file"] is None and ds.trajectory(c).frames is None
        with pytest.raises(RobotDataError, match="field 'camera': no camera 'side'"):
            import_episodes(episodes[2:], ds, "d", RecordingImportConfig(camera="side", progress=False))
        assert len(ds.trajectory_ids()) == 3


def test_encoder_cameras_are_stored_as_further_views_and_exported_back(tmp_path, episodes):
    config = RecordingImportConfig(camera="top", encoder_cameras=("wrist",), clip_length=5, lossless=True,
                                   progress=False)
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        (stored,) = import_episodes(episodes[2:], ds, "lerobot", config).stored
        trajectory = ds.trajectory(stored)
        assert list(trajectory.views) == ["wrist"] and isinstance(trajectory.views["wrist"], VideoFrames)
        np.testing.assert_array_equal(np.asarray(trajectory.views["wrist"]), frames(3))  # encoded losslessly
        np.testing.assert_array_equal(np.asarray(trajectory.frames), frames(2))
        clip = ds.clips()[1]
        np.testing.assert_array_equal(ds.clip_frames(clip, "wrist"), frames(3)[clip.start:clip.start + 6])
        back = from_trajectory(trajectory)
        assert sorted(back.cameras) == ["top", "wrist"]
        np.testing.assert_array_equal(np.asarray(back.cameras["wrist"]), frames(3))
        assert not list(ds.path.glob(".import-*"))
        with pytest.raises(RobotDataError, match="episode 'ep0': no camera 'wrist'"):
            import_episodes(episodes[:1], ds, "lerobot", config)
        assert ds.trajectory_ids() == [stored]


def test_graded_pairs_become_labels_with_provenance(tmp_path, episodes):
    with PreferenceDataset.create(tmp_path / "ds") as ds:
        summary = import_episodes(episodes, ds, "robomimic",
                                  RecordingImportConfig(camera="", clip_length=5, progress=False))
        pairs = [GradedPair("ep0", "ep1", {"kind": "quality-mask", "better": "better", "worse": "okay"}),
                 GradedPair("ep0", "ep2", {"kind": "quality-mask", "better": "better", "worse": "worse"})]
        assert add_graded_labels(ds, pairs, summary.trajectory_of, "operator-quality", per_pair=2) == 4
        labels = ds.labels()
        assert {label.outcome for label in labels} == {Outcome.LEFT}
        assert {label.annotator for label in labels} == {"operator-quality"}
        assert sorted(label.source["worse"] for label in labels) == ["okay", "okay", "worse", "worse"]
        clips = {c.id: c for c in ds.clips()}
        for label in labels:
            first, second = (clips[i] for i in ds.query(label.query_id).clip_ids)
            assert first.trajectory_id == summary.trajectory_of["ep0"] and first.start == second.start
        assert sorted({clips[ds.query(l.query_id).clip_ids[0]].start for l in labels}) == [0, 15]
        assert add_graded_labels(ds, pairs, summary.trajectory_of, "operator-quality", per_pair=2) == 0
        with pytest.raises(RobotDataError, match="episode 'ep9' was not imported"):
            add_graded_labels(ds, [GradedPair("ep9", "ep0", {})], summary.trajectory_of, "operator-quality")
        assert len(ds.labels()) == 4
