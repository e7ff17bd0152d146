"""Gymnasium adapter over a MineRL 1.0 BASALT environment (or its stand-in).

MineRL 1.0 speaks the old gym API (`reset() -> obs`, `step() -> obs, reward, done, info`),
observes `{"pov": (360, 640, 3) uint8}` and ends an episode at the time limit or when the
action presses ESC. This adapter keeps the game untouched and only changes the interface:

- gymnasium's `reset(seed=...) -> (obs, info)` and five-value `step`;
- the observation is the POV frame itself, resized to `pov_size` (height, width) with
  OpenCV's INTER_LINEAR sampling, which VPT's agents were trained on;
- ESC (or the game ending the episode, e.g. on death) -> `terminated`; reaching the time
  limit -> `truncated`; a `step` after the end raises `RuntimeError`;
- `flat_actions=True` takes (24,) float32 vectors (layout in `envs.basalt.actions`)
  instead of MineRL's action dicts;
- the reward is always 0.0 (BASALT has none); `info` names the `task` (MineRL id) and
  the `step` count.

MineRL itself is imported only when an adapter over the real game is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import gymnasium
import numpy as np
from gymnasium import spaces as gym_spaces

from envs.basalt.actions import flat_action_space, noop_action, unflatten_action
from envs.basalt.spaces import FPS, POV_SHAPE, BasaltTask, action_space, env_id, find_task
from envs.basalt.standin import StandInBasaltEnv

INSTALL_MINERL = (
    "MineRL 1.0 is not installed (only 0.4.4 is on PyPI, and BASALT needs 1.0). Install it "
    "on a machine that can download Minecraft: 1) JDK 8, e.g. `sudo apt-get install "
    "openjdk-8-jdk` (macOS: `brew install --cask adoptopenjdk8`), with JAVA_HOME pointing at "
    "it; 2) `pip install git+https://github.com/minerllabs/minerl@v1.0.2` (its gradle build "
    "downloads Minecraft on first use). Without Minecraft, use the stand-in env"
)


class MineRLEnv(Protocol):
    """What the adapter needs of a MineRL 1.0 env (old gym API)."""

    def seed(self, seed: int | None = None) -> Any: ...
    def reset(self) -> Mapping[str, np.ndarray]: ...
    def step(
        self, action: Mapping[str, Any]
    ) -> tuple[Mapping[str, np.ndarray], float, bool, dict[str, Any]]: ...
    def close(self) -> Any: ...


def make_minerl_env(task: BasaltTask) -> MineRLEnv:
    """`gym.make(task.minerl_id)` of MineRL 1.0; raises `ModuleNotFoundError` with the
    install steps when MineRL is missing."""
    try:
        import minerl  # noqa: F401  (registers the MineRL ids with gym)
        import gym
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{task.minerl_id}: {INSTALL_MINERL} {env_id(task.name, stand_in=True)!r}. ({err})"
        ) from err
    return gym.make(task.minerl_id)


def resize_pov(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (..., H, W, 3) uint8 frames to (..., height, width, 3) uint8.

    Samples like OpenCV's `cv2.resize(..., interpolation=INTER_LINEAR)` (VPT's resize):
    output pixel centres mapped to the source, bilinear between the two nearest pixels on
    each axis, no smoothing when shrinking. Computed in float32, so a value may differ by
    one from OpenCV's fixed-point result.
    """
    frames = np.asarray(frames)
    height, width = frames.shape[-3:-1]
    if (height, width) == tuple(size):
        return frames
    y0, y1, wy = _linear_taps(height, size[0])
    x0, x1, wx = _linear_taps(width, size[1])
    source = frames.astype(np.float32)
    wy, wx = wy[:, None, None], wx[:, None]
    rows = source[..., y0, :, :] * (1.0 - wy) + source[..., y1, :, :] * wy
    out = rows[..., x0, :] * (1.0 - wx) + rows[..., x1, :] * wx
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def _linear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `target` output pixels: the two source pixels and the second's weight."""
    position = (np.arange(target) + 0.5) * (source / target) - 0.5
    position = np.clip(position, 0.0, source - 1)
    first = np.floor(position).astype(np.int64)
    second = np.minimum(first + 1, source - 1)
    return first, second, (position - first).astype(np.float32)


