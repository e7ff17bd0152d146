"""Scripted pusher for the Franka tasks, with a quality knob and a preference-violation knob.

The expert reads the simulator state (`FrankaPushEnv.ee_position/block_xy/goal`) and pushes
one block at a time: it moves the hand to a point behind the block (seen from the block's
destination), lifting over any block in the way (in clutter, always), lowers it and pushes
the block to its destination at `PUSH_SPEED`, steering back onto the block-destination line.

- group: the blocks' destinations are two points `GROUP_GAP` apart around the goal centre.
  With `violation=1` they are `APART_GAP` apart: both end in the goal disk, far apart.
- clutter: with `violation=1` the hand never lifts, so it ploughs through the distractors
  on its way behind the block.

quality q: each step is, with probability 1 - q, a uniformly random action (q=0 is a
uniform random policy); violation v: an episode follows the violating plan w.p. v.
"""

from __future__ import annotations

import numpy as np

from envs.franka.push import EE_HIGH, EE_LOW, FrankaPushEnv, segment_distance
from envs.franka.scene import BLOCK_HALF, GOAL_RADIUS

GROUP_GAP = 2 * BLOCK_HALF + 0.01
APART_GAP = 2 * (GOAL_RADIUS - 0.01)
BEHIND = BLOCK_HALF + 0.035  # hand distance behind the block centre before a push
HOVER_Z = 0.14
PUSH_Z = EE_LOW[2]
DONE_TOL = 0.02  # a block this close to its destination is done
CLEARANCE = BLOCK_HALF * 1.5 + 0.02  # block centre to hand path, for low moves
PUSH_SPEED = 0.6  # fraction of full speed while pushing, so blocks do not slide on
GAIN = (
    1.0 / 0.04
)  # action per metre of error (saturates at 4 cm; higher gains oscillate)


class ScriptedPusher:
    """policy(obs) -> (3,) float32 EE action for a `FrankaPushEnv` with control="ee".

    Call `reset()` after each `env.reset()` (it re-plans and re-draws the violation coin).
    """

    def __init__(
        self, env, quality: float = 1.0, violation: float = 0.0, seed: int = 0
    ) -> None:
        if not (0.0 <= quality <= 1.0 and 0.0 <= violation <= 1.0):
            raise ValueError(
                f"ScriptedPusher: quality={quality}, violation={violation}; expected both in [0, 1]"
            )
        self.env: FrankaPushEnv = env.unwrapped
        if self.env.control != "ee":
            raise ValueError("ScriptedPusher: expected an env with control='ee'")
        self.quality, self.violation = quality, violation
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.violating = bool(self.rng.random() < self.violation)
        self._plan: list[tuple[int, np.ndarray]] | None = None
        self._phase = "travel"

    def __call__(self, obs: np.ndarray | None = None) -> np.ndarray:
        if self._plan is None:
            self._plan = self._make_plan()
        expert = self._expert_action()
        if self.rng.random() >= self.quality:
            return self.rng.uniform(-1.0, 1.0, 3).astype(np.float32)
        return expert

    def _make_plan(self) -> list[tuple[int, np.ndarray]]:
        """(block index, destination xy) in pushing order."""
        env, goal = self.env, self.env.goal
        xy = env.block_xy()
        if env.task == "clutter":
            return [(0, goal)]
        gap = APART_GAP if self.violating else GROUP_GAP
        # The block nearer the goal goes first, to the goal's far side as seen from the other
        # block; the other then arrives from its own side and stops beside it.
        first = int(np.argmin(np.linalg.norm(xy[:2] - goal, axis=1)))
        away = goal - xy[1 - first]
        away = away / (np.linalg.norm(away) + 1e-9)
        return [(first, goal + away * gap / 2), (1 - first, goal - away * gap / 2)]

    def _expert_action(self) -> np.ndarray:
        ee, xy = self.env.ee_position(), self.env.block_xy()
        while (
            self._plan
            and np.linalg.norm(xy[self._plan[0][0]] - self._plan[0][1]) < DONE_TOL
        ):
            self._plan.pop(0)
            self._phase = "travel"
        if not self._plan:
            return self._towards(np.array([*ee[:2], HOVER_Z]), ee)
        block, dest = self._plan[0]
        pos = xy[block]
        to_dest = dest - pos
        direction = to_dest / (np.linalg.norm(to_dest) + 1e-9)
        behind = np.clip(pos - BEHIND * direction, EE_LOW[:2], EE_HIGH[:2])
        rel = ee[:2] - pos
        along = float(rel @ direction)
        across = float(rel[0] * direction[1] - rel[1] * direction[0])
        if self._phase == "push" and (abs(across) > 0.05 or along > -BLOCK_HALF / 2):
            self._phase = "travel"
        if self._phase == "descend" and np.linalg.norm(ee[:2] - behind) > 0.04:
            self._phase = "travel"
        if self._phase == "travel" and np.linalg.norm(ee[:2] - behind) < 0.02:
            self._phase = "descend"
        if self._phase == "descend" and ee[2] < PUSH_Z + 0.015:
            self._phase = "push"
        if self._phase == "push":
            # Drive along the block-destination line, steering back onto it.
            step = min(float(np.linalg.norm(to_dest)), 0.04)
            line_point = pos + along * direction
            target_xy = ee[:2] + step * direction + 0.7 * (line_point - ee[:2])
            return PUSH_SPEED * self._towards(np.array([*target_xy, PUSH_Z]), ee)
        if self._phase == "descend":
            return self._towards(np.array([*behind, PUSH_Z]), ee)
        if self.violating and self.env.task == "clutter":
            return self._towards(np.array([*behind, PUSH_Z]), ee)
        if not self._path_is_clear(ee[:2], behind, xy, skip=block if along < -BLOCK_HALF else None):
            if ee[2] < HOVER_Z - 0.03:
                return self._towards(np.array([*ee[:2], HOVER_Z]), ee)
            return self._towards(np.array([*behind, HOVER_Z]), ee)
        return self._towards(np.array([*behind, PUSH_Z]), ee)

    def _path_is_clear(
        self, start: np.ndarray, end: np.ndarray, xy: np.ndarray, skip: int | None = None
    ) -> bool:
        """Whether the hand can move low from start to end without touching any block but
        `skip` (the pushed block, when the hand is already behind it)."""
        if self.env.task == "clutter":
            return False  # the careful expert always lifts over the clutter
        return all(segment_distance(p, start, end) > CLEARANCE for i, p in enumerate(xy) if i != skip)

    @staticmethod
    def _towards(target: np.ndarray, ee: np.ndarray) -> np.ndarray:
        return np.clip(GAIN * (target - ee), -1.0, 1.0).astype(np.float32)
