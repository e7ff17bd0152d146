import numpy as np
import pytest

from embodied_pref.data import Trajectory
from embodied_pref.experiments.rapl import QUICK, RaplExperimentConfig, triplet_pair_accuracy, videos
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
    quick = RaplExperimentConfig(quick=True).resolved()
    assert not quick.quick and quick.fine_tune is False and quick.start_from_tcc
    assert quick.encoder.pretrained is False and quick.stride == QUICK["stride"]
