"""Scripted demonstrators for RAPL's SweepToTop variants, each with a violation knob.

Both extend `ScriptedSweeper` (same quality knob: lapses and action noise; quality=0 is
uniformly random). The compliant experts push each block towards its own aim point on the
goal line (`_AimedSweeper`), which may lie off the block's column; the violating experts
are the plain sweeper, which pushes every block straight up its column.

AvoidingSweeper: the off-limits zone lies across the middle block's column, so the
    violating expert pushes the block, and drives itself, through it. The compliant expert
    pushes that block diagonally past the zone (first, before the blocks beside the goal
    point it aims at arrive there) and steers every leg of its own route around the zone,
    through a corner of the zone grown by `DETOUR_MARGIN`.
GroupingSweeper: the violating expert delivers the blocks as far apart as they started;
    the compliant one aims them at slots `SLOT_GAP` apart around the blocks' median x.

Longstick cannot turn near the blocks and only sweeps them up as a row: on avoid its
compliant expert tilts the stick to slide its centre around the zone; on group it first
gathers the row by swinging the stick's ends in (one end up, then the other, turning in
place just below the blocks) and then sweeps the gathered blocks up, while its violating
expert sweeps the row up as spread as it started.
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np

from envs.xmagical import variants
from envs.xmagical.demonstrator import (
    AIM_AHEAD,
    ALIGN_TOL,
    APPROACH_GATE,
    DEBRIS_RADIUS,
    DONE_Y,
    FINGERS_CLOSED,
    LOST_TOL,
    MARGIN,
    PUSH_GATE,
    TURN_GAIN,
    ScriptedSweeper,
    _segment_distance,
)
from envs.xmagical.sweep_to_top import SweepToTopEnv

# Detour corners lie this far outside the zone; legs are checked against a zone grown
# by half as much, so that a corner sees the next one.
DETOUR_MARGIN = 0.1
# Heading bound (radians) that Longstick may use on a detour.
DETOUR_TILT = 0.7
# Half-size of x-magical's square arena.
ARENA_HALF = 1.1
# A detour corner this close counts as reached.
REACHED = 0.08
# x offset from the zone's centre of the aim point for blocks whose column crosses it.
BYPASS_X = 0.8
# Distance between neighbouring delivery slots; a debris block is ~0.21 wide.
SLOT_GAP = 0.22
# Longstick gathering: the gap below the row to swing from, and the headings the two
# swings turn to (left end up first, then the right end up).
SWING_GAP = 0.37
SWING_HEADINGS = (-0.65, 1.15)


def _check_task(env: gymnasium.Env, task: str) -> SweepToTopEnv:
    inner = env.unwrapped
    if not isinstance(inner, SweepToTopEnv) or inner.task != task:
        got = getattr(inner, "task", type(inner).__name__)
        raise TypeError(f"env must be (or wrap) SweepToTopEnv(task={task!r}), got {got!r}")
    return inner


class _AimedSweeper(ScriptedSweeper):
    """A sweeper that pushes each block towards its own point on the goal line.

    Subclasses give `_aim_x(debris) -> (3,)` (x of each block's aim point at y=1) and
    `_priority(debris, todo) -> int` (the block to push next); `violate=True` (and
    Longstick) falls back to the plain sweeper.
    """

    TASK = ""  # the env task it acts in

    def __init__(
        self, env: gymnasium.Env, quality: float = 1.0, seed: int = 0, violate: bool = False
    ) -> None:
        _check_task(env, self.TASK)
        super().__init__(env, quality=quality, seed=seed)
        self.violate = violate
        self._aims: np.ndarray | None = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.env.elapsed_steps == 0:
            self._aims = None
            self._swings_done = 0
        return super().__call__(obs)

    def _aim_x(self, debris: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _priority(self, debris: np.ndarray, todo: list[int], pos: np.ndarray) -> int:
        raise NotImplementedError

    def _leg_allowed(self, start: np.ndarray, end: np.ndarray) -> bool:
        """Whether the robot may drive straight from `start` to `end`."""
        return True

    def _expert_action(self) -> np.ndarray:
        if self.violate or self._body.sweeps_rows:
            return super()._expert_action()
        state = self.env.privileged_state()
        pos, heading, debris = state["robot_xy"], state["robot_angle"], state["debris_xy"]
        if self._aims is None:
            self._aims = self._aim_x(debris)
        todo = [i for i in range(len(debris)) if debris[i, 1] < DONE_Y]
        if not todo:
            return np.array([0.0, 0.0, FINGERS_CLOSED])
        if self._target not in todo:
            self._pushing = False
            self._target = self._priority(debris, todo, pos)
        block = debris[self._target]
        direction = np.array([self._aims[self._target], 1.0]) - block
        direction /= np.linalg.norm(direction)
        offset = pos - block
        along = float(offset @ direction)
        across = abs(float(offset[0] * direction[1] - offset[1] * direction[0]))
        if self._pushing:
            slack = LOST_TOL + max(0.0, self._body.half_width - 0.2)
            self._pushing = across < slack and along < -0.05
        else:
            self._pushing = across < ALIGN_TOL and along < -0.1
        if self._pushing:
            return self._drive(pos, heading, block + AIM_AHEAD * direction, gate=PUSH_GATE)
        standoff = self._body.sweep + DEBRIS_RADIUS + MARGIN
        behind = block - standoff * direction
        behind[1] = max(behind[1], -0.9)
        # Straight to the spot behind the block, else around the blocks still to push:
        # down (or up) to its height, beside the block, or sideways out of its column first.
        clearance = self._body.half_width + DEBRIS_RADIUS - 0.05
        side = 1.0 if pos[0] >= block[0] else -1.0
        beside = block[0] + side * (clearance + 0.1)
        if abs(beside) > ARENA_HALF - self._body.half_width - 0.05:  # no room by the wall
            beside = block[0] - side * (clearance + 0.1)
        candidates = (
            behind,
            np.array([pos[0], behind[1]]),
            np.array([beside, behind[1]]),
            np.array([beside, pos[1]]),
        )
        goal = behind
        for candidate in candidates:
            if (
                np.linalg.norm(candidate - pos) > REACHED
                and self._leg_allowed(pos, candidate)
                and self._leg_allowed(candidate, behind)
                and all(_segment_distance(debris[i], pos, candidate) > clearance for i in todo)
            ):
                goal = candidate
                break
        return self._drive(pos, heading, goal, gate=APPROACH_GATE, reverse=True, slow_within=0.15)


class AvoidingSweeper(_AimedSweeper):
    """Policy `obs -> action` for `SweepToTopEnv(task="avoid")`.

    Args:
        env, quality, seed: as for `ScriptedSweeper`.
        violate: False keeps the robot's centre and the blocks out of the off-limits
            zone; True ignores the zone and crosses it.
    """

    TASK = "avoid"

    def _aim_x(self, debris: np.ndarray) -> np.ndarray:
        left, right, _, _ = variants.ZONE_LRBT
        centre, half = (left + right) / 2, (right - left) / 2
        aims = debris[:, 0].copy()
        blocked = np.abs(aims - centre) < half + DEBRIS_RADIUS
        side = np.where(aims >= centre, 1.0, -1.0)
        aims[blocked] = centre + side[blocked] * BYPASS_X
        return aims

    def _priority(self, debris: np.ndarray, todo: list[int], pos: np.ndarray) -> int:
        # Narrow bodies push the blocks that pass the zone first (their path crosses the
        # other columns); wider ones would then be stuck above the zone, beside the wall,
        # so they push those blocks last. Ties go to the nearest block.
        bypassed = self._aims != debris[:, 0]
        bypass_first = self._body.half_width < 0.25
        return min(todo, key=lambda i: (bypassed[i] != bypass_first, float(np.linalg.norm(debris[i] - pos))))

    def _leg_allowed(self, start: np.ndarray, end: np.ndarray) -> bool:
        return self.violate or _detour(start, end) is None

    def _drive(
        self, pos, heading, goal, gate=APPROACH_GATE, reverse=False, slow_within=None, max_tilt=None
    ):
        if not self.violate:
            waypoint = _detour(pos, np.asarray(goal, dtype=np.float64))
            if waypoint is not None:
                # Pushing gates the speed hard on the heading; a detour must move off at once.
                goal, gate, reverse, slow_within = waypoint, APPROACH_GATE, True, None
                max_tilt = None if max_tilt is None else DETOUR_TILT
        return super()._drive(pos, heading, goal, gate, reverse, slow_within, max_tilt)


def _detour(pos: np.ndarray, goal: np.ndarray) -> np.ndarray | None:
    """Where to head instead of `goal` when the leg pos -> goal crosses the zone, else None.

    The shortest route from `pos` to `goal` over the corners of the zone grown by
    `DETOUR_MARGIN` (corners within `REACHED` of `pos` count as passed).
    """
    test_box = _grown(variants.ZONE_LRBT, DETOUR_MARGIN / 2)
    if not _crosses(pos, goal, test_box):
        return None
    left, right, bottom, top = _grown(variants.ZONE_LRBT, DETOUR_MARGIN)
    corners = [np.array([x, y]) for x in (left, right) for y in (bottom, top)]
    nodes = [pos] + [c for c in corners if np.linalg.norm(c - pos) > REACHED] + [goal]
    # Dijkstra over at most six nodes; node 0 is the robot, the last one the goal.
    cost = [0.0] + [math.inf] * (len(nodes) - 1)
    first_hop: list[int | None] = [None] * len(nodes)
    todo = set(range(len(nodes)))
    while todo:
        here = min(todo, key=cost.__getitem__)
        todo.remove(here)
        if math.isinf(cost[here]):
            break
        for there in todo:
            if _crosses(nodes[here], nodes[there], test_box):
                continue
            new_cost = cost[here] + float(np.linalg.norm(nodes[there] - nodes[here]))
            if new_cost < cost[there]:
                cost[there] = new_cost
                first_hop[there] = there if here == 0 else first_hop[here]
    hop = first_hop[-1]
    if hop is None:  # inside the grown zone: leave by the nearest corner
        return min(corners, key=lambda c: float(np.linalg.norm(c - pos)))
    return nodes[hop]


def _grown(box: tuple[float, float, float, float], by: float) -> tuple[float, float, float, float]:
    left, right, bottom, top = box
    return (left - by, right + by, bottom - by, top + by)


def _crosses(a: np.ndarray, b: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether the segment a -> b meets the axis-aligned box (Liang-Barsky clipping)."""
    left, right, bottom, top = box
    t0, t1 = 0.0, 1.0
    d = b - a
    for p, q in (
        (-d[0], a[0] - left),
        (d[0], right - a[0]),
        (-d[1], a[1] - bottom),
        (d[1], top - a[1]),
    ):
        if abs(p) < 1e-12:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return True


class GroupingSweeper(_AimedSweeper):
    """Policy `obs -> action` for `SweepToTopEnv(task="group")`.

    Args:
        env, quality, seed: as for `ScriptedSweeper`.
        violate: False delivers the blocks side by side; True pushes each up its own column,
            leaving them spread as they started.
    """

    TASK = "group"

    def _aim_x(self, debris: np.ndarray) -> np.ndarray:
        centre = float(np.clip(np.median(debris[:, 0]), -0.6, 0.6))
        ranks = np.argsort(np.argsort(debris[:, 0]))
        return centre + (ranks - 1) * SLOT_GAP

    def _priority(self, debris: np.ndarray, todo: list[int], pos: np.ndarray) -> int:
        # The block nearest its slot first: it needs the straightest push.
        return min(todo, key=lambda i: abs(debris[i, 0] - self._aims[i]))

    def _sweep(
        self, pos: np.ndarray, heading: float, xs: np.ndarray, push_x: float, row_y: float
    ) -> np.ndarray:
        if self.violate or self._swings_done == len(SWING_HEADINGS):
            return super()._sweep(pos, heading, xs, push_x, row_y)
        if row_y - pos[1] > SWING_GAP:
            return self._drive(pos, heading, np.array([pos[0], row_y - SWING_GAP + 0.05]), max_tilt=0.1)
        target = SWING_HEADINGS[self._swings_done]
        error = target - heading
        if abs(error) < 0.1:
            self._swings_done += 1
        return np.array([0.0, float(np.clip(error * TURN_GAIN * 5, -1.0, 1.0)), FINGERS_CLOSED])


def make_demonstrator(
    env: gymnasium.Env, quality: float = 1.0, seed: int = 0, violate: bool = False
) -> ScriptedSweeper:
    """The scripted demonstrator for `env`'s task; `violate` is only meaningful for the variants."""
    task = getattr(env.unwrapped, "task", None)
    if task == "avoid":
        return AvoidingSweeper(env, quality, seed, violate)
    if task == "group":
        return GroupingSweeper(env, quality, seed, violate)
    if violate:
        raise ValueError(f"task {task!r} has no preference to violate; pass violate=False")
    return ScriptedSweeper(env, quality, seed)
