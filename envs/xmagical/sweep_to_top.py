"""Gymnasium adapter over x-magical's SweepToTop task.

x-magical 0.0.4 speaks the old gym API and draws a frame at every step, even when the
agent observes state vectors. This adapter keeps x-magical's physics, reward and score
untouched and only changes the interface: gymnasium's reset/step signatures, seeding
through `reset(seed=...)`, and frames drawn only when someone asks for them.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from xmagical import render as xm_render
from xmagical.base_env import BaseEnv
from xmagical.benchmarks import EMBODIMENT_TO_CLASS, Embodiment
from xmagical.benchmarks import sweep_to_top as xm_sweep
from xmagical.style import ARENA_ZOOM_OUT, COLORS_RGB, lighten_rgb

from envs.xmagical import variants

EMBODIMENTS: tuple[str, ...] = tuple(e.value for e in Embodiment)
OBSERVATIONS: tuple[str, ...] = ("state", "pixels")
LAYOUTS: tuple[str, ...] = ("demo", "random", "jitter")
# layout="jitter": the demo layout with every block moved by up to this much in x and y
# (uniform, per episode seed): distinct start states that keep the demo's structure (the
# middle block stays on the avoid zone's path to the goal). The robot is not moved: its
# fingers hang on joints that a teleported body would tear.
JITTER_XY = 0.1
# sweep: x-magical's SweepToTop; avoid, group: RAPL's variants (see `variants`).
TASKS: tuple[str, ...] = ("sweep", "avoid", "group")
_INNER_ENVS = {
    "sweep": xm_sweep.SweepToTopEnv,
    "avoid": variants.AvoidSweepToTop,
    "group": variants.GroupSweepToTop,
}

# Episode lengths and physics settings of x-magical's own registered SweepToTop envs.
EPISODE_STEPS: dict[str, int] = {e: 50 if e == "Longstick" else 100 for e in EMBODIMENTS}
FPS = 8
PHYS_STEPS = 10
PHYS_ITER = 10

# A debris centre above this y counts as delivered in the dense reward (x-magical's value).
GOAL_Y = variants.GOAL_Y
# x-magical declares its state in [-1, 1], but positions reach the arena half-size (1.1)
# and normalised distances reach ~1.1; walls keep everything well inside this bound.
STATE_BOUND = 1.5
# The body turns by at most 0.3125 rad a step (the rotation joint's max_bias of 2.5 rad/s at
# 8 steps a second), which a turn command of 0.0625 already reaches: any larger command
# acts the same, so only this sliver of [-1, 1] steers.
TURN_SATURATION = 0.0625


def state_reward(next_obs: np.ndarray) -> np.ndarray:
    """x-magical's dense SweepToTop reward recomputed from state observations.

    next_obs: (B, D) state vectors reached by each step -> (B,) float32, equal to the reward
    the env returns for those steps (minus the mean distance of undelivered debris to y=1).
    For reward-comparison metrics (EPIC) that need the ground truth as a function; the
    variants' counterparts are `variants.avoid_state_reward` and `group_state_reward`.
    """
    return variants.task_progress(next_obs).astype(np.float32)


class _SceneGraphViewer(xm_render.Viewer):
    """An x-magical viewer that keeps the scene graph but never draws it.

    In state mode x-magical's frame would be thrown away: the entities add their geometry
    here, and `SweepToTopEnv.render` draws it with its own viewer.
    """

    def __init__(self) -> None:
        super().__init__(1, 1)
        self._blank = np.zeros((1, 1, 3), dtype=np.uint8)

    def render(self) -> np.ndarray:
        return self._blank


def _no_frame(mode: str = "human") -> None:
    """Stands in for x-magical's per-step drawing in state mode."""


def _make_viewer(size: int) -> xm_render.Viewer:
    """A viewer of the whole arena, as x-magical's allocentric camera frames it."""
    viewer = xm_render.Viewer(size, size, lighten_rgb(COLORS_RGB["grey"], times=4))
    left, right, bottom, top = (b * ARENA_ZOOM_OUT for b in BaseEnv.ARENA_BOUNDS_LRBT)
    viewer.set_bounds(left=left, right=right, bottom=bottom, top=top)
    return viewer


