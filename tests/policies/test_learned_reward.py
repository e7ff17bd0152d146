"""Deferred learned rewards (one `reward_fn` call per rollout) train PPO on the same numbers as
per-step rewards, episodes ending inside the rollout by termination and by truncation."""

import gymnasium
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from envs.xmagical import env_id
from policies.learned_reward import DeferredRewardRelabel, LearnedRewardVecEnv
from policies.ppo import PPOAgent, PPOConfig

ENV = env_id("Longstick", "state")
EPISODE = 12
"""Steps before the env truncates an episode (max_episode_steps)."""
TERMINATE_AT = 7
N_ENVS, N_STEPS, ROLLOUTS = 2, 32, 3


class _EveryOtherEpisodeTerminates(gymnasium.Wrapper):
    """Terminates every second episode after TERMINATE_AT steps; the others truncate at the
    env's time limit. `ends` lists how each episode ended."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.ends: list[str] = []
        self._step = 0

    def reset(self, **kwargs):
        self._step = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._step += 1
        terminated = terminated or (len(self.ends) % 2 == 0 and self._step == TERMINATE_AT)
        if terminated or truncated:
            self.ends.append("terminated" if terminated else "truncated")
        return obs, reward, terminated, truncated and not terminated, info


class _CountedRewardNet:
    """A small untrained reward ensemble r(s, a, s') (seeded), counting its calls."""

    def __init__(self) -> None:
        env = gymnasium.make(ENV)
        torch.manual_seed(0)
        self.net = RewardEnsemble(env.observation_space.shape[0], env.action_space.shape[0],
                                  RewardNetConfig(hidden_sizes=(16, 16), use_next_state=True, ensemble_size=2))
        self.calls = 0

    def __call__(self, obs, acts, next_obs):
        self.calls += 1
        return self.net.predict(obs, acts, next_obs)


def _trained(deferred: bool, normalize_reward: bool) -> tuple[PPOAgent, _CountedRewardNet]:
    config = PPOConfig(n_envs=N_ENVS, n_steps=N_STEPS, batch_size=32, n_epochs=2, device="cpu", seed=0,
                       deferred_reward=deferred, normalize_reward=normalize_reward)
    agent = PPOAgent(ENV, config, env_kwargs={"max_episode_steps": EPISODE}, wrapper=_EveryOtherEpisodeTerminates)
    reward = _CountedRewardNet()
    agent.train(reward, N_ENVS * N_STEPS * ROLLOUTS)
    return agent, reward


@pytest.fixture(scope="module", params=[False, True], ids=["raw", "normalized"])
def per_step_and_deferred(request):
    return _trained(False, request.param), _trained(True, request.param)


def test_deferred_and_per_step_rewards_fill_the_same_rollout_buffer(per_step_and_deferred):
    (per_step, _), (deferred, _) = per_step_and_deferred
    ends = [end for env_ends in deferred.venv.get_attr("ends") for end in env_ends]
    assert {"terminated", "truncated"} <= set(ends)  # both inside the rollouts, not only at their ends
    a, b = per_step.model.rollout_buffer, deferred.model.rollout_buffer
    assert np.abs(a.rewards).max() > 0.01 and np.ptp(a.rewards) > 0.01
    for field in ("rewards", "returns", "advantages", "values"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field), atol=1e-5, err_msg=field)
    if per_step.config.normalize_reward:
        rms_a, rms_b = per_step.train_env.ret_rms, deferred.train_env.ret_rms
        np.testing.assert_allclose([rms_b.mean, rms_b.var, rms_b.count], [rms_a.mean, rms_a.var, rms_a.count], rtol=1e-6)
        np.testing.assert_allclose(deferred.train_env.returns, per_step.train_env.returns, rtol=1e-6)
        assert deferred.train_env.training


def test_deferred_and_per_step_rewards_train_the_same_policy(per_step_and_deferred):
    (per_step, _), (deferred, _) = per_step_and_deferred
    a, b = per_step.model.policy.state_dict(), deferred.model.policy.state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    assert any(not torch.equal(a[name], PPOAgent(ENV, per_step.config).model.policy.state_dict()[name]) for name in a)


def test_deferred_rewards_call_the_reward_once_per_rollout(per_step_and_deferred):
    (_, per_step_reward), (_, deferred_reward) = per_step_and_deferred
    assert deferred_reward.calls == ROLLOUTS
    assert per_step_reward.calls == N_STEPS * ROLLOUTS


def test_deferred_wrapper_pays_zero_then_what_per_step_pays():
    reward = _CountedRewardNet()
    per_step = LearnedRewardVecEnv(make_vec_env(ENV, n_envs=2, seed=0, env_kwargs={"max_episode_steps": EPISODE}), reward)
    deferred = LearnedRewardVecEnv(make_vec_env(ENV, n_envs=2, seed=0, env_kwargs={"max_episode_steps": EPISODE}),
                                   reward, deferred=True)
    per_step.reset(), deferred.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 2, 2)).astype(np.float32)
    paid, dones = [], []
    for step_actions in actions:
        _, rewards, done, _ = per_step.step(step_actions)
        _, placeholder, _, infos = deferred.step(step_actions)
        step_actions[:] = 0  # the wrapper keeps its own copy of the actions
        np.testing.assert_array_equal(placeholder, 0.0)
        assert all("gt_reward" in info for info in infos)
        paid.append(rewards), dones.append(done)
    calls = reward.calls
    deferred_rewards, deferred_dones = deferred.deferred_rewards()
    assert reward.calls == calls + 1
    np.testing.assert_array_equal(deferred_dones, dones)
    assert deferred_dones[EPISODE - 1].all()  # paid on the terminal observations, as per step
    np.testing.assert_allclose(deferred_rewards, paid, atol=1e-6)
    assert deferred.deferred_rewards()[0].shape == (0, 2)


class _StopAfter(BaseCallback):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def _on_step(self) -> bool:
        return self.n_calls < self.steps


def test_a_stopped_rollout_leaves_the_normalizer_learning():
    config = PPOConfig(n_envs=2, n_steps=16, batch_size=32, n_epochs=1, device="cpu", normalize_reward=True)
    agent = PPOAgent(ENV, config)
    agent.venv.reward_fn, agent.venv.deferred = _CountedRewardNet(), True
    relabel = DeferredRewardRelabel(agent.venv, agent.train_env)
    agent.model.learn(total_timesteps=64, callback=[relabel, _StopAfter(5)])
    assert agent.train_env.training
