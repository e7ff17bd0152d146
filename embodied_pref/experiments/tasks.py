"""The tasks datasets can be generated for: each names its gymnasium env and its scripted
demonstrator (quality 0 = uniformly random … 1 = expert; `violate` = good at the task but
against the hidden preference); and clip pools of scripted episodes for reward learning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import gymnasium
import numpy as np
from tqdm.auto import tqdm

import envs.crafter as crafter
import envs.franka as franka
import envs.xmagical as xmagical
from envs.xmagical import variants as xmagical_variants
from embodied_pref.data import Trajectory
from embodied_pref.rollout import Policy, rollout
from embodied_pref.segments import SegmentBatch, cut_clips, stack_segments


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
    success: Callable[[Trajectory], float]
    """Task success of an episode in [0, 1] (X-MAGICAL: its `eval_score`)."""
    violates: Callable[[Trajectory], bool]
    """Whether an episode goes against the hidden preference."""
    instructions: str = ""
    """What people labeling the task are told, in plain words (Markdown): the task and the
    preference their answers should express. `collect` writes it to instructions.md."""


# Franka state rows (see FrankaPushEnv): 7 joint positions, 7 velocities, 3 EE xyz, then xyz
# per block (task objects first), then the goal xy.
_FRANKA_BLOCKS = 17
# Group: blocks further apart than this at the end were pushed apart (the scripted grouping
# leaves them ~0.06 apart, the violating plan 0.14); clutter: a distractor moved this far
# was disturbed.
FRANKA_APART = 0.12
FRANKA_DISTURBED = 0.03


def _franka_blocks(obs: np.ndarray) -> np.ndarray:
    """Block xy from one state vector: (n_blocks, 2)."""
    return obs[_FRANKA_BLOCKS:-2].reshape(-1, 3)[:, :2]


def _franka_success(n_objects: int) -> Callable[[Trajectory], float]:
    def success(episode: Trajectory) -> float:
        last = episode.observations[-1]
        distance = np.linalg.norm(_franka_blocks(last)[:n_objects] - last[-2:], axis=1)
        return float((distance < franka.GOAL_RADIUS).mean())
    return success


def _franka_violates(task: str) -> Callable[[Trajectory], bool]:
    def violates(episode: Trajectory) -> bool:
        first, last = _franka_blocks(episode.observations[0]), _franka_blocks(episode.observations[-1])
        if task == "group":
            return bool(np.linalg.norm(last[0] - last[1]) > FRANKA_APART)
        return bool((np.linalg.norm(last[1:] - first[1:], axis=1) > FRANKA_DISTURBED).any())
    return violates


def _xmagical_violates(task: str) -> Callable[[Trajectory], bool]:
    def violates(episode: Trajectory) -> bool:
        if task == "avoid":
            return bool(xmagical_variants.zone_occupancy(episode.observations)[0].any())
        if task == "group":
            return bool(xmagical_variants.debris_spread(episode.observations[-1]) > xmagical_variants.SPREAD_TOLERANCE)
        return False
    return violates


def _xmagical(task: str, preference: str, instructions: str) -> TaskSpec:
    return TaskSpec(
        env_id=lambda embodiment, observation: xmagical.env_id(embodiment, observation, task),
        embodiments=xmagical.EMBODIMENTS,
        demonstrator=lambda env, quality, violate, seed: xmagical.make_demonstrator(env, quality, seed, violate),
        preference=preference,
        success=lambda episode: float(episode.metadata["eval_score"]),
        violates=_xmagical_violates(task),
        instructions=instructions,
    )


def _franka(task: str, preference: str, instructions: str) -> TaskSpec:
    return TaskSpec(
        env_id=lambda embodiment, observation: franka.env_id(task, observation),
        embodiments=("Panda",),
        demonstrator=lambda env, quality, violate, seed: franka.ScriptedPusher(env, quality, float(violate), seed),
        preference=preference,
        success=_franka_success(2 if task == "group" else 1),
        violates=_franka_violates(task),
        instructions=instructions,
    )


def _crafter(task: str, preference: str, instructions: str) -> TaskSpec:
    return TaskSpec(
        env_id=lambda embodiment, observation: crafter.env_id(task, observation),
        embodiments=("Player",),
        demonstrator=lambda env, quality, violate, seed: crafter.ScriptedPlayer(env, quality, violate, seed),
        preference=preference,
        success=lambda episode: float(episode.metadata["eval_score"]),
        violates=lambda episode: crafter.violates_preference(task, episode.observations),
        instructions=instructions,
    )


_ANSWERS = """
Watch both clips (they play in sync; space pauses, the slider scrubs), then answer:
**←** the left clip is better, **→** the right one, **↓** about equal, **c** can't tell,
**s** skip. **u** undoes your last answer. Judge only what the clips show.
"""

_SWEEP = """# Which robot sweeps better?