class BasaltEnv(gymnasium.Env):
    """A BASALT task as a gymnasium env (see the module docstring).

    Observations: (height, width, 3) uint8, the POV at `pov_size` (default 360x640).
    Actions: MineRL's action dict (`envs.basalt.spaces.action_space`; a button left out is
        not pressed, a missing camera does not turn), or with `flat_actions=True` a (24,)
        float32 vector (`envs.basalt.actions.flat_action_space`).
    Episodes end when ESC is pressed or the game ends them (`terminated`), or after
    `episode_steps` steps (`truncated`; default the task's limit, 3,600 to 14,400).
    `stand_in=True` runs `StandInBasaltEnv` instead of Minecraft.
    `render()` returns the last observation.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(
        self,
        task: str,
        *,
        stand_in: bool = False,
        pov_size: tuple[int, int] | None = None,
        flat_actions: bool = False,
        episode_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.task = find_task(task)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode: expected None or 'rgb_array', found {render_mode!r}")
        size = POV_SHAPE[:2] if pov_size is None else tuple(pov_size)
        if len(size) != 2 or not all(isinstance(n, int) and n >= 1 for n in size):
            raise ValueError(f"pov_size: expected (height, width) ints >= 1, found {pov_size!r}")
        steps = self.task.episode_steps if episode_steps is None else episode_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"episode_steps: expected an int >= 1, found {episode_steps!r}")
        self.pov_size: tuple[int, int] = size  # type: ignore[assignment]
        self.flat_actions = flat_actions
        self.episode_steps = steps
        self.render_mode = render_mode
        self.observation_space = gym_spaces.Box(0, 255, shape=(*size, 3), dtype=np.uint8)
        self.action_space = flat_action_space() if flat_actions else action_space()
        self._minerl_space = action_space()
        self.inner: MineRLEnv = (
            StandInBasaltEnv(self.task.name, episode_steps=steps)
            if stand_in
            else make_minerl_env(self.task)
        )
        self._steps = 0
        self._over = True
        self._pov: np.ndarray | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.inner.seed(int(seed))
        observation = self.inner.reset()
        self._steps = 0
        self._over = False
        self._pov = resize_pov(observation["pov"], self.pov_size)
        return self._pov, self._info({})

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._over:
            raise RuntimeError(
                f"{self.task.minerl_id}: step() after the episode ended; call reset() first"
            )
        minerl_action = self._minerl_action(action)
        observation, _, done, inner_info = self.inner.step(minerl_action)
        self._steps += 1
        truncated = self._steps >= self.episode_steps
        terminated = bool(minerl_action["ESC"]) or (bool(done) and not truncated)
        self._over = terminated or truncated
        self._pov = resize_pov(observation["pov"], self.pov_size)
        return self._pov, 0.0, terminated, truncated, self._info(inner_info)

    def render(self) -> np.ndarray | None:
        return self._pov

    def close(self) -> None:
        self.inner.close()

    def _info(self, inner_info: Mapping[str, Any]) -> dict[str, Any]:
        return {**inner_info, "task": self.task.minerl_id, "step": self._steps}

    def _minerl_action(self, action: Any) -> dict[str, Any]:
        """The MineRL action dict for an adapter action: Python ints for the buttons and a
        (2,) float32 camera."""
        if self.flat_actions:
            decoded: Mapping[str, Any] = unflatten_action(np.asarray(action).reshape(-1))
        elif isinstance(action, Mapping):
            unknown = sorted(set(action) - set(self._minerl_space))
            if unknown:
                raise ValueError(f"action: unknown keys {unknown}; expected MineRL's BASALT keys")
            decoded = {**noop_action(), **action}
        else:
            raise ValueError(
                f"action: expected a MineRL action dict, found {type(action).__name__} "
                "(pass flat_actions=True for vectors)"
            )
        minerl_action: dict[str, Any] = {}
        for name, value in decoded.items():
            if name != "camera":
                pressed = np.asarray(value)
                if pressed.shape != () or pressed not in (0, 1):
                    raise ValueError(f"action: button {name!r} must be 0 or 1, found {value!r}")
                minerl_action[name] = int(pressed)
        camera = np.asarray(decoded["camera"], dtype=np.float32).reshape(-1)
        if camera.shape != (2,) or not np.isfinite(camera).all():
            raise ValueError(
                f"action: camera must be 2 finite degrees, found {decoded['camera']!r}"
            )
        minerl_action["camera"] = np.clip(camera, -180.0, 180.0)
        return minerl_action
