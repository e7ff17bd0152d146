import gymnasium
import numpy as np
from stable_baselines3.common.env_util import make_vec_env

from envs.xmagical import env_id
from policies.learned_reward import LearnedRewardVecEnv
from policies.ppo import PPOAgent, PPOConfig

ENV = env_id("Longstick", "state")  # 50-step episodes keep these tests short


def test_learned_reward_replaces_reward_and_keeps_ground_truth():
    seen = []

    def reward_fn(obs, acts, next_obs):
        seen.append((obs.copy(), acts.copy(), next_obs.copy()))
        return next_obs[:, 0] * 10 + acts[:, 0]

    venv = LearnedRewardVecEnv(make_vec_env(ENV, n_envs=2, seed=0), reward_fn)
    obs = venv.reset()
    for step in range(50):
        actions = np.full((2, 2), 0.5, dtype=np.float32)
        next_obs, rewards, dones, infos = venv.step(actions)
        last_obs, last_acts, reward_next = seen[-1]
        np.testing.assert_array_equal(last_obs, obs)
        np.testing.assert_allclose(rewards, reward_next[:, 0] * 10 + 0.5, rtol=1e-6)
        assert all("gt_reward" in info for info in infos)
        assert not np.allclose(rewards, [info["gt_reward"] for info in infos])
        if dones.any():
            # At the episode's end the learned reward sees the terminal state, not the reset one.
            assert step == 49
            np.testing.assert_array_equal(reward_next[0], infos[0]["terminal_observation"])
            assert not np.array_equal(reward_next[0], next_obs[0])
        obs = next_obs
    assert dones.all()


def test_ppo_agent_trains_saves_and_reloads(tmp_path):
    agent = PPOAgent(ENV, PPOConfig(n_envs=2, n_steps=64, batch_size=64, n_epochs=1, device="cpu"))
    agent.train(lambda o, a, n: np.zeros(len(o), np.float32), 256)
    assert agent.steps_trained == 256
    episodes = agent.rollouts(2, seed=5)
    assert [e.length for e in episodes] == [50, 50]
    assert all(e.rewards is not None and e.rewards.max() <= 0 for e in episodes)
    obs = gymnasium.make(ENV).reset(seed=3)[0]
    agent.save(tmp_path / "agent.zip")
    other = PPOAgent(ENV, PPOConfig(n_envs=2, n_steps=64, batch_size=64, n_epochs=1, device="cpu", seed=9))
    other.load(tmp_path / "agent.zip")
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), other.act(obs, deterministic=True))
    assert other.steps_trained >= 256
