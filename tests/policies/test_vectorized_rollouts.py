"""PPO rollouts over vectorized envs: the same episodes for any number of envs, in or out of process."""

import itertools

import gymnasium
import numpy as np
import pytest
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from embodied_pref.rollout import ScheduledEpisodes, SeededRandomPolicy, rollout, vector_rollouts
from envs.xmagical import env_id
from policies.ppo import PPOAgent, PPOConfig

ENV = env_id("Gripper", "state")  # 100-step episodes
SHORT = env_id("Longstick", "state")  # 50-step episodes


def _agents(env: str, kinds: list[tuple[int, str]]) -> list[PPOAgent]:
    """Agents with the given (n_envs, vec_env) and the first one's policy weights."""
    agents = [PPOAgent(env, PPOConfig(n_envs=n, vec_env=kind, n_steps=32, batch_size=32, device="cpu", seed=i))
              for i, (n, kind) in enumerate(kinds)]
    for agent in agents[1:]:
        agent.model.policy.load_state_dict(agents[0].model.policy.state_dict())
    return agents


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        assert (x.seed, x.terminated, x.env_id, x.metadata) == (y.seed, y.terminated, y.env_id, y.metadata)
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)


def test_episodes_do_not_depend_on_the_number_of_envs_or_processes():
    agents = _agents(ENV, [(1, "dummy"), (2, "dummy"), (2, "subproc")])
    try:
        # Three episodes over two envs: one env plays a second episode while the other idles.
        one, two, subproc = (agent.rollouts(3, seed=7) for agent in agents)
        assert [t.seed for t in one] == [7, 8, 9]
        assert [t.length for t in one] == [100, 100, 100]
        assert all("eval_score" in t.metadata and t.frames is None for t in one)
        assert not np.array_equal(one[0].actions, one[1].actions)
        _assert_same(one, two)
        _assert_same(one, subproc)
        # Another seed draws other actions; the same seed again draws the same ones.
        np.testing.assert_array_equal(agents[1].rollouts(1, seed=8)[0].actions, one[1].actions)
        assert not np.array_equal(agents[0].rollouts(1, seed=70)[0].actions, one[0].actions)
    finally:
        for agent in agents:
            agent.close()


def test_recorded_frames_and_observations_are_those_of_a_replay_in_one_env():
    (agent,) = _agents(SHORT, [(2, "dummy")])
    try:
        episodes = agent.rollouts(3, seed=4, record_frames=True)
    finally:
        agent.close()
    env = gymnasium.make(SHORT, render_mode="rgb_array")
    for episode in episodes:
        replayed = iter(episode.actions)
        replay = rollout(env, lambda obs: next(replayed), episode.seed, record_frames=True)
        assert episode.frames.shape == (51, *replay.frames.shape[1:])
        np.testing.assert_array_equal(episode.frames, replay.frames)
        np.testing.assert_array_equal(episode.observations, replay.observations)
        np.testing.assert_array_equal(episode.rewards, replay.rewards)
    assert not np.array_equal(episodes[0].frames[-1], episodes[2].frames[0])
    env.close()


def test_rollouts_name_an_action_distribution_they_cannot_seed():
    (agent,) = _agents(SHORT, [(1, "dummy")])
    agent.model.policy.action_dist = StateDependentNoiseDistribution(3)
    with pytest.raises(ValueError, match="expected a diagonal Gaussian or \\(multi-\\)categorical action distribution"):
        agent.rollouts(1, seed=0)
    agent.close()


def test_an_error_midway_leaves_the_worker_processes_in_step():
    spec = gymnasium.spec(SHORT)
    subproc = SubprocVecEnv([lambda: ScheduledEpisodes(gymnasium.make(spec))] * 2)
    in_process = DummyVecEnv([lambda: ScheduledEpisodes(gymnasium.make(spec))])
    seeds = [3, 4, 5]
    try:
        calls, working = itertools.count(), SeededRandomPolicy(subproc.action_space, seeds)

        def failing(obs, episodes):
            if next(calls) == 30:
                raise RuntimeError("the policy failed")
            return working(obs, episodes)

        with pytest.raises(RuntimeError, match="the policy failed"):
            vector_rollouts(subproc, failing, seeds)
        # The steps sent before the error are answered and dropped: the workers take commands again.
        again = vector_rollouts(subproc, SeededRandomPolicy(subproc.action_space, seeds), seeds)
        expected = vector_rollouts(in_process, SeededRandomPolicy(subproc.action_space, seeds), seeds)
        assert [t.length for t in again] == [50, 50, 50]
        _assert_same(again, expected)
    finally:
        subproc.close()
        in_process.close()


class _FailingPolicy:
    def __call__(self, obs, episodes):
        raise RuntimeError("the policy failed in a worker")


def test_a_worker_whose_policy_fails_is_named_and_in_process_envs_are_refused():
    spec = gymnasium.spec(SHORT)
    subproc = SubprocVecEnv([lambda: ScheduledEpisodes(gymnasium.make(spec))] * 2)
    try:
        with pytest.raises(RuntimeError, match=r"worker processes \[0, 1\] stopped while playing"):
            vector_rollouts(subproc, _FailingPolicy(), [0, 1, 2], in_workers=True)
    finally:
        for process in subproc.processes:
            process.join(timeout=10)
    in_process = DummyVecEnv([lambda: ScheduledEpisodes(gymnasium.make(spec))])
    with pytest.raises(ValueError, match="in_workers=True.*expected a SubprocVecEnv, found DummyVecEnv"):
        vector_rollouts(in_process, SeededRandomPolicy(in_process.action_space, [0]), [0], in_workers=True)
    in_process.close()


def test_a_seeded_random_policy_draws_each_episode_from_its_own_seed():
    space = gymnasium.spaces.Box(-1.0, 1.0, (2,))
    together, apart = SeededRandomPolicy(space, [3, 4]), SeededRandomPolicy(space, [3, 4])
    obs = np.zeros((2, 5))
    side_by_side = np.concatenate([together(obs, [0, 1]), together(obs, [0, 1])])
    one_by_one = np.concatenate([apart(obs[:1], [1]), apart(obs[:1], [1]), apart(obs[:1], [0]), apart(obs[:1], [0])])
    np.testing.assert_array_equal(side_by_side[[0, 2]], one_by_one[[2, 3]])  # episode 0
    np.testing.assert_array_equal(side_by_side[[1, 3]], one_by_one[[0, 1]])  # episode 1
    assert not np.array_equal(side_by_side[0], side_by_side[1])
    assert space.contains(side_by_side[0].astype(np.float32))
