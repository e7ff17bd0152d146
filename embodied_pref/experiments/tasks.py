"""The tasks datasets can be generated for: each names its gymnasium env and its scripted
demonstrator (quality 0 = uniformly random … 1 = expert; `violate` = good at the task but
against the hidden preference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import gymnasium
from tqdm.auto import tqdm

import envs.franka as franka
import envs.xmagical as xmagical
from embodied_pref.data import Trajectory
from embodied_pref.rollout import Policy, rollout


@dataclass(frozen=True)
class TaskSpec:
    """A task of one environment suite."""

    env_id: Callable[[str, str], str]
    """(embodiment, observation) -> gymnasium id."""
    embodiments: tuple[str, ...]
    """Embodiments the task exists for."""
    demonstrator: Callable[[gymnasium.Env, float, bool, int], Policy]
    """(env, quality, violate, seed) -> policy bound to env."""
    preference: str
    """What the ground-truth preference reward encodes (for dataset cards)."""


def _xmagical(task: str, preference: str) -> TaskSpec:
    return TaskSpec(
        env_id=lambda embodiment, observation: xmagical.env_id(embodiment, observation, task),
        embodiments=xmagical.EMBODIMENTS,
        demonstrator=lambda env, quality, violate, seed: xmagical.make_demonstrator(env, quality, seed, violate),
        preference=preference,
    )


def _franka(task: str, preference: str) -> TaskSpec:
    return TaskSpec(
        env_id=lambda embodiment, observation: franka.env_id(task, observation),
        embodiments=("Panda",),
        demonstrator=lambda env, quality, violate, seed: franka.ScriptedPusher(env, quality, float(violate), seed),
        preference=preference,
    )


TASKS: dict[str, TaskSpec] = {
    "xmagical-sweep": _xmagical("sweep", "debris swept to the top (x-magical's dense reward)"),
    "xmagical-avoid": _xmagical("avoid", "sweep progress, minus a penalty per step inside the off-limits zone"),
    "xmagical-group": _xmagical("group", "sweep progress, minus a penalty on the debris' spread"),
    "franka-group": _franka("group", "objects at the goal and close together; action and collision penalties"),
    "franka-clutter": _franka("clutter", "object at its goal, distractors undisturbed; action and collision penalties"),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, found {name!r}")
    return TASKS[name]


def scripted_episodes(
    task: str,
    embodiment: str,
    qualities: Sequence[float],
    seed: int,
    *,
    violations: Sequence[bool] | None = None,
    observation: str = "state",
    record_frames: bool = False,
    progress: bool = False,
) -> list[Trajectory]:
    """One episode per entry of `qualities` (and of `violations`), seeds seed, seed+1, …"""
    spec = task_spec(task)
    if embodiment not in spec.embodiments:
        raise ValueError(f"embodiment: task {task!r} has {spec.embodiments}, found {embodiment!r}")
    violations = violations if violations is not None else [False] * len(qualities)
    env = gymnasium.make(spec.env_id(embodiment, observation), render_mode="rgb_array" if record_frames else None)
    try:
        episodes = []
        for i, (quality, violate) in enumerate(
            tqdm(list(zip(qualities, violations)), desc="episodes", disable=not progress, leave=False)
        ):
            policy = spec.demonstrator(env, quality, violate, seed + i)
            episodes.append(
                rollout(env, policy, seed + i, record_frames=record_frames,
                        metadata={"policy": "scripted", "task": task, "quality": float(quality),
                                  "violates_preference": bool(violate)})
            )
        return episodes
    finally:
        env.close()
