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
    assert 0 < quick.ppo_steps < SHORT_PPO_STEPS


def test_experiment_fine_tunes_the_tail_and_reports_every_ablation_arm(tmp_path):
    from embodied_pref.rapl import package_weights
    from embodied_pref.rapl.tcc import TCCConfig
    from embodied_pref.rapl.training import OptimConfig

    config = RaplExperimentConfig(
        quick=True, tasks=("xmagical-avoid",), cross_embodiments=("Shortstick",), train_episodes=9, test_episodes=4,
        demonstrations=2, references=1, budgets=(6,), seeds=(0, 1), ablation_budget=6, alignment_steps=4, rlhf_steps=4,
        tcc=TCCConfig(frames_per_video=4, optim=OptimConfig(epochs=1, batch_size=2)), ppo_steps=0, test_triplets=10,
        out=tmp_path, images=None, threads=1)
    result = rapl.run_rapl_experiment(config)

    arms = list(rapl.ABLATIONS)
    assert len(result["ablation"]) == len(arms) * 2 * 2 * 2  # arms × methods × embodiments × seeds
    main = {(r["method"], r["embodiment"], r["seed"]): r["spearman"] for r in result["rows"] if r["method"] in rapl.LEARNED}
    frozen = {(r["method"], r["embodiment"], r["seed"]): r["spearman"] for r in result["ablation"] if r["arm"] == "imagenet-frozen"}
    assert frozen == main  # the quick encoder is that arm: its rows are reused, not retrained
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
