"""A gymnasium wrapper that pays the agent a visual reward (RAPL's OT reward, or a per-frame
RLHF reward) computed from rendered frames, keeping the env's own reward in
`info["gt_reward"]` so that monitors and evaluation stay on ground truth.

Every `stride`-th step (and the last one) the wrapper renders a frame, embeds it and pays the
change in the video reward's prefix return; other steps pay 0. An episode's rewards thus sum
to the return of its subsampled video (minus that of its first frame), matching how the
reward was trained on videos subsampled with the same stride. The env must be made with
`render_mode="rgb_array"`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from embodied_pref.rapl.video_reward import VideoReward


class VisualRewardWrapper(gym.Wrapper):
    """Replaces the env's reward with the per-step change of `reward`'s prefix return."""

    def __init__(self, env: gym.Env, reward: VideoReward, stride: int = 1) -> None:
        super().__init__(env)
        if stride < 1:
            raise ValueError(f"stride: expected an int >= 1, found {stride!r}")
        self.reward, self.stride = reward, stride
        self._embeddings: list[torch.Tensor] = []
        self._last_return = 0.0
        self._steps = 0

    def _observe_frame(self) -> float:
        """Embeds the current frame; returns the new prefix return."""
        frame = np.asarray(self.env.render())
        self._embeddings.append(self.reward.embed(frame[None])[0])
        return self.reward.prefix_return(torch.stack(self._embeddings))

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._embeddings, self._steps = [], 0
        self._last_return = self._observe_frame()
        return obs, info

    def step(self, action):
        obs, gt_reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info.setdefault("gt_reward", float(gt_reward))
        self._steps += 1
        reward = 0.0
        if self._steps % self.stride == 0 or terminated or truncated:
            current = self._observe_frame()
            reward, self._last_return = current - self._last_return, current
        return obs, reward, terminated, truncated, info
