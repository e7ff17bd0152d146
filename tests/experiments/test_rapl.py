import dataclasses
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from embodied_pref.data import Trajectory
from embodied_pref.experiments import rapl
from embodied_pref.experiments.rapl import QUICK, SHORT_PPO_STEPS, RaplExperimentConfig, triplet_pair_accuracy, videos
from embodied_pref.rapl.triplets import Triplets, synthetic_triplets


def _trajectory(steps: int, value: int) -> Trajectory:
    frames = np.stack([np.full((2, 2, 3), value + t, np.uint8) for t in range(steps + 1)])
    return Trajectory(np.zeros((steps + 1, 1)), np.zeros((steps, 1)), np.ones(steps), frames=frames)


def test_videos_subsample_and_pad_short_episodes():
    out = videos([_trajectory(8, 0), _trajectory(4, 100)], stride=2)
    assert out.shape == (2, 5, 2, 2, 3)
    assert out[0, :, 0, 0, 0].tolist() == [0, 2, 4, 6, 8]
    assert out[1, :, 0, 0, 0].tolist() == [100, 102, 104, 104, 104]


def test_triplet_pair_accuracy_counts_strict_pairs():
    returns = np.array([3.0, 2.0, 1.0, 0.0])
    triplets = synthetic_triplets(returns, 20, np.random.default_rng(0))
    assert triplet_pair_accuracy(returns, triplets) == 1.0
    assert triplet_pair_accuracy(-returns, triplets) == 0.0
    one = Triplets(np.array([0]), np.array([1]), np.array([2]), np.array([True]))
    assert triplet_pair_accuracy(np.array([3.0, 1.0, 2.0, 0.0]), one) == 1.0


def test_config_validation_and_quick_preset():
    with pytest.raises(ValueError, match="tasks"):
        RaplExperimentConfig(tasks=("nope",))
    with pytest.raises(ValueError, match="ppo_methods"):
        RaplExperimentConfig(ppo_methods=("magic",))
    with pytest.raises(ValueError, match="ppo_budget"):
        RaplExperimentConfig(budgets=(25,), ppo_budget=150)
    with pytest.raises(ValueError, match="ablations"):
        RaplExperimentConfig(ablations=("imagenet-magic",))
    with pytest.raises(ValueError, match="alignment_anchor"):
        RaplExperimentConfig(alignment_anchor="elsewhere")
    quick = RaplExperimentConfig(quick=True).resolved()
    assert not quick.quick and quick.fine_tune is False and not quick.start_from_tcc
    assert quick.encoder.pretrained and quick.encoder.pretrained_source == "package" and quick.encoder.freeze_backbone
    assert quick.ablation_tail == 2 and set(quick.ablations) == set(rapl.ABLATIONS)
    assert quick.stride == QUICK["stride"]


def test_episode_videos_are_cached_by_config(tmp_path, monkeypatch):
    calls = []

    def fake_episodes(task, embodiment, n, first_seed, config, expert=False, desc=""):
        calls.append((embodiment, n, config.stride))
        return [_trajectory(8, first_seed + i) for i in range(n)]

    monkeypatch.setattr(rapl, "episodes", fake_episodes)
    config = RaplExperimentConfig(out=tmp_path, stride=2)
    first, returns = rapl.episode_videos("xmagical-avoid", "Gripper", 3, 5, config)
    again, returns_again = rapl.episode_videos("xmagical-avoid", "Gripper", 3, 5, config)
    assert len(calls) == 1 and first.shape == (3, 5, 2, 2, 3) and first.dtype == again.dtype
    assert torch.equal(first, again) and np.array_equal(returns, returns_again)
    rapl.episode_videos("xmagical-avoid", "Gripper", 3, 5, RaplExperimentConfig(out=tmp_path, stride=4))
    rapl.episode_videos("xmagical-avoid", "Shortstick", 3, 5, config)
    rapl.episode_videos("xmagical-avoid", "Gripper", 3, 5, RaplExperimentConfig(out=tmp_path, stride=2, cache_videos=False))
    assert len(calls) == 4 and not list(tmp_path.glob("cache/*.tmp*"))


