"""`collect --task crafter-…` and `demo --task crafter-…` end to end at a tiny budget."""

import imageio_ffmpeg
import numpy as np

import envs.crafter as cr
from embodied_pref.cli import main
from embodied_pref.store import PreferenceDataset


def test_collect_records_crafter_episodes_with_frames_and_previews(tmp_path):
    dataset = tmp_path / "ds"
    main(["collect", "--dataset", str(dataset), "--task", "crafter-thrift", "--episodes", "2",
          "--qualities", "0.0", "1.0", "--violating-fraction", "0.5", "--clip-length", "20",
          "--clips-per-episode", "1", "--frames"])
    with PreferenceDataset.open(dataset) as store:
        trajectories = [store.trajectory(i) for i in store.trajectory_ids()]
        assert [t.metadata["quality"] for t in trajectories] == [0.0, 1.0]
        assert sum(t.metadata["violates_preference"] for t in trajectories) == 1
        for t in trajectories:
            assert t.embodiment == "Player" and t.env_id == cr.env_id("thrift", "state")
            assert t.observations.shape[1] == cr.STATE_DIM and t.actions.shape[1] == 1
            assert t.frames.shape[1:] == (64, 64, 3) and len(t.frames) == t.length + 1
            assert 0 <= t.metadata["eval_score"] <= 1
        clips = store.clips()
        assert len(clips) == 2
        for clip in clips:
            reader = imageio_ffmpeg.read_frames(str(store.preview_path(clip.id)))
            assert next(reader)["codec"] == "h264"
            assert sum(1 for _ in reader) == clip.length + 1
        # The scripted player (quality 1) unlocks more than the random one.
        assert trajectories[1].metadata["eval_score"] > trajectories[0].metadata["eval_score"]


def test_demo_on_crafter_reports_scores_of_ppo_and_random(tmp_path, capsys):
    main(["demo", "--task", "crafter-achieve", "--runs-dir", str(tmp_path), "--initial-episodes", "3",
          "--eval-episodes", "1", "--loop.iterations", "1", "--loop.labels-per-iteration", "10",
          "--loop.clip-length", "20", "--loop.clips-per-trajectory", "3", "--loop.policy-steps-per-iteration", "64",
          "--ppo.n-envs", "1", "--ppo.n-steps", "64", "--ppo.batch-size", "64", "--ppo.n-epochs", "1",
          "--ppo.device", "cpu", "--reward-training.max-epochs", "3"])
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| labels used | 10 |" in report
    assert "Crafter score: PPO on learned reward (64 steps)" in report and "Crafter score: random policy" in report
    rates = [line for line in report.splitlines() if line.startswith("| collect_wood |")]
    assert len(rates) == 1 and all(0 <= float(v) <= 100 for v in rates[0].strip("|").split("|")[1:])
    with PreferenceDataset.open(tmp_path / "demo" / "dataset") as store:
        assert len(store.labels()) == 10
        assert np.isfinite(store.get_meta("loop")["records"][0]["reward_validation_accuracy"] or 0.0)
