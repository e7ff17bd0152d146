"""One recorded robot episode as the recording formats hold it, and its trajectory.

A robot dataset (LeRobot, robomimic, a folder of mp4 files) stores N frames per episode, each
with a state, the action taken at that frame and one image per camera. Our `Trajectory` holds
T steps between T + 1 observations, so an episode of N frames is a trajectory of N − 1 steps:
the last frame's action (and reward) has no next observation and is kept in the trajectory's
metadata, so that exporting the trajectory gives the episode back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.data.video import VideoFrames

RECORDING_KEY = "recording"
"""The trajectory metadata entry that holds where an imported episode came from."""

Frames = np.ndarray | VideoFrames


class RobotDataError(ValueError):
    """A recording that cannot be read as asked: the message names the file and the key."""


@dataclasses.dataclass(frozen=True, eq=False)
class RecordedEpisode:
    """N frames of one episode.

    - ``states``: (N, D) float32 proprioceptive state per frame (D may be 0).
    - ``actions``: (N, A) float32, the action taken at each frame.
    - ``cameras``: camera name -> (N, H, W, 3) uint8 frames (an array, or `VideoFrames` that
      decode from an mp4 on demand); may be empty.
    - ``rewards``: (N,) float32 reward after each frame's action, or None.
    - ``fps``: frames per second of the recording.
    - ``task``: the task's instruction, "" if none.
    - ``name``: the episode's name in its source ("episode_000003", "demo_7", a file stem).
    - ``source``: what it was read from (a path), for errors and provenance.
    - ``metadata``: JSON-serializable extras (e.g. robomimic's quality masks it is in).
    """

    states: np.ndarray
    actions: np.ndarray
    cameras: Mapping[str, Frames]
    fps: float
    rewards: np.ndarray | None = None
    task: str = ""
    name: str = ""
    source: str = ""
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{self.source or '<episode>'}: episode {self.name!r}"
        states = np.asarray(self.states, dtype=np.float32)
        actions = np.asarray(self.actions, dtype=np.float32)
        if states.ndim != 2 or actions.ndim != 2:
            raise RobotDataError(f"{where}: field 'states'/'actions': expected (N, D) and (N, A), found "
                                 f"{states.shape} and {actions.shape}")
        n = len(actions)
        if n < 2:
            raise RobotDataError(f"{where}: field 'actions': expected at least 2 frames, found {n}")
        if len(states) != n:
            raise RobotDataError(f"{where}: field 'states': {len(states)} frames, but {n} actions")
        for name, frames in self.cameras.items():
            if len(frames) != n:
                raise RobotDataError(f"{where}: camera {name!r}: {len(frames)} frames, but {n} actions")
        rewards = None
        if self.rewards is not None:
            rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
            if len(rewards) != n:
                raise RobotDataError(f"{where}: field 'rewards': {len(rewards)} values, but {n} actions")
        if not self.fps > 0:
            raise RobotDataError(f"{where}: field 'fps': expected > 0, found {self.fps}")
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "cameras", dict(self.cameras))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def length(self) -> int:
        """N frames."""
        return len(self.actions)


def to_trajectory(episode: RecordedEpisode, camera: str | None = None, source_format: str = "",
                  trajectory_id: str | None = None, embodiment: str = "", views: Sequence[str] = ()) -> Trajectory:
    """The episode as a trajectory of N − 1 steps whose frames are `camera`'s (None: no frames)
    and whose further cameras (`Trajectory.views`, for encoders) are `views`.

    The metadata entry `RECORDING_KEY` keeps the source format and path, the episode name,
    fps, task, the last frame's action and reward, the names of every camera and the
    episode's own metadata, which is what `from_trajectory` needs to give the episode back.
    """
    for name in (camera, *views):
        if name is not None and name not in episode.cameras:
            raise RobotDataError(f"{episode.source}: episode {episode.name!r}: no camera {name!r} "
                                 f"(it has {sorted(episode.cameras) or 'none'})")
    if views and camera is None:
        raise RobotDataError(f"{episode.source}: episode {episode.name!r}: further cameras {list(views)} "
                             "need a camera people compare")
    recording = {
        "format": source_format, "source": episode.source, "episode": episode.name, "fps": float(episode.fps),
        "task": episode.task, "camera": camera, "cameras": sorted(episode.cameras),
        "last_action": episode.actions[-1].tolist(),
        "last_reward": None if episode.rewards is None else float(episode.rewards[-1]),
        "metadata": dict(episode.metadata),
    }
    extra = {} if trajectory_id is None else {"id": trajectory_id}
    return Trajectory(
        observations=episode.states, actions=episode.actions[:-1],
        rewards=None if episode.rewards is None else episode.rewards[:-1],
        frames=None if camera is None else episode.cameras[camera],
        env_id=f"recording:{source_format}" if source_format else "recording", embodiment=embodiment,
        metadata={RECORDING_KEY: recording}, views={name: episode.cameras[name] for name in views}, **extra,
    )


def from_trajectory(trajectory: Trajectory, camera: str = "image", fps: float | None = None) -> RecordedEpisode:
    """The episode of N = T + 1 frames a trajectory holds (`to_trajectory`'s inverse for an
    imported one). A trajectory that was not imported repeats its last action on the final
    frame and records at `fps` (default 10). Frames, if any, become camera `camera` (an
    imported trajectory's own camera name wins); its further cameras come back by name."""
    recording = dict(trajectory.metadata.get(RECORDING_KEY) or {})
    last_action = recording.get("last_action")
    last = np.asarray(last_action if last_action is not None else trajectory.actions[-1], dtype=np.float32)
    if last.shape != trajectory.actions.shape[1:]:
        raise RobotDataError(f"trajectory {trajectory.id}: metadata '{RECORDING_KEY}.last_action': expected "
                             f"shape {trajectory.actions.shape[1:]}, found {last.shape}")
    rewards = None
    if trajectory.rewards is not None:
        last_reward = recording.get("last_reward")
        rewards = np.append(trajectory.rewards, np.float32(0.0 if last_reward is None else last_reward))
    name = recording.get("camera") or camera
    cameras = {} if trajectory.frames is None else {name: trajectory.frames, **trajectory.views}
    return RecordedEpisode(
        states=trajectory.observations, actions=np.vstack([trajectory.actions, last[None]]), cameras=cameras,
        fps=float(fps if fps is not None else recording.get("fps", 10.0)), rewards=rewards,
        task=str(recording.get("task", "")), name=str(recording.get("episode") or trajectory.id),
        source=str(recording.get("source", "")), metadata=dict(recording.get("metadata") or {}),
    )
