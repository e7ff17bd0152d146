"""gymnasium-robotics' FrankaKitchen-v1 seen from a fixed third-person camera.

`KitchenThirdPersonEnv` wraps the original environment (dynamics, observations, tasks and
rewards unchanged) and replaces what `render()` returns: an RGB frame from a free camera
behind and above the robot's right shoulder that shows the arm and the kitchen counters,
with shadows and reflections off (about 10x cheaper than the default scene).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium
import mujoco
import numpy as np

# Free camera (MuJoCo's mjvCamera): looks at the counter in front of the robot base.
LOOKAT = (-0.1, 0.35, 2.0)
DISTANCE = 2.6
AZIMUTH = 60.0
ELEVATION = -30.0


class KitchenThirdPersonEnv(gymnasium.Wrapper):
    """FrankaKitchen-v1 whose `render()` returns (size, size, 3) uint8 third-person frames."""

    def __init__(self, size: int = 224, **kitchen_kwargs) -> None:
        import gymnasium_robotics

        gymnasium.register_envs(gymnasium_robotics)
        super().__init__(gymnasium.make("FrankaKitchen-v1", **kitchen_kwargs))
        self.size = size
        model = self.env.unwrapped.model
        model.vis.quality.shadowsize = 0
        model.mat_reflectance[:] = 0.0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        self._renderer: mujoco.Renderer | None = None
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.lookat[:] = LOOKAT
        self.camera.distance, self.camera.azimuth, self.camera.elevation = (
            DISTANCE,
            AZIMUTH,
            ELEVATION,
        )
        self._option = mujoco.MjvOption()
        self._option.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._option.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False

    @property
    def render_mode(self) -> str:
        return "rgb_array"

    def render(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(
                self.env.unwrapped.model, self.size, self.size
            )
        self._renderer.update_scene(
            self.env.unwrapped.data, camera=self.camera, scene_option=self._option
        )
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()
