"""Running a policy in a gymnasium environment and recording episodes as `Trajectory`s.

Environments report their ground-truth reward in `info["gt_reward"]` when the reward they
return may be replaced (e.g. by a learned one); otherwise the returned reward is the truth.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

from embodied_pref.data import Trajectory

Policy = Callable[[np.ndarray], np.ndarray]
"""obs (D,) -> action (A,)."""


def rollout(
    env: gym.Env,
    policy: Policy,
    seed: int,
    *,
    record_frames: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Trajectory:
    """One episode from `env.reset(seed=seed)` until it terminates or truncates."""
    obs, info = env.reset(seed=seed)
    observations, actions, rewards = [obs], [], []
    frames = [env.render()] if record_frames else None
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(info.get("gt_reward", reward))
        if frames is not None:
            frames.append(env.render())
    spec = env.spec
    metadata = dict(metadata or {})
    if "eval_score" in info:
        metadata["eval_score"] = float(info["eval_score"])
    return Trajectory(
        observations=np.asarray(observations, dtype=np.float32),
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        frames=None if frames is None else np.asarray(frames, dtype=np.uint8),
        env_id=spec.id if spec is not None else type(env.unwrapped).__name__,
        seed=seed,
        embodiment=str(info.get("embodiment", "")),
        terminated=bool(terminated),
        metadata=metadata,
    )
