import dataclasses
import json

import numpy as np
import pytest
import torch

from embodied_pref.data import Trajectory
from policies.diffusion.bc import BCConfig, StatePolicyConfig, pretrain, pretrain_state_policy
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.training import TrainerConfig
from policies.diffusion.windows import ChunkWindows

CONFIG = DiffusionPolicyConfig(state_dim=3, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, unet="tiny",
                               inference_steps=5)


def toy_demonstrations(n: int, seed: int = 0, length: int = 30) -> list[Trajectory]:
    """Circling at a random phase and speed: the state (cos, sin, speed) fixes every later
    action, a = (-sin, cos) of the angle."""
    rng = np.random.default_rng(seed)
    demos = []
    for _ in range(n):
        phase, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.3)
        angle = phase + speed * np.arange(length + 1)
        obs = np.stack([np.cos(angle), np.sin(angle), np.full_like(angle, speed)], -1).astype(np.float32)
        actions = np.stack([-np.sin(angle[:-1]), np.cos(angle[:-1])], -1).astype(np.float32)
        demos.append(Trajectory(observations=obs, actions=actions, rewards=None))
    return demos


def test_add_noise_then_predicting_the_noise_recovers_the_clean_chunk():
    policy = DiffusionPolicy(CONFIG)
    scheduler = policy.noise_scheduler
    clean = torch.rand(4, 8, 2) * 2 - 1
    noise = torch.randn(4, 8, 2, generator=torch.Generator().manual_seed(0))
    for t in (0, 10, 50, 99):
        timesteps = torch.full((4,), t)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        alpha = scheduler.alphas_cumprod[t]
        recovered = (noisy - (1 - alpha).sqrt() * noise) / alpha.sqrt()
        assert torch.allclose(recovered, clean, atol=2e-3)
    # A denoiser that knows the true noise walks DDIM back to the clean chunk.
    ddim = policy.ddim_scheduler
    ddim.set_timesteps(10)
    x = scheduler.add_noise(clean, noise, torch.full((4,), int(ddim.timesteps[0])))
    for t in ddim.timesteps:
        alpha = scheduler.alphas_cumprod[t]
        eps = (x - alpha.sqrt() * clean) / (1 - alpha).sqrt()
        x = ddim.step(eps, t, x).prev_sample
    assert torch.allclose(x, clean, atol=1e-4)


def test_windows_pad_with_the_first_observation_and_the_last_action():
    demo = toy_demonstrations(1, length=10)[0]
    windows = ChunkWindows([demo], CONFIG)
    # starts -1 .. 10 - 8 + 3 = 5
    assert sorted(windows.index.start.tolist()) == list(range(-1, 6))
    obs, actions, weights = windows.batch(np.array([0, len(windows) - 1]))
    assert obs["state"].shape == (2, 2, 3) and actions.shape == (2, 8, 2)
    assert torch.equal(obs["state"][0, 0], torch.from_numpy(demo.observations[0]))
    assert torch.equal(obs["state"][0, 1], torch.from_numpy(demo.observations[0]))
    assert torch.equal(actions[1, -1], torch.from_numpy(demo.actions[-1]))
    assert torch.equal(actions[1, -3], torch.from_numpy(demo.actions[-1]))
    assert torch.equal(weights, torch.ones(2))


def test_windows_name_the_trajectory_that_does_not_fit():
    bad = Trajectory(observations=np.zeros((11, 4), np.float32), actions=np.zeros((10, 2), np.float32), rewards=None)
    with pytest.raises(ValueError, match=r"trajectories\[1\].observations"):
        ChunkWindows([toy_demonstrations(1)[0], bad], CONFIG)


def test_sampled_actions_respect_the_action_limits_even_untrained():
    torch.manual_seed(0)
    policy = DiffusionPolicy(CONFIG).eval()
    low, high = np.array([-0.5, 0.0]), np.array([0.5, 2.0])
    policy.normalizer.set_limits("action", low, high)
    for sampler in ("ddpm", "ddim"):
        chunk = policy.sample_chunk({"state": torch.randn(64, 2, 3) * 5}, torch.Generator().manual_seed(1), sampler)
        assert (chunk >= torch.tensor(low, dtype=torch.float32) - 1e-5).all()
        assert (chunk <= torch.tensor(high, dtype=torch.float32) + 1e-5).all()
        # ... and spread across them rather than collapsing to one value.
        assert chunk[..., 1].std() > 0.1


