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
import multiprocessing.connection
import os
from typing import Any, Callable, Mapping, Protocol, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv

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

    def play(self, policy: EpisodePolicy, seeds: Sequence[int], episodes: Sequence[int], record_frames: bool,
             metadata: Mapping[str, Any] | None) -> list[Trajectory]:
        """Plays episodes `episodes` (their seeds `seeds`) here, one after another, `policy`
        choosing every action in this process: a worker's share of `vector_rollouts(...,
        in_workers=True)`."""
        return [rollout(self.env, lambda obs, i=i: policy(obs[None], [i])[0], seed, record_frames=record_frames,
                        metadata=metadata) for seed, i in zip(seeds, episodes, strict=True)]

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
    in_workers: bool = False,
) -> list[Trajectory]:
    """One episode per seed, in the order of `seeds`, run over the envs of `venv` side by side:
    env k plays episodes k, k + num_envs, k + 2·num_envs, ... Episode i starts from
    `reset(seed=seeds[i])` and is recorded as `rollout` records it; `policy` learns which
    episode each observation belongs to, so that when it draws each episode's actions from
    that episode's own random stream, an episode does not depend on how many envs there are
    or which episodes run beside it. The workers of a `SubprocVecEnv` each step as soon as
    their own action is ready (`_PipelinedSteps`); the envs of any other VecEnv step together,
    and those left without an episode keep stepping on actions that are not recorded.

    in_workers: each worker of a `SubprocVecEnv` plays its episodes with its own copy of
    `policy` (which must pickle), and this process only collects them: no step waits on this
    process, but the episodes are the same only where the policy computes the same in every
    process (on the CPU)."""
    workers = venv.num_envs
    plays = [list(range(k, len(seeds), workers)) for k in range(workers)]
    if in_workers:
        if not isinstance(venv, SubprocVecEnv):
            raise ValueError(f"vector_rollouts(in_workers=True): expected a SubprocVecEnv, found {type(venv).__name__}")
        return _played_in_workers(venv, policy, seeds, plays, record_frames, metadata)
    for k, episodes in enumerate(plays):
        venv.env_method("schedule", [seeds[i] for i in episodes], record_frames, indices=[k])
    obs = venv.reset()
    frame = (lambda info: info["frame"]) if record_frames else (lambda info: None)
    running = {k: _Episode(obs[k], frame(venv.reset_infos[k])) for k in range(workers) if plays[k]}
    waiting = {k: obs[k] for k in running}  # envs whose next action is to be chosen, with their observation
    done_count = [0] * workers
    env_name = venv.get_attr("env_name", indices=[0])[0]
    steps = _PipelinedSteps(venv) if isinstance(venv, SubprocVecEnv) else _LockstepSteps(venv)
    trajectories: dict[int, Trajectory] = {}
    with steps:
        while running:
            if waiting:
                ready = sorted(waiting)
                chosen = np.asarray(policy(np.stack([waiting[k] for k in ready]),
                                           [plays[k][done_count[k]] for k in ready]), dtype=np.float32)
                for k, action in zip(ready, chosen):
                    steps.send(k, action)
                waiting = {}
            for k, action, (next_obs, reward, done, info, reset_info) in steps.answers():
                episode = running[k]
                episode.add(action, info.get("gt_reward", reward), info["terminal_observation"] if done else next_obs,
                            frame(info))
                if not done:
                    waiting[k] = next_obs
                    continue
                index = plays[k][done_count[k]]
                trajectories[index] = episode.trajectory(seeds[index], not info["TimeLimit.truncated"],
                                                         _episode_labels(env_name, info, metadata))
                done_count[k] += 1
                if done_count[k] < len(plays[k]):
                    running[k] = _Episode(next_obs, frame(reset_info))
                    waiting[k] = next_obs
                else:
                    del running[k]
    return [trajectories[i] for i in range(len(seeds))]


def _played_in_workers(venv: SubprocVecEnv, policy: EpisodePolicy, seeds: Sequence[int], plays: list[list[int]],
                       record_frames: bool, metadata: Mapping[str, Any] | None) -> list[Trajectory]:
    """Every worker plays its episodes at once (`ScheduledEpisodes.play`, each with its own share)."""
    pipes = _WorkerPipes(venv)
    busy = [k for k in range(venv.num_envs) if plays[k]]
    for k in busy:
        pipes.call(k, "play", policy, [seeds[i] for i in plays[k]], plays[k], record_frames, metadata)
    trajectories: dict[int, Trajectory] = {}
    stopped = []
    for k in busy:
        try:
            trajectories.update(zip(plays[k], pipes.answer(k)))
        except EOFError:
            stopped.append(k)
    if stopped:
        raise RuntimeError(f"vector_rollouts: worker processes {stopped} stopped while playing their episodes "
                           "(their traceback is printed above)")
    return [trajectories[i] for i in range(len(seeds))]


