import gymnasium as gym
import numpy as np
import pytest
import torch

from embodied_pref.rapl.ot_reward import ot_returns
from embodied_pref.rapl.video_reward import FrameVideoReward, OTVideoReward
from policies.visual_reward import VisualRewardWrapper


class _Counter(gym.Env):
    """A 10-step episode whose frame shows the step count; env reward 1 per step."""

    observation_space = gym.spaces.Box(0, 10, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    render_mode = "rgb_array"

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.float32), 1.0, False, self.t >= 10, {}

    def render(self):
        return np.full((4, 4, 3), self.t * 10, np.uint8)


class _MeanPixel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.w * frames.float().mean(dim=(-1, -2, -3)) / 10


def _episode(env: gym.Env) -> tuple[list[float], list[dict]]:
    env.reset(seed=0)
    rewards, infos, done = [], [], False
    while not done:
        _, r, term, trunc, info = env.step(np.zeros(1, np.float32))
        rewards.append(r)
        infos.append(info)
        done = term or trunc
    return rewards, infos


def test_frame_reward_is_paid_every_stride_steps():
    env = VisualRewardWrapper(_Counter(), FrameVideoReward(_MeanPixel()), stride=3)
    rewards, infos = _episode(env)
    # Frames at steps 3, 6, 9 and the last one (10) are scored: their values 3, 6, 9, 10.
    assert rewards == pytest.approx([0, 0, 3, 0, 0, 6, 0, 0, 9, 10])
    assert all(info["gt_reward"] == 1.0 for info in infos)


def test_ot_rewards_sum_to_the_subsampled_video_return():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(-3), torch.nn.Linear(48, 6))
    float_encoder = torch.nn.Sequential(_ToFloat(), encoder)
    frames = np.stack([np.full((4, 4, 3), t * 10, np.uint8) for t in range(11)])
    with torch.no_grad():
        reference = float_encoder(torch.as_tensor(frames[::-1].copy()))
    reward = OTVideoReward(float_encoder, reference)
    rewards, _ = _episode(VisualRewardWrapper(_Counter(), reward, stride=2))
    with torch.no_grad():
        emb = float_encoder(torch.as_tensor(frames))
    video = emb[[0, 2, 4, 6, 8, 10]]
    expected = float(ot_returns(video[None], reference)) - float(ot_returns(video[None, :1], reference))
    assert sum(rewards) == pytest.approx(expected, abs=1e-5)
    assert sum(r != 0 for r in rewards) == 5


class _ToFloat(torch.nn.Module):
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.float() / 255