def test_quick_ppo_is_a_short_run():
    quick = RaplExperimentConfig(quick=True).resolved()
    assert 0 < quick.ppo_steps < SHORT_PPO_STEPS and quick.ppo_seeds == (0,)
    assert quick.ppo == RaplExperimentConfig().ppo and quick.ppo.normalize_reward


def _tiny_config(tmp_path, **fields) -> RaplExperimentConfig:
    from embodied_pref.rapl.tcc import TCCConfig
    from embodied_pref.rapl.training import OptimConfig

    return RaplExperimentConfig(**{
        **dict(quick=True, tasks=("xmagical-avoid",), cross_embodiments=("Shortstick",), train_episodes=9, test_episodes=4,
               demonstrations=2, references=1, budgets=(6,), seeds=(0, 1), ablation_budget=6, alignment_steps=4,
               rlhf_steps=4, tcc=TCCConfig(frames_per_video=4, optim=OptimConfig(epochs=1, batch_size=2)), ppo_steps=0,
               test_triplets=10, out=tmp_path, images=None, threads=1),
        **fields})


def test_experiment_fine_tunes_the_tail_and_reports_every_ablation_arm(tmp_path):
    from embodied_pref.rapl import package_weights

    config = _tiny_config(tmp_path)
    result = rapl.run_rapl_experiment(config)

    arms = list(rapl.ABLATIONS)
    assert len(result["ablation"]) == len(arms) * 2 * 2 * 2  # arms × methods × embodiments × seeds
    main = {(r["method"], r["embodiment"], r["seed"]): r["spearman"] for r in result["rows"] if r["method"] in rapl.LEARNED}
    frozen = {(r["method"], r["embodiment"], r["seed"]): r["spearman"] for r in result["ablation"] if r["arm"] == "imagenet-frozen"}
    assert frozen == main  # the quick encoder is that arm: its rows are reused, not retrained
    positive = {(r["method"], r["embodiment"], r["seed"]): r["spearman"] for r in result["ablation"]
                if r["arm"] == "imagenet-frozen-positive"}
    # Only RAPL's loss differs in that arm: RLHF's rows are the main ones, RAPL's are retrained.
    assert {k: v for k, v in positive.items() if k[0] == "rlhf"} == {k: v for k, v in main.items() if k[0] == "rlhf"}
    assert {k: v for k, v in positive.items() if k[0] == "rapl"} != {k: v for k, v in main.items() if k[0] == "rapl"}
    assert not (tmp_path / "checkpoints/xmagical-avoid/imagenet-frozen-positive/seed0_n6/rlhf").exists()
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {arm} | rapl |" in table for arm in arms)

    imagenet = package_weights.efficientnet_lite0_state_dict()

    def weights(arm: str) -> dict:
        return torch.load(tmp_path / f"checkpoints/xmagical-avoid/{arm}/seed0_n6/rapl/last.pt", weights_only=False)["model"]

    tail, main_model = weights("imagenet-tail"), weights("main")  # the quick preset fine-tunes conv_head and bn2
    assert not torch.equal(tail["encoder.backbone.conv_head.weight"], imagenet["conv_head.weight"])
    assert torch.equal(tail["encoder.backbone.blocks.6.0.conv_pw.weight"], imagenet["blocks.6.0.conv_pw.weight"])
    assert torch.equal(tail["encoder.backbone.bn2.running_mean"], imagenet["bn2.running_mean"])
    assert torch.equal(main_model["encoder.backbone.conv_head.weight"], imagenet["conv_head.weight"])
    # Every arm's features are standardized on the training videos, but the raw arm's.
    assert main_model["encoder.feature_std"].ne(1.0).any() and tail["encoder.feature_std"].ne(1.0).any()
    assert weights("imagenet-frozen-raw")["encoder.feature_std"].eq(1.0).all()


