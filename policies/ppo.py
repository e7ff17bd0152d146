"""PPO (stable-baselines3) trained on a learned reward, evaluated on ground truth.

`PPOAgent` implements the PbRL loop's agent protocol: `train(reward_fn, steps)` and
`rollouts(n, seed)`. Passing `reward_fn=None` trains on the environment's ground truth (the
upper-bound baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from embodied_pref.data import Trajectory
from embodied_pref.reward_nets import RewardFn
from embodied_pref.rollout import rollout
from policies.learned_reward import LearnedRewardVecEnv


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (SB3 names)."""

    n_envs: int = 4
    """Parallel environment copies (in-process)."""
    n_steps: int = 256
    """Steps per env per update."""
    batch_size: int = 256
    """Minibatch size."""
    n_epochs: int = 10
    """Passes over each rollout buffer."""
    learning_rate: float = 3e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE λ."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy and value networks."""
    seed: int = 0
    """Seeds networks, sampling and the envs."""
    device: str = "auto"
    """"auto" uses CUDA when available."""


class PPOAgent:
    """SB3 PPO on `env_id`, its reward swapped for a learned one between training phases."""

    checkpoint_name = "agent.zip"

    def __init__(
        self,
        env_id: str,
        config: PPOConfig = PPOConfig(),
        env_kwargs: Mapping[str, Any] | None = None,
        log_dir: str | Path | None = None,
        wrapper: Callable[[gym.Env], gym.Env] | None = None,
    ) -> None:
        """`wrapper` wraps each training env (e.g. a `VisualRewardWrapper` whose reward the
        agent then trains on with `train(None, steps)`); evaluation rollouts stay unwrapped."""
        self.env_id, self.config = env_id, config
        self.env_kwargs = dict(env_kwargs or {})
        venv = make_vec_env(env_id, n_envs=config.n_envs, seed=config.seed, env_kwargs=self.env_kwargs,
                            wrapper_class=wrapper)
        self.venv = LearnedRewardVecEnv(venv)
        self.model = PPO(
            "MlpPolicy",
            self.venv,
            n_steps=config.n_steps,
            batch_size=config.batch_size,
            n_epochs=config.n_epochs,
            learning_rate=config.learning_rate,
            gamma=config.gamma,
            gae_lambda=config.gae_lambda,
            ent_coef=config.ent_coef,
            policy_kwargs={"net_arch": list(config.net_arch)},
            seed=config.seed,
            device=config.device,
            tensorboard_log=None if log_dir is None else str(log_dir),
            verbose=0,
        )
        self.steps_trained = 0

    def train(self, reward_fn: RewardFn | None, steps: int, progress: bool = False) -> None:
        """Continue training for `steps` env steps on `reward_fn` (None: ground truth)."""
        self.venv.reward_fn = reward_fn
        self.model.learn(
            total_timesteps=steps,
            reset_num_timesteps=self.steps_trained == 0,
            progress_bar=progress,
            tb_log_name="ppo",
        )
        self.steps_trained += steps

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return action

    def rollouts(self, n: int, seed: int, record_frames: bool = False) -> list[Trajectory]:
        """`n` episodes of the current (stochastic) policy, seeds seed .. seed+n-1."""
        env = gym.make(self.env_id, **self.env_kwargs, **({"render_mode": "rgb_array"} if record_frames else {}))
        try:
            return [
                rollout(env, self.act, seed + i, record_frames=record_frames,
                        metadata={"policy": "ppo", "steps_trained": self.steps_trained})
                for i in range(n)
            ]
        finally:
            env.close()

    def save(self, path: str | Path) -> None:
        self.model.save(str(path))

    def load(self, path: str | Path) -> None:
        self.model = PPO.load(str(path), env=self.venv, device=self.config.device)
        self.steps_trained = self.model.num_timesteps
