"""A vectorized-env wrapper that pays the agent a learned reward instead of the env's own.

The env's own (ground-truth) reward is kept in `info["gt_reward"]`, so monitors below this
wrapper keep logging ground truth and evaluation stays honest.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from embodied_pref.reward_nets import RewardFn


class LearnedRewardVecEnv(VecEnvWrapper):
    """Replaces rewards with `reward_fn(obs, action, next_obs)`; `None` passes ground truth."""

    def __init__(self, venv: VecEnv, reward_fn: RewardFn | None = None) -> None:
        super().__init__(venv)
        self.reward_fn = reward_fn
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self._last_obs = self.venv.reset()
        return self._last_obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self):
        obs, gt_rewards, dones, infos = self.venv.step_wait()
        for info, reward in zip(infos, gt_rewards):
            info.setdefault("gt_reward", float(reward))
        rewards = gt_rewards
        if self.reward_fn is not None:
            actions = np.asarray(self._actions, dtype=np.float32).reshape(len(obs), -1)
            rewards = np.asarray(self.reward_fn(self._last_obs, actions, self._next_obs(obs, dones, infos)),
                                 dtype=np.float32)
        self._last_obs = obs
        return obs, rewards, dones, infos

    @staticmethod
    def _next_obs(obs: np.ndarray, dones: np.ndarray, infos: list[dict]) -> np.ndarray:
        """The states the steps reached: an env that finished its episode (and reset) reached
        its terminal observation, not the reset one. (N, D), a copy only where one ended."""
        ended = [i for i in np.flatnonzero(dones) if "terminal_observation" in infos[i]]
        if not ended:
            return obs
        next_obs = obs.copy()
        for i in ended:
            next_obs[i] = infos[i]["terminal_observation"]
        return next_obs