class _WorkerPipes:
    """The commands of a `SubprocVecEnv`'s worker processes, one worker at a time, spoken as
    `SubprocVecEnv.step_async` ("step") and `env_method` ("env_method") speak them: the one
    place that depends on that protocol, which stable-baselines3 keeps private."""

    def __init__(self, venv: SubprocVecEnv) -> None:
        self._remotes = venv.remotes

    def step(self, k: int, action: np.ndarray) -> None:
        """Worker k steps its env (and resets it when the episode ends)."""
        self._remotes[k].send(("step", action))

    def call(self, k: int, method: str, *args: Any) -> None:
        """Worker k calls `method(*args)` on its env (through wrappers, as `env_method` does)."""
        self._remotes[k].send(("env_method", (method, args, {})))

    def ready(self, workers: Sequence[int]) -> set[int]:
        """Blocks until one of `workers` has an answer; those that have one."""
        pipes = {self._remotes[k]: k for k in workers}
        return {pipes[pipe] for pipe in multiprocessing.connection.wait(list(pipes))}

    def answer(self, k: int) -> Any:
        """Worker k's answer to its oldest command (EOFError if it stopped)."""
        return self._remotes[k].recv()


class SeededRandomPolicy:
    """Uniform actions in a Box, each episode's from its own generator seeded by the episode's
    seed: an `EpisodePolicy` whose episodes do not depend on how many envs play them. It
    pickles, so worker processes can run it (`vector_rollouts(..., in_workers=True)`)."""

    def __init__(self, space: gym.spaces.Box, seeds: Sequence[int]) -> None:
        self.space, self.seeds = space, list(seeds)
        self._rngs: dict[int, np.random.Generator] = {}

    def __call__(self, obs: np.ndarray, episodes: Sequence[int]) -> np.ndarray:
        rngs = [self._rngs.setdefault(i, np.random.default_rng(self.seeds[i])) for i in episodes]
        return np.stack([rng.uniform(self.space.low, self.space.high) for rng in rngs])


StepAnswer = tuple[np.ndarray, float, bool, dict[str, Any], dict[str, Any]]
"""One env's step as a VecEnv reports it: (observation, reward, done, info, reset info), the
observation and reset info those of the next episode when done."""


class _LockstepSteps(contextlib.AbstractContextManager):
    """Steps every env of a VecEnv together, once each env with an episode has its action;
    the others repeat their last one."""

    def __init__(self, venv: VecEnv) -> None:
        self._venv = venv
        self._actions = np.stack([np.asarray(venv.action_space.sample(), dtype=np.float32)] * venv.num_envs)
        self._sent: list[int] = []

    def send(self, k: int, action: np.ndarray) -> None:
        self._actions[k] = action
        self._sent.append(k)

    def answers(self) -> list[tuple[int, np.ndarray, StepAnswer]]:
        obs, rewards, dones, infos = self._venv.step(self._actions)
        sent, self._sent = self._sent, []
        return [(k, self._actions[k].copy(), (obs[k], rewards[k], bool(dones[k]), infos[k], self._venv.reset_infos[k]))
                for k in sent]

    def __exit__(self, *exc: object) -> None:
        """Nothing is owed: every step was answered."""


class _PipelinedSteps(contextlib.AbstractContextManager):
    """Steps each worker of a `SubprocVecEnv` on its own: an action goes to its worker as soon
    as it is chosen and answers are taken in the order they arrive, so that choosing one env's
    action overlaps the other workers' stepping. A finished episode is reset in its worker;
    leaving the block collects the answers still owed, so the VecEnv stays usable after an
    error."""

    def __init__(self, venv: SubprocVecEnv) -> None:
        self._pipes = _WorkerPipes(venv)
        self._actions: dict[int, np.ndarray] = {}

    def send(self, k: int, action: np.ndarray) -> None:
        self._pipes.step(k, action)
        self._actions[k] = action.copy()

    def answers(self) -> list[tuple[int, np.ndarray, StepAnswer]]:
        arrived = sorted(self._pipes.ready(list(self._actions)))
        return [(k, self._actions.pop(k), self._pipes.answer(k)) for k in arrived]

    def __exit__(self, *exc: object) -> None:
        for k in list(self._actions):
            with contextlib.suppress(EOFError, ConnectionError):  # a worker that died owes nothing
                self._pipes.answer(k)
        self._actions.clear()


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
