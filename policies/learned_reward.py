"""A vectorized-env wrapper that pays the agent a learned reward instead of the env's own.

The env's own (ground-truth) reward is kept in `info["gt_reward"]`, so monitors below this
wrapper keep logging ground truth and evaluation stays honest.

Per step, `reward_fn` is called once per vectorized step. Deferred, the wrapper records each
step's transitions and pays 0; `DeferredRewardRelabel`, a PPO callback, then pays a whole
rollout in one `reward_fn` call at its end, straight into the rollout buffer. The numbers PPO
trains on are the same; one batched call costs far less than hundreds of small ones (a small
call is dominated by fixed overhead and by reloading the reward net's weights into cache
between env steps).
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from embodied_pref.reward_nets import RewardFn


class LearnedRewardVecEnv(VecEnvWrapper):
    """Replaces rewards with `reward_fn(obs, action, next_obs)`; `None` passes ground truth.

    `deferred=True` (with a `reward_fn`) pays 0.0 per step and records the step instead;
    `deferred_rewards()` then pays every recorded step in one `reward_fn` call."""

    def __init__(self, venv: VecEnv, reward_fn: RewardFn | None = None, deferred: bool = False) -> None:
        super().__init__(venv)
        self.reward_fn = reward_fn
        self.deferred = deferred
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self._recorded: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        """(obs (N, D), actions (N, A) float32, next_obs (N, D), dones (N,)) of each deferred step."""

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
            next_obs = self._next_obs(obs, dones, infos)
            if self.deferred:
                # The caller may reuse its actions array; the VecEnv below returns fresh arrays.
                self._recorded.append((self._last_obs, actions.copy(), next_obs, dones))
                rewards = np.zeros(len(obs), dtype=np.float32)
            else:
                rewards = np.asarray(self.reward_fn(self._last_obs, actions, next_obs), dtype=np.float32)
        self._last_obs = obs
        return obs, rewards, dones, infos

    def deferred_rewards(self) -> tuple[np.ndarray, np.ndarray]:
        """The learned rewards of the steps recorded since the last call (or `clear_deferred`),
        from one `reward_fn` call: rewards (T, N) float32 and dones (T, N) bool, step t of env
        n at [t, n]. Empties the record."""
        if self.reward_fn is None:
            raise ValueError("LearnedRewardVecEnv.deferred_rewards: expected a reward_fn, found None")
        if not self._recorded:
            return np.zeros((0, self.num_envs), np.float32), np.zeros((0, self.num_envs), bool)
        obs, actions, next_obs, dones = (np.stack(column) for column in zip(*self._recorded))
        self._recorded = []
        steps, n_envs = dones.shape
        flat = (x.reshape(steps * n_envs, *x.shape[2:]) for x in (obs, actions, next_obs))
        rewards = np.asarray(self.reward_fn(*flat), dtype=np.float32).reshape(steps, n_envs)
        return rewards, dones.astype(bool)

    def clear_deferred(self) -> None:
        """Forgets the recorded steps without paying them."""
        self._recorded = []

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


class DeferredRewardRelabel(BaseCallback):
    """Pays a deferred `LearnedRewardVecEnv` at the end of each PPO rollout: its rewards (one
    `reward_fn` call for the rollout) are added to the rollout buffer's, then returns and
    advantages are recomputed with the last values and dones SB3 left in the callback's locals.

    Added, not written over: the buffer holds the placeholder 0.0 plus SB3's bootstrap
    `gamma * V(terminal_obs)` of truncated episodes, which must survive.

    `normalizer`, the VecNormalize(norm_reward=True) above the wrapper, if any: it scales each
    step's reward by a running std of the discounted return, statistics updated step by step
    *before* the step is scaled. Deferred rewards cannot go through it as the steps happen, so
    during the rollout it is paused (`training=False`: the placeholder 0.0 it scales stays 0.0,
    and it learns nothing from it), and at the rollout's end its update and scaling are
    replayed over the rollout's steps in order, from the discounted returns it had when the
    rollout started, with its own methods. Its statistics and the rewards PPO sees are then the ones per-step
    payment gives, and a checkpoint saves the same statistics. (Keeping per-step payment
    whenever rewards are normalized would be equivalent too, but loses the speed-up where it is
    used most: the demo's PPO normalizes.)

    Must come before callbacks that read the buffer at a rollout's end."""

    def __init__(self, venv: LearnedRewardVecEnv, normalizer: VecNormalize | None = None) -> None:
        super().__init__()
        self.venv, self.normalizer = venv, normalizer
        self._normalizer_was_training: bool | None = None
        """The normalizer's `training` flag while a rollout pauses it; None between rollouts."""
        self._start_returns: np.ndarray | None = None
        """The normalizer's discounted returns (N,) when the rollout started."""

    def _on_rollout_start(self) -> None:
        self.venv.clear_deferred()
        if self.normalizer is not None:
            self._normalizer_was_training = self.normalizer.training
            self._start_returns = self.normalizer.returns.copy()
            self.normalizer.training = False

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._resume_normalizer()
        buffer = self.locals["rollout_buffer"]
        rewards, dones = self.venv.deferred_rewards()
        if rewards.shape != buffer.rewards.shape:
            raise ValueError(f"DeferredRewardRelabel: expected rewards for the rollout buffer's {buffer.rewards.shape} "
                             f"(steps, envs), found {rewards.shape} recorded steps")
        if self.normalizer is not None:
            rewards = self._normalized(rewards, dones)
        buffer.rewards += rewards
        buffer.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])

    def _on_training_end(self) -> None:
        # A rollout stopped by another callback never reaches its end.
        self._resume_normalizer()

    def _resume_normalizer(self) -> None:
        if self._normalizer_was_training is not None:
            self.normalizer.training = self._normalizer_was_training
            self._normalizer_was_training = None

    def _normalized(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """`rewards` (T, N) as the normalizer's `step_wait` would have scaled them step by step,
        from the discounted returns of the rollout's start, its statistics and discounted
        returns updated on the way."""
        normalizer = self.normalizer
        normalizer.returns = self._start_returns
        scaled = np.empty_like(rewards)
        for t in range(len(rewards)):
            if normalizer.training:
                normalizer._update_reward(rewards[t])  # VecNormalize's own update, so the statistics match
            scaled[t] = normalizer.normalize_reward(rewards[t])
            normalizer.returns[dones[t]] = 0
        return scaled