def test_ppo_runs_per_seed_on_that_seeds_reward_and_reports_success_and_violations(tmp_path, monkeypatch):
    from policies.ppo import PPOConfig

    config = _tiny_config(tmp_path, ablations=(), ppo_budget=6, ppo_seeds=(0, 1), ppo_methods=("rapl", "rlhf", "gt"),
                          ppo_steps=64, ppo_eval_episodes=2,
                          ppo=PPOConfig(n_envs=1, n_steps=32, batch_size=32, n_epochs=1, device="cpu", normalize_reward=True))
    result = rapl.run_rapl_experiment(config)

    runs = {(r["method"], r["seed"]): r for r in result["ppo"]}
    assert set(runs) == {(m, s) for m in ("rapl", "rlhf", "gt") for s in (0, 1)}
    for run in runs.values():
        assert 0.0 <= run["success"] <= 1.0 and 0.0 <= run["violation_rate"] <= 1.0 and run["steps"] == 64
        assert run["gt_return"] < 0.0 and run["wall_s"] > 0.0  # avoid's ground truth is a penalty
    # each PPO seed trains on the reward learned from that seed's triplets
    assert runs[("rapl", 0)]["train_spearman"] != runs[("rapl", 1)]["train_spearman"]
    table = (tmp_path / "table.md").read_text()
    assert "| xmagical-avoid | rapl | 64 |" in table and "violation rate" in table and "short runs" in table

    def no_training(*args, **kwargs):
        raise AssertionError("a finished PPO run was trained again")

    monkeypatch.setattr(rapl, "_ppo_outcomes", no_training)
    assert rapl.run_rapl_experiment(config)["ppo"] == result["ppo"]  # the same rewards: every run is kept
    trained = []
    monkeypatch.setattr(rapl, "_ppo_outcomes", lambda task, reward, *args: trained.append(reward) or runs[("gt", 0)])
    rapl.run_rapl_experiment(dataclasses.replace(config, ppo_paced_ot=False))
    # Paid otherwise along the episode, RAPL's reward trains again; RLHF's and the ground truth's runs are kept.
    assert [type(r).__name__ for r in trained] == ["OTVideoReward", "OTVideoReward"] and trained[0].horizon is None
    monkeypatch.undo()
    changed = rapl.run_rapl_experiment(dataclasses.replace(config, alignment_steps=5, rlhf_steps=5, ppo_methods=("rapl", "rlhf")))
    assert {r["seed"] for r in changed["ppo"]} == {0, 1}  # rewards trained otherwise: their runs are not reused
    assert changed["ppo"][0]["train_spearman"] != runs[("rapl", 0)]["train_spearman"]


def test_ppo_seeds_must_be_experiment_seeds():
    with pytest.raises(ValueError, match="ppo_seeds"):
        RaplExperimentConfig(seeds=(0, 1), ppo_seeds=(2,))
    RaplExperimentConfig(seeds=(0, 1), ppo_seeds=(2,), ppo_steps=0)


RANK_SCRIPT = """
import json, os, pickle, sys
from pathlib import Path
from embodied_pref.experiments.rapl import run_rapl_experiment
result = run_rapl_experiment(pickle.loads(Path(sys.argv[1]).read_bytes()))
Path(sys.argv[2], f"rank{os.environ['RANK']}.json").write_text(json.dumps({"rows": len(result.get("rows", []))}))
"""


def test_under_torchrun_every_rank_trains_and_rank_0_alone_writes(tmp_path):
    out = tmp_path / "run"
    # the trainable tail: RAPL and RLHF train copies of the encoder, whose every trainable parameter DDP must see used
    encoder = dataclasses.replace(QUICK["encoder"], trainable_tail=2)
    config = _tiny_config(out, ablations=(), seeds=(0,), checkpoint_every=1, encoder=encoder)
    (tmp_path / "config.pkl").write_bytes(pickle.dumps(config))
    (tmp_path / "ranks.py").write_text(RANK_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "ranks.py"), str(tmp_path / "config.pkl"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["rows"] > 0 and ranks[1]["rows"] == 0  # rank 1 returned {} and wrote no report
    assert (out / "table.md").is_file() and json.loads((out / "results.json").read_text())["rows"]
    history = torch.load(out / "checkpoints/xmagical-avoid/main/seed0_n6/rapl/last.pt", weights_only=False)["history"]
    assert len(history) >= 1 and np.isfinite(history[-1]["loss"])
    assert not list(out.glob("cache/*.tmp*"))
