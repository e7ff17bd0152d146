"""MineRL BASALT (FindCave, MakeWaterfall, CreateVillageAnimalPen, BuildVillageHouse) as
gymnasium environments, and the action conversions VPT's agents and our trajectories need.

Importing this package registers, for each task (see `env_id`):

- `embodied_pref/Basalt{Task}-v0`: the game, through MineRL 1.0 (imported on `make`; without
  it `make` raises `ModuleNotFoundError` listing the install steps);
- `embodied_pref/Basalt{Task}StandIn-v0`: `StandInBasaltEnv`, with MineRL's spaces and
  episode semantics and drawn frames, for machines without Minecraft.

Both take `pov_size=(height, width)`, `flat_actions=True` and `episode_steps=N` (a shorter
time limit, e.g. for tests) as `gymnasium.make` keywords; see `BasaltEnv`. The envs end
their episodes themselves, so the registrations set no `max_episode_steps`.
"""

import gymnasium

from envs.basalt.actions import (
    CAMERA_BINS,
    CAMERA_ZERO_BIN,
    FLAT_SIZE,
    bins_to_camera,
    camera_to_bins,
    flat_action_space,
    flatten_action,
    noop_action,
    unflatten_action,
)
from envs.basalt.adapter import BasaltEnv, resize_pov
from envs.basalt.spaces import (
    BUTTONS,
    FPS,
    POV_SHAPE,
    TASKS,
    BasaltTask,
    action_space,
    env_id,
    find_task,
    observation_space,
)
from envs.basalt.standin import StandInBasaltEnv

__all__ = [
    "BUTTONS",
    "CAMERA_BINS",
    "CAMERA_ZERO_BIN",
    "FLAT_SIZE",
    "FPS",
    "POV_SHAPE",
    "TASKS",
    "BasaltEnv",
    "BasaltTask",
    "StandInBasaltEnv",
    "action_space",
    "bins_to_camera",
    "camera_to_bins",
    "env_id",
    "find_task",
    "flat_action_space",
    "flatten_action",
    "noop_action",
    "observation_space",
    "resize_pov",
    "unflatten_action",
]

_ENTRY_POINT = "envs.basalt.adapter:BasaltEnv"


def _register() -> None:
    for task in TASKS:
        for stand_in in (False, True):
            name = env_id(task, stand_in=stand_in)
            if name not in gymnasium.registry:
                gymnasium.register(
                    name, entry_point=_ENTRY_POINT, kwargs={"task": task, "stand_in": stand_in}
                )


_register()
