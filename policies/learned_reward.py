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
        next_obs = obs.copy()
        for i, (done, info) in enumerate(zip(dones, infos)):
            info.setdefault("gt_reward", float(gt_rewards[i]))
            if done and "terminal_observation" in info:
                next_obs[i] = info["terminal_observation"]
        rewards = gt_rewards
        if self.reward_fn is not None:
            actions = np.asarray(self._actions, dtype=np.float32).reshape(len(obs), -1)
            rewards = self.reward_fn(self._last_obs, actions, next_obs).astype(np.float32)
        self._last_obs = obs
        return obs, rewards, dones, infos
