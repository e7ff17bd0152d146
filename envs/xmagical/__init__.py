"""X-MAGICAL SweepToTop as gymnasium environments, plus a scripted demonstrator.

Importing this package registers `embodied_pref/XMagical-SweepToTop-{Embodiment}-{State|Pixels}-v0`
for the four embodiments; see `env_id`. The environments truncate themselves after
100 steps (50 for Longstick), so the registrations set no `max_episode_steps`.
"""

import gymnasium

# Must run before anything imports xmagical or pygame; importing any submodule of this
# package runs this file first.
from envs.xmagical import _compat  # noqa: F401
from envs.xmagical.demonstrator import ScriptedSweeper
from envs.xmagical.sweep_to_top import EMBODIMENTS, OBSERVATIONS, SweepToTopEnv, check_choice, state_reward

__all__ = ["EMBODIMENTS", "OBSERVATIONS", "ScriptedSweeper", "SweepToTopEnv", "env_id", "state_reward"]

_ENTRY_POINT = "envs.xmagical.sweep_to_top:SweepToTopEnv"


def env_id(embodiment: str, observation: str) -> str:
    """Gymnasium id, e.g. `env_id("Gripper", "state")` ->
    "embodied_pref/XMagical-SweepToTop-Gripper-State-v0"."""
    check_choice("embodiment", embodiment, EMBODIMENTS)
    check_choice("observation", observation, OBSERVATIONS)
    return f"embodied_pref/XMagical-SweepToTop-{embodiment}-{observation.capitalize()}-v0"


def _register() -> None:
    for embodiment in EMBODIMENTS:
        for observation in OBSERVATIONS:
            name = env_id(embodiment, observation)
            if name not in gymnasium.registry:
                gymnasium.register(
                    name,
                    entry_point=_ENTRY_POINT,
                    kwargs={"embodiment": embodiment, "observation": observation},
                )


_register()
