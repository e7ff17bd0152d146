"""Scripted SweepToTop demonstrator whose competence is set by one number.

The expert reads the simulator state (`SweepToTopEnv.privileged_state`) and, for each
debris block not yet delivered, drives to a point below it, turns to face the top wall
and pushes the block up into the goal zone. Embodiments wider than the space around the
blocks (Longstick) cannot turn near them; they sweep the blocks up as a row instead.

Lower quality mixes in lapses (short runs of uniformly random actions) and action noise:
a fraction (1 - quality)^1.5 of steps are lapses, and the expert's actions get Gaussian
noise scaled by (1 - quality). quality=0 is a uniformly random policy.
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium
import numpy as np

from envs.xmagical.sweep_to_top import TURN_SATURATION, SweepToTopEnv

# Push until the block is fully inside the goal zone (x-magical's score), which is
# stricter than the dense reward's y > 0.88.
DONE_Y = 0.93
# Half-diagonal of x-magical's square debris (side sqrt(pi) * 0.12).
DEBRIS_RADIUS = 0.15
# Distance kept between the body and the blocks it drives around.
MARGIN = 0.1


@dataclasses.dataclass(frozen=True)
class _Body:
    half_width: float  # half the extent across the direction of travel
    sweep: float  # radius swept when turning in place

    @property
    def sweeps_rows(self) -> bool:
        """Too wide to turn near blocks: push them up as a row, steering gently."""
        return self.half_width > 0.5


BODIES: dict[str, _Body] = {
    "Gripper": _Body(half_width=0.2, sweep=0.3),
    "Shortstick": _Body(half_width=0.15, sweep=0.16),
    "Mediumstick": _Body(half_width=0.3, sweep=0.31),
    "Longstick": _Body(half_width=0.8, sweep=0.81),
}

# The body turns 5 rad a step per unit of turn command, up to TURN_SATURATION, so heading
# control needs a small gain.
TURN_GAIN = 0.2
# Forward speed is scaled by cos(heading error)^power: turn first, then drive.
APPROACH_GATE = 4.0
PUSH_GATE = 20.0
# Alignment with a block's column to start pushing it, and slack before giving up on it.
ALIGN_TOL = 0.08
LOST_TOL = 0.15
# Push towards a point this far beyond the block, which damps steering near contact.
AIM_AHEAD = 0.3
# Gripper finger command while pushing: closed fingers make a flat, stable front.
FINGERS_CLOSED = 1.0

LAPSE_POWER = 1.5
LAPSE_MAX_STEPS = 4
# Noise std per action dimension (speed, turn, finger) at quality 0; turn is small
# because of its steep response (see TURN_GAIN).
NOISE_STD = np.array([0.3, 0.03, 0.3])
# Commands are recorded as the env acts on them: a turn beyond the saturation is recorded
# at it, so that demonstrations spend their action range on commands that differ.
ACTION_BOUND = np.array([1.0, TURN_SATURATION, 1.0])


class ScriptedSweeper:
    """Policy `obs -> action` for `SweepToTopEnv` (any embodiment, any layout).

    Args:
        env: the environment it acts in (or a wrapper around it); the sweeper reads its
            privileged state at every call, so call it once per step, after `reset`.
        quality: 1.0 expert, 0.0 uniformly random, in between a noisier, lapsing expert.
        seed: seeds the sweeper's own generator (lapses and noise).

    `__call__(obs)` ignores `obs` and returns a (A,) float32 action in [-1, 1] (turn within
    ±`TURN_SATURATION`), A = 3 for Gripper and 2 for the sticks.
    """

    def __init__(self, env: gymnasium.Env, quality: float = 1.0, seed: int = 0) -> None:
        inner = env.unwrapped
        if not isinstance(inner, SweepToTopEnv):
            raise TypeError(f"env must be (or wrap) SweepToTopEnv, got {type(inner).__name__}")
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        self.env = inner
        self.quality = quality
        self.rng = np.random.default_rng(seed)
        self._body = BODIES[inner.embodiment]
        self._action_dim = inner.action_space.shape[0]
        self._lapse_left = 0
        self._target: int | None = None
        self._pushing = False

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        del obs  # the script acts on privileged state
        if self.env.elapsed_steps == 0:
            self._target, self._pushing, self._lapse_left = None, False, 0
        if self._in_lapse():
            action = self.rng.uniform(-1.0, 1.0, self._action_dim)
        else:
            action = self._expert_action() + self.rng.normal(size=3) * NOISE_STD * (1.0 - self.quality)
        bound = ACTION_BOUND[: self._action_dim]
        return np.clip(action[: self._action_dim], -bound, bound).astype(np.float32)

    def _in_lapse(self) -> bool:
        """Start lapses at the rate that makes a (1 - quality)^1.5 share of steps random."""
        if self._lapse_left == 0:
            share = (1.0 - self.quality) ** LAPSE_POWER
            mean_len = (1 + LAPSE_MAX_STEPS) / 2
            start_prob = share / (mean_len * (1.0 - share) + share)
            if self.rng.random() < start_prob:
                self._lapse_left = int(self.rng.integers(1, LAPSE_MAX_STEPS + 1))
        if self._lapse_left > 0:
            self._lapse_left -= 1
            return True
        return False

    def _expert_action(self) -> np.ndarray:
        """(3,) float64 action: speed, turn, fingers."""
        state = self.env.privileged_state()
        pos, heading, debris = state["robot_xy"], state["robot_angle"], state["debris_xy"]
        todo = [i for i in range(len(debris)) if debris[i, 1] < DONE_Y]
        if not todo:
            return np.array([0.0, 0.0, FINGERS_CLOSED])
        body = self._body
        standoff = body.sweep + DEBRIS_RADIUS + MARGIN
        if self._target not in todo:
            self._pushing = False
            below = np.array([0.0, standoff])
            self._target = min(todo, key=lambda i: np.linalg.norm(debris[i] - below - pos))
        group = self._group(debris, todo)
        xs = debris[group, 0]
        push_x, row_y = 0.5 * (xs.min() + xs.max()), debris[group, 1].min()

        if body.sweeps_rows:
            return self._sweep(pos, heading, xs, push_x, row_y)
        self._pushing = self._keeps_pushing(pos, heading, debris[self._target], push_x, row_y)
        if self._pushing:
            aim = np.array([push_x, row_y + AIM_AHEAD])
            return self._drive(pos, heading, aim, gate=PUSH_GATE)
        return self._approach(pos, heading, debris, todo, push_x, standoff)

    def _group(self, debris: np.ndarray, todo: list[int]) -> list[int]:
        """The target plus the undelivered blocks the body's width can push with it."""
        reach = 2 * max(self._body.half_width - 0.1, 0.0)
        target_x = debris[self._target, 0]
        group = [self._target]
        for i in sorted(todo, key=lambda i: abs(debris[i, 0] - target_x)):
            xs = debris[group + [i], 0]
            if i not in group and xs.max() - xs.min() <= reach:
                group.append(i)
        return group

    def _keeps_pushing(
        self, pos: np.ndarray, heading: float, target: np.ndarray, push_x: float, row_y: float
    ) -> bool:
        if not self._pushing:
            return abs(pos[0] - push_x) < ALIGN_TOL and pos[1] < row_y - 0.1
        # While pushing, the block may drift sideways; keep it while it stays in front.
        right = np.array([math.cos(heading), math.sin(heading)])
        in_front = abs((target - pos) @ right) < LOST_TOL + max(0.0, self._body.half_width - 0.2)
        return (in_front or abs(pos[0] - push_x) < LOST_TOL) and pos[1] < row_y - 0.05

    def _approach(
        self,
        pos: np.ndarray,
        heading: float,
        debris: np.ndarray,
        todo: list[int],
        push_x: float,
        standoff: float,
    ) -> np.ndarray:
        """Drive (forwards or backwards) to a lane below all blocks, then along it."""
        lane_y = max(debris[todo, 1].min() - standoff, -0.9)
        if pos[1] < lane_y + 0.1:
            goal = np.array([push_x, lane_y])
        else:
            # From above the lane, prefer a straight line to the start of the push, then
            # a point beside the target's column, then straight down.
            side = 1.0 if pos[0] > push_x else -1.0
            clearance = self._body.half_width + DEBRIS_RADIUS + 0.02
            candidates = [(push_x, lane_y), (push_x + side * standoff, lane_y), (pos[0], lane_y)]
            for goal in map(np.array, candidates):
                if all(_segment_distance(debris[i], pos, goal) > clearance for i in todo):
                    break
        return self._drive(pos, heading, goal, gate=APPROACH_GATE, reverse=True, slow_within=0.15)

    def _sweep(
        self, pos: np.ndarray, heading: float, xs: np.ndarray, push_x: float, row_y: float
    ) -> np.ndarray:
        """Longstick: push the row straight up; re-centre only when far below it."""
        gap = row_y - pos[1]
        covered = np.abs(xs - pos[0]).max() <= self._body.half_width - 0.12
        if covered and gap > 0.05:
            return self._drive(pos, heading, np.array([push_x, 1.5]), max_tilt=0.15)
        if gap > 0.35:
            return self._drive(pos, heading, np.array([push_x, row_y - 0.25]), max_tilt=0.6)
        below = np.array([pos[0], row_y - 0.7])
        return self._drive(pos, heading, below, reverse=True, max_tilt=0.15)

    def _drive(
        self,
        pos: np.ndarray,
        heading: float,
        goal: np.ndarray,
        gate: float = APPROACH_GATE,
        reverse: bool = False,
        slow_within: float | None = None,
        max_tilt: float | None = None,
    ) -> np.ndarray:
        """Steer towards `goal`, backing up when it lies behind and `reverse` is set.

        `max_tilt` bounds the heading (radians from facing +y); `slow_within` is the
        distance below which the speed ramps down to 0 at the goal.
        """
        offset = goal - pos
        want = math.atan2(-offset[0], offset[1])  # heading 0 faces +y, counter-clockwise
        direction = 1.0
        if reverse and abs(_wrap(want - heading)) > math.pi / 2:
            want, direction = _wrap(want + math.pi), -1.0
        if max_tilt is not None:
            want = float(np.clip(want, -max_tilt, max_tilt))
        error = _wrap(want - heading)
        speed = direction * max(0.0, math.cos(error)) ** gate
        if slow_within is not None:
            speed *= min(1.0, float(np.linalg.norm(offset)) / slow_within)
        turn = float(np.clip(error * TURN_GAIN, -1.0, 1.0))
        return np.array([speed, turn, FINGERS_CLOSED])


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip((point - a) @ ab / max(float(ab @ ab), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - point))
