"""X-MAGICAL SweepToTop and RAPL's variants as gymnasium environments, plus scripted
demonstrators.

Importing this package registers `embodied_pref/XMagical-SweepToTop-{Embodiment}-{State|Pixels}-v0`
and the variants `embodied_pref/XMagical-{Avoid|Group}-{Embodiment}-{State|Pixels}-v0` for
the four embodiments; see `env_id`. The environments truncate themselves after
100 steps (50 for Longstick), so the registrations set no `max_episode_steps`.
"""


# Must run before anything imports xmagical or pygame; importing any submodule of this
# package runs this file first.
from envs.xmagical import _compat  # noqa: F401
from envs.xmagical.demonstrator import ScriptedSweeper
from envs.xmagical.sweep_to_top import (
    EMBODIMENTS,
    OBSERVATIONS,
    TASKS,
    SweepToTopEnv,
    check_choice,
    state_reward,
)
from envs.xmagical.variant_demonstrators import (
    AvoidingSweeper,
    GroupingSweeper,
    make_demonstrator,
)
from envs.xmagical.variants import avoid_state_reward, group_state_reward
from envs.registration import register_variants

__all__ = [
    "EMBODIMENTS",
    "OBSERVATIONS",
    "TASKS",
    "AvoidingSweeper",
    "GroupingSweeper",
    "ScriptedSweeper",
    "SweepToTopEnv",
    "avoid_state_reward",
    "env_id",
    "group_state_reward",
    "make_demonstrator",
    "state_reward",
]

_TASK_NAMES = {"sweep": "SweepToTop", "avoid": "Avoid", "group": "Group"}

_ENTRY_POINT = "envs.xmagical.sweep_to_top:SweepToTopEnv"


def env_id(embodiment: str, observation: str, task: str = "sweep") -> str:
    """Gymnasium id, e.g. `env_id("Gripper", "state")` ->
    "embodied_pref/XMagical-SweepToTop-Gripper-State-v0", `env_id("Gripper", "pixels", "avoid")`
    -> "embodied_pref/XMagical-Avoid-Gripper-Pixels-v0"."""
    check_choice("embodiment", embodiment, EMBODIMENTS)
    check_choice("observation", observation, OBSERVATIONS)
    check_choice("task", task, TASKS)
    return f"embodied_pref/XMagical-{_TASK_NAMES[task]}-{embodiment}-{observation.capitalize()}-v0"


register_variants(env_id, _ENTRY_POINT, task=TASKS, embodiment=EMBODIMENTS, observation=OBSERVATIONS)
