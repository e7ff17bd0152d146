"""Running a policy in a gymnasium environment and recording episodes as `Trajectory`s.

Environments report their ground-truth reward in `info["gt_reward"]` when the reward they
return may be replaced (e.g. by a learned one); otherwise the returned reward is the truth.
`rollout` records state observations; `record_pixel_episode` records envs that observe
frames (such as MineRL BASALT), optionally streaming them to an mp4.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.data.video import VideoFrames, VideoWriter

Policy = Callable[[np.ndarray], np.ndarray]
"""obs (D,) -> action (A,)."""
PixelPolicy = Callable[[np.ndarray], np.ndarray]
"""frame (H, W, 3) uint8 -> action (A,)."""


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
    return Trajectory(
        observations=np.asarray(observations, dtype=np.float32),
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        frames=None if frames is None else np.asarray(frames, dtype=np.uint8),
        seed=seed,
        terminated=bool(terminated),
        **_episode_labels(env, info, metadata),
    )


def record_pixel_episode(
    env: gym.Env,
    policy: PixelPolicy,
    seed: int,
    *,
    video: str | os.PathLike[str] | None = None,
    fps: float | None = None,
    record_rewards: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> Trajectory:
    """One episode of an env whose observations are (H, W, 3) uint8 frames, from
    `env.reset(seed=seed)` until it terminates or truncates.

    The T+1 observed frames become the trajectory's frames; its observations are (T+1, 0)
    float32 and its actions (T, A) float32 (`policy` must return vectors, e.g. BASALT with
    `flat_actions=True`). With `video`, frames are streamed to that mp4 (H.264 at `fps`,
    default the env's `render_fps`) as they arrive and the trajectory's frames are a
    `VideoFrames` over it, so that a long episode (BASALT: up to 14,400 steps) never sits
    in memory; without, they are kept in an array. `record_rewards=False` (envs without a
    ground truth, such as BASALT) leaves the trajectory's rewards None.
    """
    obs, info = env.reset(seed=seed)
    actions, rewards = [], []
    in_memory: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        if video is not None:
            rate = fps if fps is not None else env.metadata.get("render_fps", 20)
            writer = stack.enter_context(VideoWriter(video, rate))
            keep = writer.write
        else:
            keep = in_memory.append
        keep(np.asarray(obs, dtype=np.uint8))
        terminated = truncated = False
        while not (terminated or truncated):
            action = np.asarray(policy(obs), dtype=np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            keep(np.asarray(obs, dtype=np.uint8))
            actions.append(action)
            rewards.append(info.get("gt_reward", reward))
    return Trajectory(
        observations=np.zeros((len(actions) + 1, 0), dtype=np.float32),
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32) if record_rewards else None,
        frames=VideoFrames(video) if video is not None else np.stack(in_memory),
        seed=seed,
        terminated=bool(terminated),
        **_episode_labels(env, info, metadata),
    )


def _episode_labels(
    env: gym.Env, info: Mapping[str, Any], metadata: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A recorded episode's env id, embodiment and metadata (plus the final `eval_score`)."""
    spec = env.spec
    metadata = dict(metadata or {})
    if "eval_score" in info:
        metadata["eval_score"] = float(info["eval_score"])
    return {
        "env_id": spec.id if spec is not None else type(env.unwrapped).__name__,
        "embodiment": str(info.get("embodiment", "")),
        "metadata": metadata,
    }
