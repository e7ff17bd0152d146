"""RAPL's X-MAGICAL task variants as subclasses of x-magical's own SweepToTop.

Both keep SweepToTop's scene, physics and dense reward (the task progress) and change
only what the preference is about:

avoid: an off-limits zone (an x-magical `GoalRegion`, yellow, dashed) lies between the
    middle debris block and the goal, straight across the path a naive sweeper pushes it
    (and drives) along; the block can reach the goal around it. Preference reward = task
    progress - `ZONE_PENALTY` for every step the robot's centre is inside the zone.
    Debris inside the zone are reported (`debris_in_zone`), not penalised: a noisy expert
    that nudges the block it routes around into the zone would otherwise rank below a
    random policy, which never moves a block that far.
group: push the debris to the goal while keeping them together. Preference reward = task
    progress - `SPREAD_PENALTY` * max(0, spread - `SPREAD_TOLERANCE`), spread being the
    mean pairwise distance across the arena (x) between the debris centres.

The zone, the penalties and the tolerance are fixed (module constants); the avoid zone
does not move with layout="random", whose debris may then start beside or above it.

Both rewards are functions of the state vector (`avoid_state_reward`,
`group_state_reward`). Importing this module requires `envs.xmagical._compat` to have run
(importing the `envs.xmagical` package does that).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xmagical.entities as en
from xmagical.benchmarks import sweep_to_top as xm_sweep

# x-magical's dense reward counts a block above this y as delivered.
GOAL_Y = 0.88
# Rows of the state vector: robot xy, then the three debris xy pairs.
ROBOT_XY = slice(0, 2)
DEBRIS_XY = slice(2, 8)

# Off-limits zone (left, right, bottom, top), in arena units (the arena spans +-1.1).
ZONE_LRBT = (-0.12, 0.12, 0.3, 0.6)
ZONE_COLOR = en.ShapeColor.YELLOW
ZONE_PENALTY = 10.0

SPREAD_TOLERANCE = 0.3
SPREAD_PENALTY = 2.0


def task_progress(next_obs: np.ndarray) -> np.ndarray:
    """x-magical's dense SweepToTop reward from state vectors: (..., D) -> (...,) float64."""
    debris_y = np.asarray(next_obs, dtype=np.float64)[..., DEBRIS_XY][..., 1::2]
    distance = np.where(debris_y > GOAL_Y, 0.0, np.abs(1.0 - debris_y))
    return -distance.mean(-1)


def in_zone(xy: np.ndarray) -> np.ndarray:
    """Whether points lie inside the off-limits zone: (..., 2) -> (...,) bool."""
    xy = np.asarray(xy, dtype=np.float64)
    left, right, bottom, top = ZONE_LRBT
    x, y = xy[..., 0], xy[..., 1]
    return (left <= x) & (x <= right) & (bottom <= y) & (y <= top)


def zone_occupancy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(robot inside (...,) bool, debris inside (...,) int) from state vectors (..., D)."""
    obs = np.asarray(obs, dtype=np.float64)
    debris = obs[..., DEBRIS_XY].reshape(obs.shape[:-1] + (3, 2))
    return in_zone(obs[..., ROBOT_XY]), in_zone(debris).sum(-1)


def debris_spread(obs: np.ndarray) -> np.ndarray:
    """Mean pairwise distance across the arena (|dx|) between the debris centres.

    obs: (..., D) -> (...,) float64. Only x counts: the blocks reach the goal one at a
    time, so their distance along y says how far the delivery has got, not how grouped
    they are.
    """
    x = np.asarray(obs, dtype=np.float64)[..., DEBRIS_XY][..., 0::2]
    pairs = [(0, 1), (0, 2), (1, 2)]
    return np.mean([np.abs(x[..., i] - x[..., j]) for i, j in pairs], axis=0)


def avoid_state_reward(next_obs: np.ndarray) -> np.ndarray:
    """Avoid's preference reward from the state vectors each step reached.

    next_obs: (B, D) -> (B,) float32, equal to the reward `SweepToTopEnv(task="avoid")` returns.
    """
    robot_inside, _ = zone_occupancy(next_obs)  # debris inside are reported, not penalised
    penalty = ZONE_PENALTY * robot_inside
    return (task_progress(next_obs) - penalty).astype(np.float32)


def group_state_reward(next_obs: np.ndarray) -> np.ndarray:
    """Group's preference reward from the state vectors each step reached.

    next_obs: (B, D) -> (B,) float32, equal to the reward `SweepToTopEnv(task="group")` returns.
    """
    excess = np.maximum(debris_spread(next_obs) - SPREAD_TOLERANCE, 0.0)
    return (task_progress(next_obs) - SPREAD_PENALTY * excess).astype(np.float32)


class AvoidSweepToTop(xm_sweep.SweepToTopEnv):
    """SweepToTop with an off-limits zone; counts the robot's visits to it."""

    def on_reset(self) -> None:
        left, right, bottom, top = ZONE_LRBT
        # Added before SweepToTop's entities so that the robot and debris draw over it.
        self.zone = en.GoalRegion(left, top, top - bottom, right - left, ZONE_COLOR, dashed=True)
        self.add_entities([self.zone])
        super().on_reset()
        self.zone_steps = 0
        self.zone_entries = 0
        self._was_inside = self._occupancy()[0]

    def step(self, action: np.ndarray):
        out = super().step(action)
        inside = self._occupancy()[0]
        self.zone_steps += int(inside)
        self.zone_entries += int(inside and not self._was_inside)
        self._was_inside = inside
        return out

    def get_reward(self) -> float:
        robot_inside, _ = self._occupancy()
        return super().get_reward() - ZONE_PENALTY * int(robot_inside)

    def variant_info(self) -> dict[str, Any]:
        robot_inside, debris_inside = self._occupancy()
        return {
            "in_zone": robot_inside,
            "debris_in_zone": debris_inside,
            "zone_steps": self.zone_steps,
            "zone_entries": self.zone_entries,
        }

    def _occupancy(self) -> tuple[bool, int]:
        robot_inside, debris_inside = zone_occupancy(self.get_state())
        return bool(robot_inside), int(debris_inside)


class GroupSweepToTop(xm_sweep.SweepToTopEnv):
    """SweepToTop whose reward also asks to keep the debris together."""

    def get_reward(self) -> float:
        excess = max(float(debris_spread(self.get_state())) - SPREAD_TOLERANCE, 0.0)
        return super().get_reward() - SPREAD_PENALTY * excess

    def variant_info(self) -> dict[str, Any]:
        return {"spread": float(debris_spread(self.get_state()))}
