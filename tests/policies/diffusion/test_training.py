import json

import numpy as np
import pytest
import torch

from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.normalizer import Normalizer
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.training import PolicyTrainer, TopKCheckpoints, TrainerConfig


def test_normalizer_maps_limits_to_unit_range_and_standardizes_states():
    normalizer = Normalizer({"action": 2, "state": 3})
    normalizer.set_limits("action", np.array([-2.0, 0.0]), np.array([2.0, 10.0]))
    x = torch.tensor([[-2.0, 0.0], [2.0, 10.0], [0.0, 5.0]])
    assert torch.allclose(normalizer.normalize("action", x), torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    states = np.random.default_rng(0).normal([1.0, -3.0, 7.0], [2.0, 0.5, 0.0], (500, 3))
    normalizer.fit("state", states, "gaussian")
    z = normalizer.normalize("state", torch.as_tensor(states, dtype=torch.float32))
    assert torch.allclose(z[:, :2].mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(z[:, :2].std(0), torch.ones(2), atol=1e-2)
    assert torch.allclose(z[:, 2], torch.zeros(500))  # a constant feature maps to 0, not to inf
    assert torch.allclose(normalizer.unnormalize("state", z), torch.as_tensor(states, dtype=torch.float32), atol=1e-4)
    with pytest.raises(ValueError, match="'state': values contain NaN"):
        normalizer.fit("state", np.full((3, 3), np.nan), "gaussian")


def test_ema_weights_lag_the_trained_weights_and_catch_up():
    config = DiffusionPolicyConfig(state_dim=2, action_dim=1, horizon=4, n_obs_steps=1, n_action_steps=1, unet="tiny")
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    start = [p.detach().clone() for p in policy.parameters()]
    trainer = PolicyTrainer(policy, TrainerConfig(learning_rate=1e-2, warmup_steps=0), total_steps=50)
    obs, actions = {"state": torch.randn(16, 1, 2)}, torch.rand(16, 4, 1) * 2 - 1
    for _ in range(50):
        trainer.update(policy.bc_loss(obs, actions, generator=torch.Generator().manual_seed(0)))
    averaged = trainer.averaged()
    moved = sum((p - s).abs().sum() for p, s in zip(policy.parameters(), start))
    ema_moved = sum((p - s).abs().sum() for p, s in zip(averaged.parameters(), start))
    assert 0 < ema_moved < moved  # the average trails the latest weights
    assert not any(p.requires_grad for p in averaged.parameters())


def test_top_k_keeps_the_best_checkpoints_by_the_named_metric(tmp_path):
    saved = []

    def save(path):
        path.mkdir(parents=True)
        saved.append(path.name)

    top = TopKCheckpoints(tmp_path, "eval_score", "max", k=2)
    for step, value in [(1, 0.2), (2, 0.5), (3, 0.1), (4, 0.7)]:
        top.consider(value, step, save)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["step-0000002-eval_score=0.5000",
                                                                        "step-0000004-eval_score=0.7000"]
    assert top.best.name == "step-0000004-eval_score=0.7000"
    assert "step-0000003-eval_score=0.1000" not in saved  # never written: worse than both kept
    assert [e["step"] for e in json.loads((tmp_path / "best.json").read_text())] == [4, 2]
    assert TopKCheckpoints(tmp_path, "eval_score", "max", k=2).best == top.best  # the index survives a restart