class SweepToTopEnv(gymnasium.Env):
    """Sweep three debris blocks into the goal zone at the top of the arena.

    `task` picks what the reward prefers: "sweep" (x-magical's task), "avoid" (also keep
    out of an off-limits zone) or "group" (also keep the debris together); see
    `envs.xmagical.variants`. The observation and action spaces are the same for all.

    Observations:
        state: (17,) float32 for Gripper, (16,) for the sticks, in x-magical's layout:
            robot xy (2), debris xy (3x2), robot cos/sin (2), robot-debris distances (3),
            debris-top distances (3), [finger width (1), Gripper only].
        pixels: (pixel_size, pixel_size, 3) uint8, the allocentric view.
    Actions: (3,) float32 in [-1, 1] for Gripper (speed, turn, finger), (2,) for the
        sticks (speed, turn); values outside the box are clipped, and turn commands beyond
        ±`TURN_SATURATION` turn the body no faster than ±`TURN_SATURATION`.
    Reward: x-magical's dense ground truth, the negative mean distance of the debris to
        the top wall, where a block above y=0.88 counts as 0 (about -1 at the start, 0 when
        all are delivered). `info` carries it again as `gt_reward`, plus `eval_score`
        (x-magical's score: fraction of debris fully inside the goal zone, in [0, 1]) and
        `embodiment`. For "avoid" and "group" the reward is the ground-truth preference
        reward instead (task progress minus the task's penalty), `gt_reward` repeats it,
        `task_progress` holds x-magical's dense reward, and the info adds `in_zone`,
        `debris_in_zone`, `zone_steps`, `zone_entries` (avoid; the counts since reset) or
        `spread` (group). Every info names its `task`.
    Episodes never terminate; they truncate after `max_episode_steps` steps.
    `render()` returns a (render_size, render_size, 3) uint8 frame whatever the
    observation type or `render_mode`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(
        self,
        embodiment: str,
        observation: str = "state",
        pixel_size: int = 112,
        render_size: int = 256,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        layout: str = "demo",
        task: str = "sweep",
    ) -> None:
        check_choice("task", task, TASKS)
        check_choice("embodiment", embodiment, EMBODIMENTS)
        check_choice("observation", observation, OBSERVATIONS)
        check_choice("layout", layout, LAYOUTS)
        if render_mode is not None:
            check_choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        for name, value in (("pixel_size", pixel_size), ("render_size", render_size)):
            if value < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {value}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")

        self.embodiment = embodiment
        self.task = task
        self.observation = observation
        self.layout = layout
        self.render_mode = render_mode
        self.render_size = render_size
        self.max_episode_steps = max_episode_steps or EPISODE_STEPS[embodiment]

        pixels = observation == "pixels"
        # x-magical's constructor seeds itself from numpy's global generator; leave the
        # caller's global random stream as it was.
        global_rng_state = np.random.get_state()
        self._inner = _INNER_ENVS[task](
            robot_cls=EMBODIMENT_TO_CLASS[Embodiment(embodiment)],
            use_state=not pixels,
            use_dense_reward=True,
            rand_layout_full=layout == "random",
            res_hw=(pixel_size, pixel_size),
            fps=FPS,
            phys_steps=PHYS_STEPS,
            phys_iter=PHYS_ITER,
            # Truncation is decided here; x-magical's own time limit stays off.
            max_episode_steps=None,
        )
        np.random.set_state(global_rng_state)
        if not pixels:
            # x-magical only builds its own viewer when it has none.
            self._inner.renderer = _SceneGraphViewer()
            # x-magical also brings the scene graph up to date at every step; `render` does
            # it when a frame is asked for.
            self._inner.render = _no_frame
        self._display = _make_viewer(render_size)

        action_dim = self._inner.action_dim
        self.action_space = spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
        if pixels:
            self.observation_space = spaces.Box(
                0, 255, shape=(pixel_size, pixel_size, 3), dtype=np.uint8
            )
        else:
            state_dim = self._inner.observation_space.shape[0]
            self.observation_space = spaces.Box(
                -STATE_BOUND, STATE_BOUND, shape=(state_dim,), dtype=np.float32
            )
        self._elapsed_steps = self.max_episode_steps  # no episode until reset()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; the info holds the same keys as `step`'s, for the start state.

        A given `seed` fixes the episode completely (the layout, under layout="random").
        """
        super().reset(seed=seed)
        # The inner env would otherwise draw its seed from numpy's global generator.
        self._inner.seed(int(self.np_random.integers(2**31 - 1)))
        obs = self._inner.reset()
        if self.layout == "jitter":
            obs = self._jitter_layout()
        self._elapsed_steps = 0
        return self._as_obs(obs), self._info(self._inner.get_reward())

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._elapsed_steps >= self.max_episode_steps:
            raise RuntimeError(
                f"{self.spec.id if self.spec else type(self).__name__}: step() called with "
                "no episode in progress (before reset() or after truncation); call reset()"
            )
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got {action.shape}"
            )
        obs, reward, _, _ = self._inner.step(action)
        self._elapsed_steps += 1
        truncated = self._elapsed_steps == self.max_episode_steps
        reward = float(reward)
        return self._as_obs(obs), reward, False, truncated, self._info(reward)

    def _jitter_layout(self) -> np.ndarray:
        """Moves the blocks of the fresh layout; returns the new observation."""
        for shape in self._inner._SweepToTopEnv__debris_shapes:
            body = shape.shape_body
            dx, dy = self.np_random.uniform(-JITTER_XY, JITTER_XY, size=2)
            body.position = (body.position[0] + dx, body.position[1] + dy)
            self._inner._space.reindex_shapes_for_body(body)
        return self._inner.render(mode="rgb_array") if self.observation == "pixels" else self._inner.get_state()

    @property
    def elapsed_steps(self) -> int:
        """Steps taken since the last reset."""
        return self._elapsed_steps

    def render(self) -> np.ndarray:
        """The current scene: (render_size, render_size, 3) uint8."""
        for entity in self._inner._entities:
            entity.pre_draw()
        # x-magical replaces its geometry list at every reset, so share it at draw time.
        self._display.geoms = self._inner.renderer.geoms
        return self._display.render()

    def close(self) -> None:
        self._inner.close()

    def privileged_state(self) -> dict[str, Any]:
        """Simulator ground truth for scripted controllers (not for learning agents).

        Returns:
            robot_xy: (2,) float64; robot_angle: float, radians, 0 faces +y, CCW positive;
            debris_xy: (3, 2) float64; delivered: (3,) bool, debris above `goal_y`;
            goal_y: float.
        """
        state = self._inner.get_state().astype(np.float64)
        debris = state[2:8].reshape(3, 2)
        return {
            "robot_xy": state[0:2],
            "robot_angle": math.atan2(state[9], state[8]),
            "debris_xy": debris,
            "delivered": debris[:, 1] > GOAL_Y,
            "goal_y": GOAL_Y,
        }

    def _as_obs(self, obs: np.ndarray) -> np.ndarray:
        # x-magical hands out pixel frames as transposed (non-contiguous) views.
        return np.ascontiguousarray(obs, dtype=self.observation_space.dtype)

    def _delivered_share(self) -> float:
        """x-magical's `score_on_end_of_traj` without its space query: the share of debris
        whose every shape's bounding box lies inside the goal region's, the containment test
        x-magical applies to what the query finds (a shape inside the region always overlaps
        it, so the query adds nothing but its cost, a third of a state step)."""
        goal = self._inner._SweepToTopEnv__sensor_ref.goal_shape.bb
        debris = self._inner._SweepToTopEnv__debris_shapes
        return sum(all(goal.contains(shape.bb) for shape in block.shapes) for block in debris) / len(debris)

    def _info(self, reward: float) -> dict[str, Any]:
        info = {
            "gt_reward": float(reward),
            "eval_score": self._delivered_share(),
            "embodiment": self.embodiment,
            "task": self.task,
        }
        if self.task != "sweep":
            info["task_progress"] = float(xm_sweep.SweepToTopEnv.get_reward(self._inner))
            info.update(self._inner.variant_info())
        return info


def check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
