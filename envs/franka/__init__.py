"""Franka Panda tabletop pushing (RAPL's Franka Group and Clutter) as gymnasium environments.

Importing this package registers `embodied_pref/Franka-{Group|Clutter}-{State|Pixels}-v0`;
see `env_id`. Pixel envs observe 112x112 frames; pass `pixel_size=224` to `gymnasium.make`
for 224x224. The environments truncate themselves after 100 steps.

Also registers `embodied_pref/FrankaKitchen-ThirdPerson-v0` (`KITCHEN_ID`): gymnasium-robotics'
FrankaKitchen-v1 whose `render()` shows the robot and the kitchen from a third-person camera.
"""

import gymnasium

try:
    # gymnasium-robotics prints a notice about its Adroit envs (unused here) on import.
    from farama_notifications import notifications as _notifications

    _notifications.pop("gymnasium_robotics", None)
except ImportError:
    pass

from envs.franka.controller import ScriptedPusher
from envs.franka.push import CONTROLS, OBSERVATIONS, TASKS, FrankaPushEnv, check_choice
from envs.franka.scene import CAMERA, GOAL_RADIUS, TOP_CAMERA
from envs.registration import register_variants

__all__ = [
    "CONTROLS",
    "GOAL_RADIUS",
    "KITCHEN_ID",
    "OBSERVATIONS",
    "TASKS",
    "FrankaPushEnv",
    "ScriptedPusher",
    "env_id",
]

_ENTRY_POINT = "envs.franka.push:FrankaPushEnv"
KITCHEN_ID = "embodied_pref/FrankaKitchen-ThirdPerson-v0"


def env_id(task: str, observation: str) -> str:
    """Gymnasium id, e.g. `env_id("group", "state")` -> "embodied_pref/Franka-Group-State-v0"."""
    check_choice("task", task, TASKS)
    check_choice("observation", observation, OBSERVATIONS)
    return f"embodied_pref/Franka-{task.capitalize()}-{observation.capitalize()}-v0"


def _register() -> None:
    register_variants(env_id, _ENTRY_POINT, task=TASKS, observation=OBSERVATIONS)
    if KITCHEN_ID not in gymnasium.registry:
        gymnasium.register(
            KITCHEN_ID, entry_point="envs.franka.kitchen:KitchenThirdPersonEnv"
        )


_register()
