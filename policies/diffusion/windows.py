"""Training windows for a diffusion policy: every (observation history, action chunk) pair
of a set of trajectories, padded at the episode ends as Diffusion Policy's sequence sampler
does (the first observation repeated before the start, the last action after the end)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from embodied_pref.data import Trajectory
from policies.diffusion.configuration import DiffusionPolicyConfig

FRAMES_CAMERA = "frames"
"""The camera name under which a trajectory's rendered `frames` reach the policy."""


@dataclass(frozen=True)
class WindowIndex:
    """Where each window lies: trajectory index and the step its chunk starts at (may be < 0)."""

    trajectory: np.ndarray
    start: np.ndarray


class ChunkWindows:
    """Windows of `trajectories` for `config`, gathered in batches.

    `batch(indices)` -> ({"state": (B, To, Ds) float32, camera: (B, To, H, W, 3) uint8},
    actions (B, H, Da) float32, weights (B,)): window i's chunk covers steps
    start_i .. start_i + H - 1 of its trajectory and its observations start_i .. start_i + To - 1.
    The camera named "frames" reads the trajectories' rendered `frames`. `weights` (one per trajectory, or one per window)
    scale each window's loss.
    """

    def __init__(self, trajectories: Sequence[Trajectory], config: DiffusionPolicyConfig,
                 weights: np.ndarray | None = None) -> None:
        if not trajectories:
            raise ValueError("trajectories: expected at least one trajectory")
        self.config = config
        for i, t in enumerate(trajectories):
            if config.state_dim and t.observations.shape[-1] != config.state_dim:
                raise ValueError(f"trajectories[{i}].observations: expected {config.state_dim} features, "
                                 f"found {t.observations.shape[-1]}")
            if t.actions.shape[-1] != config.action_dim:
                raise ValueError(f"trajectories[{i}].actions: expected {config.action_dim} features, found {t.actions.shape[-1]}")
            if config.cameras and t.frames is None:
                raise ValueError(f"trajectories[{i}].frames: the policy has cameras but the trajectory has no frames")
        streams = {c.name for c in config.cameras} - {FRAMES_CAMERA}
        if streams:
            raise ValueError(f"cameras {sorted(streams)}: a trajectory has one camera stream, {FRAMES_CAMERA!r} "
                             f"(its rendered frames)")
        self.n_trajectories = len(trajectories)
        lengths = np.array([len(t.actions) for t in trajectories])
        self._action_offset = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self._obs_offset = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        self._lengths = lengths
        self.actions = np.concatenate([t.actions for t in trajectories]).astype(np.float32)
        self.states = np.concatenate([t.observations for t in trajectories]).astype(np.float32) if config.state_dim else None
        self.frames = np.concatenate([t.frames for t in trajectories]) if config.cameras else None
        pad_before, pad_after = config.n_obs_steps - 1, config.n_action_steps - 1
        starts = [np.arange(-pad_before, n - config.horizon + pad_after + 1) for n in lengths]
        self.index = WindowIndex(np.concatenate([np.full(len(s), i) for i, s in enumerate(starts)]), np.concatenate(starts))
        self.set_weights(np.ones(len(self)) if weights is None else weights)
        counts = np.bincount(self.index.trajectory, minlength=self.n_trajectories)
        self._first_window, self._window_count = np.concatenate([[0], np.cumsum(counts)[:-1]]), counts

    def __len__(self) -> int:
        return len(self.index.start)

    def set_weights(self, weights: np.ndarray) -> None:
        """Loss weights: one per trajectory, or one per window."""
        weights = np.asarray(weights, dtype=np.float32)
        if len(weights) == self.n_trajectories and len(weights) != len(self):
            weights = weights[self.index.trajectory]
        if weights.shape != (len(self),):
            raise ValueError(f"weights: expected one per trajectory ({self.n_trajectories}) or per window "
                             f"({len(self)}), found shape {weights.shape}")
        self.weights = weights

    def windows_of(self, trajectories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn window index of each given trajectory: (B,) -> (B,)."""
        trajectories = np.asarray(trajectories)
        return self._first_window[trajectories] + rng.integers(0, self._window_count[trajectories])

    def batch(self, indices: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        indices = np.asarray(indices)
        trajectory, start = self.index.trajectory[indices], self.index.start[indices]
        n_steps = self._lengths[trajectory][:, None]
        action_steps = np.clip(start[:, None] + np.arange(self.config.horizon), 0, n_steps - 1)
        obs_steps = np.clip(start[:, None] + np.arange(self.config.n_obs_steps), 0, n_steps)
        actions = self.actions[self._action_offset[trajectory][:, None] + action_steps]
        rows = self._obs_offset[trajectory][:, None] + obs_steps
        obs = {}
        if self.states is not None:
            obs["state"] = torch.from_numpy(self.states[rows])
        for camera in self.config.cameras:
            obs[camera.name] = torch.from_numpy(self.frames[rows])
        return obs, torch.from_numpy(actions), torch.from_numpy(self.weights[indices])
