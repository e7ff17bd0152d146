"""MineRL BASALT's tasks, episode lengths and spaces, as MineRL 1.0 declares them.

The action dict is VPT's `TARGET_ACTION_SPACE` (MineRL 1.0's human-control actions): 22
buttons, each `Discrete(2)`, and `camera`, a `Box(-180, 180, (2,), float32)` of
[pitch, yaw] degrees to turn by in one step. The only observation is `pov`, the game at
640x360 (width x height). The game runs at 20 steps a second and pays no reward.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from gymnasium import spaces

FPS = 20
POV_SHAPE = (360, 640, 3)
"""(height, width, channels) of MineRL's `pov` observation."""

BUTTONS: tuple[str, ...] = (
    "ESC", "attack", "back", "drop", "forward",
    *(f"hotbar.{n}" for n in range(1, 10)),
    "inventory", "jump", "left", "pickItem", "right", "sneak", "sprint", "swapHands", "use",
)
"""The button actions, in the order of MineRL's (sorted) action Dict."""

CAMERA = "camera"
CAMERA_LIMIT = 180.0
"""Degrees: each camera component lies in [-CAMERA_LIMIT, CAMERA_LIMIT]."""


@dataclasses.dataclass(frozen=True)
class BasaltTask:
    """One BASALT task."""

    name: str
    """Short name, e.g. "FindCave"."""
    minerl_id: str
    """MineRL 1.0's gym id, e.g. "MineRLBasaltFindCave-v0"."""
    episode_steps: int
    """Time limit in steps (20 a second)."""


TASKS: dict[str, BasaltTask] = {
    task.name: task
    for task in (
        BasaltTask("FindCave", "MineRLBasaltFindCave-v0", 3 * 60 * FPS),
        BasaltTask("MakeWaterfall", "MineRLBasaltMakeWaterfall-v0", 5 * 60 * FPS),
        BasaltTask("CreateVillageAnimalPen", "MineRLBasaltCreateVillageAnimalPen-v0", 5 * 60 * FPS),
        BasaltTask("BuildVillageHouse", "MineRLBasaltBuildVillageHouse-v0", 12 * 60 * FPS),
    )
}


def env_id(task: str, stand_in: bool = False) -> str:
    """Our gymnasium id of a task, e.g. `env_id("FindCave")` -> "embodied_pref/BasaltFindCave-v0"
    (needs MineRL), `env_id("FindCave", stand_in=True)` ->
    "embodied_pref/BasaltFindCaveStandIn-v0"."""
    return f"embodied_pref/Basalt{find_task(task).name}{'StandIn' if stand_in else ''}-v0"


def find_task(name: str) -> BasaltTask:
    """The task called `name` (a short name such as "FindCave" or a MineRL id)."""
    for candidate in TASKS.values():
        if name in (candidate.name, candidate.minerl_id):
            return candidate
    choices = ", ".join(repr(t.name) for t in TASKS.values())
    raise ValueError(f"task: expected one of {choices} (or its MineRL id), found {name!r}")


def action_space() -> spaces.Dict:
    """MineRL 1.0's BASALT action space (equal to VPT's `TARGET_ACTION_SPACE`)."""
    buttons = {name: spaces.Discrete(2) for name in BUTTONS}
    camera = spaces.Box(-CAMERA_LIMIT, CAMERA_LIMIT, shape=(2,), dtype=np.float32)
    return spaces.Dict({**buttons, CAMERA: camera})


def observation_space() -> spaces.Dict:
    """MineRL 1.0's BASALT observation space: `{"pov": (360, 640, 3) uint8}`."""
    return spaces.Dict({"pov": spaces.Box(0, 255, shape=POV_SHAPE, dtype=np.uint8)})
