"""The robot walkthrough end to end at a tiny size, on real MuJoCo physics: a pretrained
policy's rollouts recorded with two cameras as LeRobot v3.0 and robomimic, imported, labelled,
a reward fit, the policy aligned offline (RWR, DPO), reported on held-out recordings and in
the simulator, exported and run by the deployment runtime."""

import json

import numpy as np

from embodied_pref.experiments.robot_walkthrough import RobotWalkthroughConfig, run_robot_walkthrough
from embodied_pref.recordings.lerobot import lerobot_info
from embodied_pref.recordings.robomimic import robomimic_info
from embodied_pref.store import PreferenceDataset
from policies.diffusion.bc import BCConfig
from policies.diffusion.dpo import DPOConfig
from policies.diffusion.offline import OfflineRWRConfig
from policies.diffusion.training import TrainerConfig


def test_recordings_to_a_deployed_policy(tmp_path):
    trainer = TrainerConfig(learning_rate=1e-3, warmup_steps=5, batch_size=32)
    config = RobotWalkthroughConfig(
        demonstrations=6, bc=BCConfig(steps=60, eval_every=60, progress=False, trainer=trainer),
        recorded_episodes=8, episode_steps=45, camera_size=16, labels=24, labels_per_round=12,
        clip_length=15, rwr=OfflineRWRConfig(steps=10, progress=False, trainer=trainer),
        dpo=DPOConfig(steps=10, progress=False, trainer=trainer), sim_episodes=2, deploy_steps=9, out=tmp_path)
    result = run_robot_walkthrough(config)

    info = lerobot_info(tmp_path / "recordings" / "lerobot")
    assert (info.version, info.total_episodes, info.total_frames) == ("v3.0", 8, 8 * 46)
    assert set(info.camera_keys) == {"observation.images.front", "observation.images.top"}
    assert len(robomimic_info(tmp_path / "recordings" / "robomimic.hdf5").demos) == 8
    with PreferenceDataset.open(tmp_path / "dataset") as dataset:
        assert len(dataset.trajectory_ids()) == 8 and len(dataset.labels()) == 24
        assert len({dataset.trajectory_info(i)["video_file"] for i in dataset.trajectory_ids()}) == 1

    rows = {row["policy"]: row for row in result["rows"]}
    assert set(rows) == {"pretrained", "rwr", "dpo"}
    for row in rows.values():
        assert 0 <= row["violation_rate"] <= 1 and 0 <= row["success"] <= 1
        assert np.isfinite(row["labels_log_likelihood_ratio"]) and row["labels_action_error_preferred"] >= 0
    assert 0 <= result["reward_accuracy_held_out_labels"] <= 1 and 0 <= result["reward_accuracy_held_out_gt"] <= 1
    assert result["held_out_episodes"] == 2 == result["held_out_keep"] + result["held_out_break"]
    assert 0 < result["held_out_labels"] < 24
    for method in ("rwr", "dpo"):  # align-offline's own outputs, one directory per method
        report = json.loads((tmp_path / method / "report.json").read_text())
        assert report["method"] == method and report["held_out_episodes"] == 2
        assert (tmp_path / method / "policy" / "config.json").is_file() and (tmp_path / method / "reward.pt").is_file()
    assert result["deployed"] in ("rwr", "dpo")
    assert (tmp_path / "export" / "deploy.json").is_file()
    assert 0 < result["deploy_chunk_ms_p50"] <= result["deploy_chunk_ms_p95"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["deployed"] == result["deployed"]
    assert "log-likelihood ratio" in (tmp_path / "table.md").read_text()
