"""A stand-in for a MineRL 1.0 BASALT environment, for machines without Minecraft.

It speaks MineRL's old gym API with MineRL's spaces and episode semantics, so that code
written against MineRL (such as `envs.basalt.adapter.BasaltEnv`) runs over it unchanged:

- `seed(seed)` seeds the next `reset()` only (MineRL forgets the seed after a reset);
- `reset() -> {"pov": (360, 640, 3) uint8}`;
- `step(action) -> (obs, 0.0, done, {})`: done once the time limit is reached or when the
  action presses ESC (MineRL's `BasaltTimeoutWrapper` and `DoneOnESCWrapper`); stepping
  after done raises `RuntimeError`, as MineRL does;
- `task.name` and `task.max_episode_steps` as on MineRL's env spec.

Its frames are simple and deterministic but react to the actions like the game's view: the
camera pans a ring of coloured pillars (yaw) and moves the horizon (pitch), walking
scrolls the ground stripes, attacking reddens the crosshair, the hotbar shows the selected
slot and the inventory key toggles a grey inventory panel. The seed picks the colours and
the starting yaw.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import numpy as np

from envs.basalt.spaces import BUTTONS, POV_SHAPE, action_space, find_task, observation_space

PIXELS_PER_DEGREE = 6.4
"""Screen pixels the view moves when the camera turns by one degree."""
PILLARS = 12
"""Pillars evenly spaced around the horizon (one every 30 degrees of yaw)."""
PILLAR_WIDTH_DEGREES = 8.0
WALK_PER_STEP = 0.2
"""Blocks walked per step with forward/back/left/right held."""
STRIPE_PIXELS = 24
"""Height of one ground stripe; walking one block scrolls them by this much."""
HOTBAR_SLOT = 40
"""Width and height of a hotbar slot in pixels."""


class StandInBasaltEnv:
    """A BASALT task with MineRL 1.0's interface and drawn frames (see the module docstring).

    `episode_steps` replaces the task's time limit (3,600 to 14,400 steps) for short runs.
    """

    def __init__(self, task: str, episode_steps: int | None = None) -> None:
        basalt_task = find_task(task)
        steps = basalt_task.episode_steps if episode_steps is None else episode_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"episode_steps: expected an int >= 1, found {episode_steps!r}")
        self.task = types.SimpleNamespace(name=basalt_task.minerl_id, max_episode_steps=steps)
        self.action_space = action_space()
        self.observation_space = observation_space()
        self._next_seed: int | None = None
        self._entropy = np.random.default_rng()
        self._done = True
        self._started = False

    def seed(self, seed: int | None = None) -> None:
        """Seed the next `reset()` (and the spaces' sampling)."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: expected an int or None, found {seed!r}")
        self._next_seed = seed
        self.action_space.seed(seed)
        self.observation_space.seed(seed)

    def reset(self) -> dict[str, np.ndarray]:
        seed = self._next_seed
        self._next_seed = None
        rng = np.random.default_rng(self._entropy.integers(2**63) if seed is None else seed)
        self._pillar_colours = rng.integers(40, 256, size=(PILLARS, 3), dtype=np.uint8)
        self._sky = rng.integers(120, 220, size=3).astype(np.uint8)
        self._ground = rng.integers(30, 140, size=(2, 3)).astype(np.uint8)
        self._yaw = float(rng.uniform(-180.0, 180.0))
        self._pitch = 0.0
        self._walked = 0.0
        self._hotbar = 0
        self._inventory_open = False
        self._attacking = False
        self._steps = 0
        self._done = False
        self._started = True
        return {"pov": self._draw()}

    def step(self, action: Mapping[str, object]) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        if not self._started:
            raise RuntimeError("Call `reset` before `step`.")
        if self._done:
            raise RuntimeError("Expected `reset` after episode terminated, not `step`.")
        pressed = {name: bool(np.asarray(action.get(name, 0))) for name in BUTTONS}
        pitch, yaw = np.asarray(action.get("camera", (0.0, 0.0)), dtype=np.float64)
        self._pitch = float(np.clip(self._pitch + pitch, -90.0, 90.0))
        self._yaw = float((self._yaw + yaw + 180.0) % 360.0 - 180.0)
        moves = pressed["forward"] - pressed["back"] + pressed["right"] - pressed["left"]
        self._walked += WALK_PER_STEP * moves
        self._attacking = pressed["attack"]
        if pressed["inventory"]:
            self._inventory_open = not self._inventory_open
        for slot in range(9):
            if pressed[f"hotbar.{slot + 1}"]:
                self._hotbar = slot
        self._steps += 1
        # MineRL's DoneOnESCWrapper reads action["ESC"] itself: an action without it fails there.
        self._done = self._steps >= self.task.max_episode_steps or bool(action["ESC"])
        return {"pov": self._draw()}, 0.0, self._done, {}

    def noop_action(self) -> dict[str, object]:
        """An action that presses nothing (MineRL's `env.noop_action()`)."""
        action: dict[str, object] = {name: 0 for name in self.action_space}
        action["camera"] = np.zeros(2, dtype=np.float32)
        return action

    def close(self) -> None:
        self._done = True

    def _draw(self) -> np.ndarray:
        height, width, _ = POV_SHAPE
        frame = np.empty(POV_SHAPE, dtype=np.uint8)
        horizon = int(np.clip(height / 2 - self._pitch * PIXELS_PER_DEGREE, 0, height))
        frame[:horizon] = self._sky
        # A pillar stands on the horizon, 100 pixels tall, in the columns whose direction
        # (yaw of that column) is within half a pillar width of one of the pillars.
        column_yaw = self._yaw + (np.arange(width) - width / 2) / PIXELS_PER_DEGREE
        spacing = 360.0 / PILLARS
        pillar = np.floor((column_yaw + PILLAR_WIDTH_DEGREES / 2) / spacing).astype(int)
        on_pillar = (column_yaw - pillar * spacing) < PILLAR_WIDTH_DEGREES / 2
        band = frame[max(horizon - 100, 0) : horizon]
        band[:, on_pillar] = self._pillar_colours[pillar[on_pillar] % PILLARS]
        rows = np.arange(horizon, height)
        stripe = np.floor((rows + self._walked * STRIPE_PIXELS) / STRIPE_PIXELS).astype(int) % 2
        frame[horizon:] = self._ground[stripe][:, None, :]
        self._draw_overlays(frame)
        return frame

    def _draw_overlays(self, frame: np.ndarray) -> None:
        height, width, _ = POV_SHAPE
        cy, cx = height // 2, width // 2
        crosshair = (255, 0, 0) if self._attacking else (255, 255, 255)
        frame[cy - 1 : cy + 2, cx - 8 : cx + 9] = crosshair
        frame[cy - 8 : cy + 9, cx - 1 : cx + 2] = crosshair
        left = cx - 9 * HOTBAR_SLOT // 2
        top = height - HOTBAR_SLOT - 4
        frame[top : top + HOTBAR_SLOT, left : left + 9 * HOTBAR_SLOT] = 60
        selected = left + self._hotbar * HOTBAR_SLOT
        frame[top : top + HOTBAR_SLOT, selected : selected + HOTBAR_SLOT] = 230
        if self._inventory_open:
            frame[60:300, 160:480] = 198
