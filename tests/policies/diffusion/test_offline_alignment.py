"""Offline alignment on recorded episodes: a BC policy that does both of two behaviours,
weighted towards the one a reward prefers, reproduces it better and the other worse on
held-out episodes (action error and denoising error), and the other way round for the
opposite reward."""

import numpy as np
import pytest
import torch

from embodied_pref.data import Trajectory
from policies.diffusion.bc import BCConfig, pretrain
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.offline import OfflineRWRConfig, alignment_report, return_weights, train_offline_rwr
from policies.diffusion.training import TrainerConfig

CONFIG = DiffusionPolicyConfig(state_dim=2, action_dim=1, horizon=8, n_obs_steps=2, n_action_steps=4, unet="tiny",
                               noise_scale=1.0)


def episodes(sign: float, n: int, seed: int) -> list[Trajectory]:
    """States say nothing about the behaviour; the actions are sign · 0.6 plus noise."""
    rng = np.random.default_rng(seed)
    return [Trajectory(observations=rng.normal(size=(21, 2)),
                       actions=sign * 0.6 + 0.05 * rng.normal(size=(20, 1)), rewards=None) for _ in range(n)]


def action_reward(sign: float):
    return lambda obs, acts, next_obs: (sign * acts[:, 0]).astype(np.float32)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    demos = episodes(1.0, 8, 0) + episodes(-1.0, 8, 1)
    policy, _ = pretrain(CONFIG, demos, tmp_path_factory.mktemp("bc"),
                         BCConfig(steps=400, eval_every=400, progress=False, val_fraction=0.0,
                                  trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=20, batch_size=64)))
    return policy


def test_weights_follow_the_learned_return():
    recorded = episodes(1.0, 2, 2) + episodes(-1.0, 2, 3)
    weights = return_weights(recorded, action_reward(1.0), temperature=0.5, max_weight=20.0)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[:2].min() > 10 * weights[2:].max()
    flipped = return_weights(recorded, action_reward(-1.0), temperature=0.5, max_weight=20.0)
    assert flipped[2:].min() > 10 * flipped[:2].max()


def test_offline_rwr_moves_the_policy_towards_the_preferred_recordings(pretrained, tmp_path):
    recorded = episodes(1.0, 8, 4) + episodes(-1.0, 8, 5)
    keeps, breaks = episodes(1.0, 4, 6), episodes(-1.0, 4, 7)
    config = OfflineRWRConfig(steps=150, progress=False,
                              trainer=TrainerConfig(learning_rate=3e-4, warmup_steps=10, batch_size=64))
    before = alignment_report(pretrained, keeps, breaks, seed=0)
    towards, log = train_offline_rwr(pretrained, recorded, action_reward(1.0), tmp_path / "up", config)
    away, _ = train_offline_rwr(pretrained, recorded, action_reward(-1.0), tmp_path / "down", config)
    after, opposite = alignment_report(towards, keeps, breaks, seed=0), alignment_report(away, keeps, breaks, seed=0)
    assert log and log[-1]["step"] == 150
    assert after.log_likelihood_ratio > before.log_likelihood_ratio + 0.02, (before, after)
    assert opposite.log_likelihood_ratio < before.log_likelihood_ratio - 0.02, (before, opposite)
    assert after.action_margin > 1.0 > -1.0 > opposite.action_margin, (before, after, opposite)
    assert after.action_error_preferred < after.action_error_dispreferred
    again = alignment_report(towards, keeps, breaks, seed=0)
    assert again == after  # same windows, noise and timesteps for the same seed


def test_the_anchor_keeps_the_policy_near_the_pretrained_one(pretrained, tmp_path):
    recorded = episodes(1.0, 8, 4) + episodes(-1.0, 8, 5)
    keeps, breaks = episodes(1.0, 4, 6), episodes(-1.0, 4, 7)
    base = dict(steps=150, progress=False, trainer=TrainerConfig(learning_rate=3e-4, warmup_steps=10, batch_size=64))
    free, _ = train_offline_rwr(pretrained, recorded, action_reward(1.0), tmp_path / "free",
                                OfflineRWRConfig(anchor_weight=0.0, **base))
    held, _ = train_offline_rwr(pretrained, recorded, action_reward(1.0), tmp_path / "held",
                                OfflineRWRConfig(anchor_weight=50.0, **base))
    before = alignment_report(pretrained, keeps, breaks, seed=0).log_likelihood_ratio
    moved = {name: alignment_report(p, keeps, breaks, seed=0).log_likelihood_ratio - before
             for name, p in (("free", free), ("held", held))}
    assert 0 <= moved["held"] < 0.5 * moved["free"], moved
    with pytest.raises(ValueError, match="anchor_weight"):
        OfflineRWRConfig(anchor_weight=-1.0)
