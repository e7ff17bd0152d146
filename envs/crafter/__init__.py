"""Crafter (danijar/crafter), the Minecraft-like 2-d survival game, as gymnasium environments
with ground-truth preference rewards, a scripted player of controllable quality and the
Crafter score.

Importing this package registers `embodied_pref/Crafter-{Achieve|Thrift}-{State|Pixels}-v0`;
see `env_id`. Tasks (see `envs.crafter.game.preference_reward`):
- achieve: +1 per achievement unlocked for the first time in the episode, −0.5 per health
  point lost (the dispreferred behaviour: getting hurt, starving, going thirsty);
- thrift: +1 per new achievement, −0.5 per needless placement, every table and every stone
  placed after the first of its kind (the dispreferred behaviour: wasting wood and stone).
Episodes end when the player dies and truncate after 500 steps (`length=` to change it);
pass `render_size=` to `gymnasium.make` for `render()` frames larger than the 64×64
observation.
"""

from envs.crafter.game import (
    ACHIEVEMENTS,
    ACTIONS,
    EPISODE_STEPS,
    HEALTH_PENALTY,
    ITEMS,
    OBSERVATIONS,
    STATE_DIM,
    STATE_LAYOUT,
    TASKS,
    WASTE_PENALTY,
    CrafterEnv,
    placement_waste,
    preference_reward,
    violates_preference,
)
from envs.crafter.player import ScriptedPlayer
from envs.crafter.score import crafter_score, success_rates
from envs.registration import check_choice, register_variants

__all__ = [
    "ACHIEVEMENTS",
    "ACTIONS",
    "EPISODE_STEPS",
    "HEALTH_PENALTY",
    "ITEMS",
    "OBSERVATIONS",
    "STATE_DIM",
    "STATE_LAYOUT",
    "TASKS",
    "WASTE_PENALTY",
    "CrafterEnv",
    "ScriptedPlayer",
    "crafter_score",
    "env_id",
    "placement_waste",
    "preference_reward",
    "success_rates",
    "violates_preference",
]

_ENTRY_POINT = "envs.crafter.game:CrafterEnv"


def env_id(task: str, observation: str) -> str:
    """Gymnasium id, e.g. `env_id("achieve", "state")` -> "embodied_pref/Crafter-Achieve-State-v0"."""
    check_choice("task", task, TASKS)
    check_choice("observation", observation, OBSERVATIONS)
    return f"embodied_pref/Crafter-{task.capitalize()}-{observation.capitalize()}-v0"


register_variants(env_id, _ENTRY_POINT, task=TASKS, observation=OBSERVATIONS)