@pytest.mark.slow
def test_bc_loss_falls_and_held_out_actions_approach_the_demonstrator(tmp_path):
    demos = toy_demonstrations(40)
    config = BCConfig(steps=600, eval_every=200, progress=False,
                      trainer=TrainerConfig(batch_size=64, learning_rate=1e-3, warmup_steps=50))
    policy, report = pretrain(CONFIG, demos, tmp_path, config)
    losses = [row["val_loss"] for row in report.history]
    assert losses[-1] < 0.6 * losses[0]
    held_out = toy_demonstrations(8, seed=1)
    windows = ChunkWindows(held_out, CONFIG)
    obs, actions, _ = windows.batch(np.arange(0, len(windows), 3))
    predicted = policy.predict_action(obs, torch.Generator().manual_seed(0))
    executed = policy.executed_actions(actions)
    error = (predicted - executed).square().mean().item()
    untrained = DiffusionPolicy(CONFIG).eval()
    untrained.normalizer.load_state_dict(policy.normalizer.state_dict())
    baseline = (untrained.predict_action(obs, torch.Generator().manual_seed(0)) - executed).square().mean().item()
    assert error < 0.5 * baseline
    assert (tmp_path / "policy" / "model.safetensors").exists()
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert [e["value"] for e in best] == sorted(e["value"] for e in best)


def test_state_policy_actions_are_normalized_by_the_demonstrations_range(tmp_path):
    demos = [Trajectory(observations=d.observations, actions=d.actions * np.array([1.0, 0.05], np.float32),
                        rewards=None) for d in toy_demonstrations(6)]
    config = BCConfig(steps=2, eval_every=2, progress=False, trainer=TrainerConfig(batch_size=8, warmup_steps=0))
    policy, _ = pretrain_state_policy(demos, tmp_path, config, StatePolicyConfig(unet="tiny"))
    actions = torch.from_numpy(np.concatenate([d.actions for d in demos]))
    normalized = policy.normalizer.normalize("action", actions)
    # The narrow second dimension spans [-1, 1] too, rather than a twentieth of it.
    assert torch.allclose(normalized.min(0).values, -torch.ones(2), atol=1e-3)
    assert torch.allclose(normalized.max(0).values, torch.ones(2), atol=1e-3)


class Killed(Exception):
    pass


def test_bc_killed_mid_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    demos = toy_demonstrations(6)
    config = BCConfig(steps=20, eval_every=10, progress=False, trainer=TrainerConfig(batch_size=16, warmup_steps=2))
    whole, _ = pretrain(CONFIG, demos, tmp_path / "whole", config)

    def killed_at_the_second_validation(policy):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return {}

    calls: list[int] = []
    with pytest.raises(Killed):
        pretrain(CONFIG, demos, tmp_path / "split", config, evaluate=killed_at_the_second_validation)
    resumed, report = pretrain(CONFIG, demos, tmp_path / "split", config)
    assert report.steps == 20 and [row["step"] for row in report.history] == [10, 20]
    obs = {"state": torch.randn(2, 2, 3)}
    assert torch.allclose(whole.sample_chunk(obs, torch.Generator().manual_seed(0)),
                          resumed.sample_chunk(obs, torch.Generator().manual_seed(0)), atol=1e-5)


def test_a_saved_policy_reloads_and_gives_the_same_actions(tmp_path):
    torch.manual_seed(3)
    policy = DiffusionPolicy(CONFIG).eval()
    policy.normalizer.fit("state", np.random.default_rng(0).normal(2, 3, (100, 3)), "gaussian")
    policy.normalizer.set_limits("action", np.array([-2.0, 0.0]), np.array([2.0, 1.0]))
    policy.save(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "config.json").read_text())["config"]["horizon"] == 8
    loaded = DiffusionPolicy.load(tmp_path / "p")
    obs = {"state": torch.randn(5, 2, 3)}
    for sampler in ("ddpm", "ddim"):
        a = policy.sample_chunk(obs, torch.Generator().manual_seed(7), sampler)
        b = loaded.sample_chunk(obs, torch.Generator().manual_seed(7), sampler)
        assert torch.equal(a, b)
    assert not torch.equal(policy.sample_chunk(obs, torch.Generator().manual_seed(7)),
                           policy.sample_chunk(obs, torch.Generator().manual_seed(8)))


def test_noise_scale_zero_makes_ddim_deterministic_and_one_keeps_the_spread():
    torch.manual_seed(3)
    policy = DiffusionPolicy(dataclasses.replace(CONFIG, noise_scale=0.0)).eval()
    obs = {"state": torch.randn(5, 2, 3)}
    a = policy.sample_chunk(obs, torch.Generator().manual_seed(7))
    assert torch.equal(a, policy.sample_chunk(obs, torch.Generator().manual_seed(8)))
    spread = [policy.sample_chunk(obs, torch.Generator().manual_seed(s), noise_scale=1.0) for s in (7, 8)]
    assert not torch.equal(spread[0], spread[1]) and not torch.equal(a, spread[0])


def test_loading_a_damaged_checkpoint_names_the_file(tmp_path):
    policy = DiffusionPolicy(CONFIG)
    policy.save(tmp_path / "p")
    weights = tmp_path / "p" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors"):
        DiffusionPolicy.load(tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="config.json.*format"):
        DiffusionPolicy.load(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="config.json"):
        DiffusionPolicy.load(tmp_path / "missing")
