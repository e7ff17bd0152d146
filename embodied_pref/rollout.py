"""Running a policy in a gymnasium environment and recording episodes as `Trajectory`s.

Environments report their ground-truth reward in `info["gt_reward"]` when the reward they
return may be replaced (e.g. by a learned one); otherwise the returned reward is the truth.
`rollout` records state observations; `vector_rollouts` records many episodes at once over
the envs of a stable-baselines3-style VecEnv (in this process or in worker processes), each
episode the same however many envs run them; `record_pixel_episode` records envs that observe
frames (such as MineRL BASALT), optionally streaming them to an mp4.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Mapping, Protocol, Sequence

import gymnasium as gym
import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.data.video import VideoFrames, VideoWriter

Policy = Callable[[np.ndarray], np.ndarray]
"""obs (D,) -> action (A,)."""
PixelPolicy = Callable[[np.ndarray], np.ndarray]
"""frame (H, W, 3) uint8 -> action (A,)."""
EpisodePolicy = Callable[[np.ndarray, Sequence[int]], np.ndarray]
"""obs (B, D) of B running episodes, each episode's index into the seeds -> actions (B, A)."""


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
    episode = _Episode(obs, env.render() if record_frames else None)
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        episode.add(action, info.get("gt_reward", reward), obs, env.render() if record_frames else None)
    return episode.trajectory(seed, bool(terminated), _episode_labels(_env_name(env), info, metadata))


class ScheduledEpisodes(gym.Wrapper):
    """Lets a VecEnv that auto-resets its envs without seeds play seeded episodes: a reset
    without a seed takes the next seed that `schedule` queued. With frames recorded, every
    reset's and step's info carries the frame rendered after it in `info["frame"]` (an episode's
    last frame would otherwise be lost to the auto-reset)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._seeds: list[int] = []
        self._record_frames = False

    @property
    def env_name(self) -> str:
        """The env id (the class name of an unregistered env)."""
        return _env_name(self.env)

    def schedule(self, seeds: Sequence[int], record_frames: bool) -> None:
        """The seeds of the next episodes, in order, and whether to render their frames."""
        self._seeds, self._record_frames = list(seeds), record_frames

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._seeds:
            seed = self._seeds.pop(0)
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._with_frame(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_frame(info)

    def _with_frame(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "frame": self.env.render()} if self._record_frames else info


class VecEnv(Protocol):
    """What `vector_rollouts` uses of a stable-baselines3 VecEnv (DummyVecEnv, SubprocVecEnv)
    whose envs are each wrapped in `ScheduledEpisodes`: an env that finishes an episode resets
    itself, `infos[k]` then holds "terminal_observation" and "TimeLimit.truncated", and
    `reset_infos[k]` the new episode's reset info."""

    num_envs: int
    action_space: gym.Space
    reset_infos: list[dict[str, Any]]

    def reset(self) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]: ...

    def env_method(self, method_name: str, *args: Any, indices: Sequence[int] | None = None, **kwargs: Any) -> list: ...

    def get_attr(self, attr_name: str, indices: Sequence[int] | None = None) -> list: ...


class _Episode:
    """One episode being recorded: observations and frames so far, actions and rewards."""

    def __init__(self, obs: np.ndarray, frame: np.ndarray | None) -> None:
        self.observations, self.actions, self.rewards = [obs], [], []
        self.frames = None if frame is None else [frame]

    def add(self, action: np.ndarray, reward: float, obs: np.ndarray, frame: np.ndarray | None) -> None:
        self.actions.append(action)
        self.rewards.append(reward)
        self.observations.append(obs)
        if self.frames is not None:
            self.frames.append(frame)

    def trajectory(self, seed: int, terminated: bool, labels: Mapping[str, Any]) -> Trajectory:
        return Trajectory(
            observations=np.asarray(self.observations, dtype=np.float32),
            actions=np.asarray(self.actions, dtype=np.float32),
            rewards=np.asarray(self.rewards, dtype=np.float32),
            frames=None if self.frames is None else np.asarray(self.frames, dtype=np.uint8),
            seed=seed,
            terminated=terminated,
            **labels,
        )


def vector_rollouts(
    venv: VecEnv,
    policy: EpisodePolicy,
    seeds: Sequence[int],
    *,
    record_frames: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> list[Trajectory]:
    """One episode per seed, in the order of `seeds`, run over the envs of `venv` side by side:
    env k plays episodes k, k + num_envs, k + 2·num_envs, ... Episode i starts from
    `reset(seed=seeds[i])` and is recorded as `rollout` records it; `policy` learns which
    episode each observation belongs to, so that when it draws each episode's actions from
    that episode's own random stream, an episode does not depend on how many envs there are
    or which episodes run beside it. Envs left without an episode keep stepping (every env of
    a VecEnv steps together) on actions that are not recorded."""
    workers = venv.num_envs
    plays = [list(range(k, len(seeds), workers)) for k in range(workers)]
    for k, episodes in enumerate(plays):
        venv.env_method("schedule", [seeds[i] for i in episodes], record_frames, indices=[k])
    obs = venv.reset()
    frame = (lambda info: info["frame"]) if record_frames else (lambda info: None)
    running = {k: _Episode(obs[k], frame(venv.reset_infos[k])) for k in range(workers) if plays[k]}
    done_count = [0] * workers
    actions = np.stack([np.asarray(venv.action_space.sample(), dtype=np.float32)] * workers)
    env_name = venv.get_attr("env_name", indices=[0])[0]
    trajectories: dict[int, Trajectory] = {}
    while running:
        active = sorted(running)
        actions[active] = np.asarray(policy(obs[active], [plays[k][done_count[k]] for k in active]), dtype=np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        for k in active:
            info, episode = infos[k], running[k]
            last = info["terminal_observation"] if dones[k] else obs[k]
            episode.add(actions[k].copy(), info.get("gt_reward", rewards[k]), last, frame(info))
            if not dones[k]:
                continue
            index = plays[k][done_count[k]]
            trajectories[index] = episode.trajectory(seeds[index], not info["TimeLimit.truncated"],
                                                     _episode_labels(env_name, info, metadata))
            done_count[k] += 1
            if done_count[k] < len(plays[k]):
                running[k] = _Episode(obs[k], frame(venv.reset_infos[k]))
            else:
                del running[k]
    return [trajectories[i] for i in range(len(seeds))]


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
        **_episode_labels(_env_name(env), info, metadata),
    )


def _env_name(env: gym.Env) -> str:
    """The env's registered id, or the class name of an unregistered env."""
    spec = env.spec
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _episode_labels(env_name: str, info: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A recorded episode's env id, embodiment and metadata (plus the final `eval_score`)."""
    metadata = dict(metadata or {})
    if "eval_score" in info:
        metadata["eval_score"] = float(info["eval_score"])
    return {
        "env_id": env_name,
        "embodiment": str(info.get("embodiment", "")),
        "metadata": metadata,
    }
