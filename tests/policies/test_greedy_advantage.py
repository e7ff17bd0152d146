import gymnasium as gym
import numpy as np
import pytest
import torch

from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from envs.xmagical import env_id
from policies.greedy_advantage import GreedyAdvantageAgent, GreedyAdvantageConfig, GreedyAdvantagePolicy


def _peaked_advantage(obs, acts, next_obs):
    """Â(s, a) = −|a − target(s)|², target(s) = clip(s[:A]), largest at the target."""
    target = np.clip(obs[:, : acts.shape[1]], -1, 1)
    return -((acts - target) ** 2).sum(1)


def test_greedy_policy_finds_the_advantage_maximum():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = GreedyAdvantagePolicy(_peaked_advantage, space, GreedyAdvantageConfig(n_samples=512, seed=0))
    for obs in (np.array([0.5, -0.3, 9.0], np.float32), np.array([-0.9, 0.8, 0.0], np.float32)):
        action = policy(obs)
        assert action.dtype == np.float32 and action in space
        assert np.abs(action - obs[:2]).max() < 0.15
    with pytest.raises(ValueError, match="n_samples"):
        GreedyAdvantageConfig(n_samples=0)


def test_agent_rolls_out_saves_and_reloads_its_advantage(tmp_path):
    torch.manual_seed(0)
    ensemble = RewardEnsemble(16, 2, RewardNetConfig(hidden_sizes=(8,), use_next_state=False, ensemble_size=2))
    ensemble.save(tmp_path / "reward.pt")
    agent = GreedyAdvantageAgent(env_id("Longstick", "state"), tmp_path / "reward.pt", GreedyAdvantageConfig(64))
    with pytest.raises(RuntimeError, match="no advantage yet"):
        agent.rollouts(1, seed=0)
    agent.train(ensemble.predict, steps=0)
    first = agent.rollouts(2, seed=5)
    assert [t.length for t in first] == [50, 50] and first[0].metadata["policy"] == "greedy-advantage"
    agent.save(tmp_path / agent.checkpoint_name)
    reloaded = GreedyAdvantageAgent(env_id("Longstick", "state"), tmp_path / "unused.pt", GreedyAdvantageConfig(64))
    reloaded.load(tmp_path / agent.checkpoint_name)
    again = reloaded.rollouts(2, seed=5)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.actions, b.actions)
