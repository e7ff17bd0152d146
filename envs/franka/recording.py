"""Franka episodes as a robot would log them: two cameras (the third-person view and an
overhead one), the state and the action of every frame, as `RecordedEpisode`s ready to be
written in a robot dataset format (LeRobot, robomimic)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.recordings.episode import RecordedEpisode
from envs.franka.scene import CAMERA, TOP_CAMERA

CAMERA_KEYS = ("observation.images.front", "observation.images.top")
"""The cameras' keys in a recording: `CAMERA` and `TOP_CAMERA`, LeRobot-style."""
CONTROL_HZ = 10.0
"""The rate recordings are stamped with."""


class TwoCameraRender(gymnasium.Wrapper):
    """`render()` returns both cameras side by side, (S, 2S, 3): an episode recorded with
    frames (any runner that calls `render()`) carries both views, which `recorded_episode`
    splits again."""

    def __init__(self, env: gymnasium.Env, size: int) -> None:
        super().__init__(env)
        self.size = size

    def render(self) -> np.ndarray:
        push = self.env.unwrapped
        return np.concatenate([push.render_frame(self.size, CAMERA), push.render_frame(self.size, TOP_CAMERA)], axis=1)


def recorded_episode(trajectory: Trajectory, name: str, task: str = "",
                     metadata: Mapping[str, Any] | None = None) -> RecordedEpisode:
    """The episode of a trajectory recorded under `TwoCameraRender`: T + 1 frames, the last
    one's action repeating the one before (a robot logs an action with every frame); the
    ground-truth reward kept as `rewards` (a real robot has none: it stands in for what a
    person would judge)."""
    frames = np.asarray(trajectory.frames)
    size = frames.shape[1]
    if frames.shape[2] != 2 * size:
        raise ValueError(f"trajectory {trajectory.id}: field 'frames': expected two square views side by side, "
                         f"found frames of shape {frames.shape[1:]}")
    return RecordedEpisode(
        states=trajectory.observations, actions=np.vstack([trajectory.actions, trajectory.actions[-1:]]),
        cameras={CAMERA_KEYS[0]: frames[:, :, :size], CAMERA_KEYS[1]: frames[:, :, size:]}, fps=CONTROL_HZ,
        rewards=None if trajectory.rewards is None else np.append(trajectory.rewards, np.float32(0.0)),
        task=task, name=name, metadata=dict(metadata or trajectory.metadata),
    )
