"""PPO with a CNN policy on pixel observations, paid a visual (RAPL OT or RLHF) reward."""

import dataclasses

import gymnasium
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3.common.torch_layers import NatureCNN

from embodied_pref.rapl.video_reward import FrameVideoReward, OTVideoReward
from envs.franka import env_id as franka_env_id
from envs.xmagical import env_id
from policies.ppo import PPOAgent, PPOConfig, latest_checkpoint
from policies.visual_reward import VisualRewardWrapper

ENV = env_id("Gripper", "pixels", "avoid")  # (112, 112, 3) uint8 observations
EPISODE = 20
ENV_KWARGS = {"max_episode_steps": EPISODE, "render_size": 32}  # short episodes, small reward frames
CONFIG = PPOConfig(n_envs=2, n_steps=16, batch_size=32, n_epochs=1, cnn_features_dim=32, device="cpu", seed=3)


class _TinyEncoder(torch.nn.Module):
    """frames (N, H, W, 3) uint8 -> (N, 8): 4×4 average colours, linearly projected."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(48, 8)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float().permute(0, 3, 1, 2) / 255
        return self.proj(F.adaptive_avg_pool2d(x, 4).flatten(1))


def _video_reward(kind: str):
    torch.manual_seed(0)
    if kind == "rapl":
        return OTVideoReward(_TinyEncoder(), torch.randn(5, 8))
    return FrameVideoReward(torch.nn.Sequential(_TinyEncoder(), torch.nn.Linear(8, 1)))


def _agent(reward, config: PPOConfig = CONFIG, **kwargs) -> PPOAgent:
    return PPOAgent(ENV, config, env_kwargs=ENV_KWARGS, wrapper=lambda env: VisualRewardWrapper(env, reward), **kwargs)


def _replay(reward, seed: int, actions: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """Bare env from reset(seed), then `actions` (T, A), resetting (unseeded) where an episode
    ends: observations after each step, the env's rewards, and the visual reward of each step
    (the change in the prefix return of the episode's rendered frames)."""
    env = gymnasium.make(ENV, render_mode="rgb_array", **ENV_KWARGS)
    env.reset(seed=seed)
    frames, observations, gt, visual = [env.render()], [], [], []
    for action in actions:
        obs, r, terminated, truncated, _ = env.step(action)
        frames.append(env.render())
        emb = reward.embed(np.stack(frames))
        visual.append(reward.prefix_return(emb) - reward.prefix_return(emb[:-1]))
        gt.append(r)
        if terminated or truncated:
            obs, _ = env.reset()
            frames = [env.render()]
        observations.append(obs)
    env.close()
    return observations, np.array(gt), np.array(visual)


def _env_rows(buffer, name: str, i: int) -> np.ndarray:
    """Env i's steps of a rollout buffer's field; PPO's update leaves some fields flattened
    env-major, (n_envs * n_steps, ...)."""
    arr = getattr(buffer, name)
    if buffer.generator_ready and name != "rewards":
        return arr.reshape(buffer.n_envs, buffer.buffer_size, *arr.shape[1:])[i]
    return arr[:, i]


@pytest.mark.parametrize("kind", ["rapl", "rlhf"])
def test_the_agents_envs_pay_the_visual_reward_and_keep_the_ground_truth(kind):
    reward = _video_reward(kind)
    agent = _agent(reward)
    venv = agent.model.get_env()  # the stack PPO steps, image transpose included
    obs = venv.reset()
    assert obs.shape == (2, 3, 112, 112) and obs.dtype == np.uint8
    actions = np.random.default_rng(0).uniform(-1, 1, (EPISODE + 5, 2, 3)).astype(np.float32)
    steps = [venv.step(a) for a in actions]  # crosses an episode end at step 20
    assert [bool(dones.all()) for _, _, dones, _ in steps].index(True) == EPISODE - 1
    for i in range(2):
        observations, gt, visual = _replay(reward, CONFIG.seed + i, actions[:, i])
        np.testing.assert_allclose([r[i] for _, r, _, _ in steps], visual, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([info[i]["gt_reward"] for _, _, _, info in steps], gt, rtol=1e-6)
        assert np.abs(visual - gt).min() > 1e-3  # the two rewards are told apart
        np.testing.assert_array_equal(steps[-1][0][i], observations[-1].transpose(2, 0, 1))
    agent.close()


def test_ppos_rollout_buffer_holds_the_visual_reward():
    reward = _video_reward("rapl")
    agent = _agent(reward)
    assert isinstance(agent.model.policy.features_extractor, NatureCNN)
    assert agent.model.policy.features_extractor.features_dim == 32
    agent.train(None, CONFIG.n_steps * CONFIG.n_envs)  # one rollout, shorter than an episode
    buffer = agent.model.rollout_buffer
    low, high = agent.model.action_space.low, agent.model.action_space.high
    for i in range(2):
        _, gt, visual = _replay(reward, CONFIG.seed + i, np.clip(_env_rows(buffer, "actions", i), low, high))
        np.testing.assert_allclose(buffer.rewards[:, i], visual, rtol=1e-5, atol=1e-6)
        assert not np.allclose(buffer.rewards[:, i], gt)
    agent.close()


def test_cnn_ppo_checkpoints_and_resumes_with_its_reward_normalization(tmp_path):
    config = dataclasses.replace(CONFIG, n_steps=32, batch_size=64, normalize_reward=True, checkpoint_every=64)
    reward = _video_reward("rapl")
    agent = _agent(reward, config, checkpoint_dir=tmp_path / "run")
    agent.train(None, 128)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["agent_128_steps.zip", "agent_64_steps.zip"]
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "agent_128_steps.zip"
    trained = agent.train_env.ret_rms
    assert trained.count == pytest.approx(128, abs=1e-3) and trained.var != 1.0

    resumed = _agent(reward, dataclasses.replace(config, seed=9), checkpoint_dir=tmp_path / "resumed")
    resumed.load(tmp_path / "run" / "agent_64_steps.zip")
    assert resumed.steps_trained == 64 and resumed.train_env.ret_rms.count == pytest.approx(64, abs=1e-3)
    resumed.load(latest_checkpoint(tmp_path / "run"))
    assert resumed.steps_trained == resumed.model.num_timesteps == 128
    restored = resumed.train_env.ret_rms
    assert (restored.mean, restored.var, restored.count) == (trained.mean, trained.var, trained.count)
    env = gymnasium.make(ENV, **ENV_KWARGS)
    for seed in range(3):
        obs = env.reset(seed=seed)[0]
        np.testing.assert_array_equal(agent.act(obs, deterministic=True), resumed.act(obs, deterministic=True))
    env.close()

    resumed.train(None, 64)
    assert resumed.model.num_timesteps == 192
    assert resumed.train_env.ret_rms.count == pytest.approx(192, abs=1e-3)  # kept counting, not restarted
    assert latest_checkpoint(tmp_path / "resumed").name == "agent_192_steps.zip"
    [episode] = resumed.rollouts(1, seed=5)
    assert episode.length == EPISODE and episode.observations.shape == (EPISODE + 1, 112 * 112 * 3)
    agent.close()
    resumed.close()


def test_loading_without_saved_statistics_into_a_normalizing_agent_is_refused(tmp_path):
    reward = _video_reward("rlhf")
    plain = _agent(reward)
    plain.save(tmp_path / "plain")
    normalizing = _agent(reward, dataclasses.replace(CONFIG, normalize_reward=True))
    with pytest.raises(ValueError, match="plain.zip: expected reward normalization statistics"):
        normalizing.load(tmp_path / "plain")
    plain.close()
    normalizing.close()


@pytest.mark.slow
def test_subproc_envs_give_the_same_first_rollout_as_dummy_envs():
    reward = _video_reward("rapl")
    buffers = []
    for vec_env in ("dummy", "subproc"):
        agent = _agent(reward, dataclasses.replace(CONFIG, vec_env=vec_env, normalize_reward=True))
        agent.train(None, CONFIG.n_steps * CONFIG.n_envs)
        buffers.append(agent.model.rollout_buffer)
        agent.close()
    dummy, subproc = buffers
    np.testing.assert_array_equal(dummy.actions, subproc.actions)
    np.testing.assert_array_equal(dummy.observations, subproc.observations)
    np.testing.assert_allclose(dummy.rewards, subproc.rewards, rtol=1e-5, atol=1e-7)
    assert np.abs(dummy.rewards).max() > 0


@pytest.mark.slow
def test_cnn_ppo_trains_on_franka_pixels_in_worker_processes():
    # MuJoCo renders headless (MUJOCO_GL=egl, tests/conftest.py) inside each worker.
    reward = _video_reward("rlhf")
    config = dataclasses.replace(CONFIG, n_envs=2, n_steps=8, batch_size=16, vec_env="subproc")
    agent = PPOAgent(franka_env_id("group", "pixels"), config, env_kwargs={"render_size": 32},
                     wrapper=lambda env: VisualRewardWrapper(env, reward))
    assert agent.model.observation_space.shape == (3, 112, 112)
    assert isinstance(agent.model.policy.features_extractor, NatureCNN)
    agent.train(None, 16)
    assert agent.model.num_timesteps == 16
    rewards = agent.model.rollout_buffer.rewards
    assert np.all(np.isfinite(rewards)) and np.abs(rewards).max() > 0
    agent.close()


class _ReportsTorchThreads(gymnasium.Wrapper):
    def torch_threads(self) -> int:
        return torch.get_num_threads()


def test_subproc_workers_run_one_torch_thread_and_this_process_keeps_its_own():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for vec_env, expected in (("subproc", [1, 1]), ("dummy", [2, 2])):
            agent = PPOAgent(ENV, dataclasses.replace(CONFIG, vec_env=vec_env), env_kwargs=ENV_KWARGS,
                             wrapper=_ReportsTorchThreads)
            assert agent.venv.env_method("torch_threads") == expected
            agent.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
