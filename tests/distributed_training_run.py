"""One process of the `torchrun` job of test_distributed_training.py: fits the reward ensemble
and RAPL's alignment on small seeded data, then saves what this rank ended with.

    torchrun --standalone --nproc_per_node 2 tests/distributed_training_run.py OUT_DIR

writes OUT_DIR/rank{RANK}.pt; `fit_both()` in a plain process is the single-process run.
"""

import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # this checkout first

import numpy as np  # noqa: E402
import torch  # noqa: E402

import test_reward_training as reward_data  # noqa: E402
from embodied_pref.rapl.alignment import AlignmentConfig, train_alignment  # noqa: E402
from embodied_pref.rapl.training import OptimConfig  # noqa: E402
from embodied_pref.rapl.triplets import synthetic_triplets  # noqa: E402
from embodied_pref.reward_nets import RewardEnsemble  # noqa: E402
from embodied_pref.reward_training import RewardTrainingConfig, train_reward  # noqa: E402
from rapl.test_alignment import _projection, _task  # noqa: E402

REWARD_TRAINING = RewardTrainingConfig(max_epochs=80, patience=5, batch_size=32, seed=3, device="cpu", progress=False)
"""Stops early (best epoch 44 of 50), so the processes must agree on when."""
RAPL_BATCH = 16
"""Triplets per step over all processes: each of N processes draws RAPL_BATCH / N."""


def reward_pairs():
    """150 oracle-labelled pairs of 10-step clips of test_reward_training's nonlinear reward."""
    return reward_data.oracle_pairs(reward_data.synthetic_clips(200, 0), 150, 0)


def rapl_data():
    """(videos (60, 10, 16), train triplets over videos 0-39, quality (60,) of every video)."""
    videos, quality = _task()
    return videos, synthetic_triplets(quality[:40], 80, np.random.default_rng(1)), quality


def fit_both() -> dict:
    """This process's share of both fits (every fit when it runs alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ensemble = RewardEnsemble(reward_data.D, reward_data.A, reward_data.CONFIG)
    report = train_reward(ensemble, reward_pairs(), REWARD_TRAINING)
    videos, triplets, _ = rapl_data()
    projection = _projection()
    optim = OptimConfig(epochs=15, batch_size=RAPL_BATCH // world_size, learning_rate=1e-2, device="cpu")
    history = train_alignment(projection, videos, triplets, AlignmentConfig(optim=optim))
    return {"reward": ensemble.state_dict(), "best_epoch": report.best_epoch, "epochs": len(report.train_loss),
            "validation_loss": report.validation_loss, "rapl": projection.state_dict(), "rapl_history": history}


if __name__ == "__main__":
    result = fit_both()
    torch.save(result, Path(sys.argv[1]) / f"rank{os.environ['RANK']}.pt")