A robot (seen from above) pushes the small blocks ("debris") on the floor.

- Prefer the clip in which **more debris ends up in the top area** of the arena, and sooner.
"""

TASKS: dict[str, TaskSpec] = {
    "xmagical-sweep": _xmagical(
        "sweep", "debris swept to the top (x-magical's dense reward)", _SWEEP + _ANSWERS),
    "xmagical-avoid": _xmagical(
        "avoid", "sweep progress, minus a penalty per step inside the off-limits zone",
        _SWEEP + """- The **yellow dashed rectangle** is off limits: prefer the robot that **never drives into it**, even if it sweeps a little less. A robot that enters it is worse.
""" + _ANSWERS),
    "xmagical-group": _xmagical(
        "group", "sweep progress, minus a penalty on the debris' spread",
        _SWEEP + """- The debris should also **end up close together**: prefer the clip whose blocks finish in a tight group over one that scatters them along the top.
""" + _ANSWERS),
    "franka-group": _franka(
        "group", "objects at the goal and close together; action and collision penalties",
        """# Which robot arm pushes better?

A robot arm pushes **two red blocks** on a table towards the **green disk** (the goal).

- Prefer the clip in which **both red blocks reach the green disk and end up together**.
- Smooth, careful motion is better than jerky motion or knocking things over.
""" + _ANSWERS),
    "franka-clutter": _franka(
        "clutter", "object at its goal, distractors undisturbed; action and collision penalties",
        """# Which robot arm pushes better?

A robot arm pushes **the red block** on a table towards the **green disk** (the goal).

- Prefer the clip in which the red block **reaches the green disk**.
- The **blue blocks must stay where they are**: a robot that pushes or bumps a blue block is worse, even if the red block arrives.
- Smooth, careful motion is better than jerky motion.
""" + _ANSWERS),
    "crafter-achieve": _crafter(
        "achieve", "+1 per new achievement, -0.5 per health point lost (sleeping near zombies)",
        """# Which player plays better?

A player explores a Minecraft-like 2D world: collecting wood, placing a table, making tools,
drinking, eating, sleeping.

- Prefer the clip in which the player **achieves more new things** (collects, crafts, places).
- Losing health is bad: **sleeping next to zombies** or getting hurt makes a clip worse.
""" + _ANSWERS),
    "crafter-thrift": _crafter(
        "thrift", "+1 per new achievement, -0.5 per table or stone placed after the first",
        """# Which player plays better?

A player explores a Minecraft-like 2D world: collecting wood, placing a table, making tools.

- Prefer the clip in which the player **achieves more new things** (collects, crafts, places).
- Be thrifty: placing **more than one table, or stone after stone**, wastes material and makes a clip worse.
""" + _ANSWERS),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, found {name!r}")
    return TASKS[name]


def episode_outcomes(task: str, episodes: Sequence[Trajectory]) -> dict[str, float]:
    """Mean task success, preference-violation rate and ground-truth return of `episodes`."""
    spec = task_spec(task)
    return {"success": float(np.mean([spec.success(e) for e in episodes])),
            "violation_rate": float(np.mean([spec.violates(e) for e in episodes])),
            "gt_return": float(np.mean([e.rewards.sum() for e in episodes]))}


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
    env_kwargs: Mapping[str, Any] | None = None,
) -> list[Trajectory]:
    """One episode per entry of `qualities` (and of `violations`), seeds seed, seed+1, …;
    `env_kwargs` go to `gymnasium.make` (e.g. {"layout": "random"} for X-MAGICAL)."""
    spec = task_spec(task)
    if embodiment not in spec.embodiments:
        raise ValueError(f"embodiment: task {task!r} has {spec.embodiments}, found {embodiment!r}")
    violations = violations if violations is not None else [False] * len(qualities)
    env = gymnasium.make(spec.env_id(embodiment, observation), render_mode="rgb_array" if record_frames else None,
                         **dict(env_kwargs or {}))
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


def scripted_clips(
    task: str, embodiment: str, qualities: Sequence[float], seed: int, clip_length: int,
    clips_per_episode: int, rng: np.random.Generator, violations: Sequence[bool] | None = None,
) -> SegmentBatch:
    """`clip_length`-step clips cut at random starts from one scripted episode per quality
    (seeds seed, seed+1, …); episodes shorter than a clip give none."""
    episodes = [e for e in scripted_episodes(task, embodiment, qualities, seed, violations=violations)
                if e.length >= clip_length]
    if not episodes:
        raise ValueError(f"clip_length: no episode of task {task!r} lasts {clip_length} steps")
    by_id = {e.id: e for e in episodes}
    clips = cut_clips(episodes, clip_length, clips_per_episode, rng)
    return stack_segments([by_id[c.trajectory_id].segment(c.start, c.length) for c in clips])
