import numpy as np
import pytest
import torch

from embodied_pref.rapl.ot_reward import OTRewardConfig, best_reference, ot_returns, ot_step_rewards
from embodied_pref.rapl.sinkhorn import SinkhornConfig, cosine_cost, sinkhorn_plan
from embodied_pref.rapl.video_reward import OTVideoReward


def _video(seed: int, t: int = 20, d: int = 16) -> torch.Tensor:
    # A smooth trajectory in embedding space: distinct frames, neighbours alike.
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(t, d, generator=g)
    return torch.cumsum(steps, dim=0)


@pytest.mark.parametrize("cost", ["cosine", "euclidean"])
def test_self_beats_shuffled_and_other(cost):
    config = OTRewardConfig(cost=cost)
    video = _video(0)
    shuffled = video[torch.randperm(20, generator=torch.Generator().manual_seed(1))]
    other = _video(2)
    # Entropic weight 1 is RAPL's setting; a smaller one sharpens the plan for the shuffled test.
    sharp = OTRewardConfig(cost=cost, sinkhorn=type(config.sinkhorn)(epsilon=0.01, max_iterations=500))
    own = ot_returns(video[None], video, sharp)
    assert own > ot_returns(other[None], video, sharp)
    assert own > ot_returns(shuffled[None, :10], video, sharp)
    assert ot_returns(video[None], video, config) > ot_returns(other[None], video, config)


def test_step_rewards_sum_to_return_and_shapes():
    video = torch.stack([_video(i) for i in range(3)])
    steps = ot_step_rewards(video, _video(9))
    assert steps.shape == (3, 20)
    torch.testing.assert_close(steps.sum(1), ot_returns(video, _video(9)))
    assert (steps <= 0).all()
    with pytest.raises(ValueError, match="reference"):
        ot_step_rewards(video, torch.zeros(2, 5, 16))


def test_float32_rewards_match_float64():
    # ot_step_rewards solves in float32 (its default tolerance 1e-6): close to the float64 rewards.
    video, reference = torch.stack([_video(i) for i in range(3)]).double(), _video(9).double()
    cost = cosine_cost(video, reference.expand(3, -1, -1))
    plan = sinkhorn_plan(cost, SinkhornConfig(max_iterations=1000, tolerance=1e-13))
    rewards = ot_step_rewards(video, reference)
    assert rewards.dtype == torch.float32
    torch.testing.assert_close(rewards.double(), -(plan * cost).sum(2), atol=1e-6, rtol=0)


def test_best_reference_and_video_reward_prefix():
    assert best_reference([0.1, 3.0, -1.0]) == 1
    with pytest.raises(ValueError):
        best_reference([])
    encoder = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(4 * 4 * 3, 8))
    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    reward = OTVideoReward(_FloatInput(encoder), torch.randn(5, 8))
    emb = reward.embed(frames)
    assert emb.shape == (6, 8)
    assert reward.prefix_return(emb) == pytest.approx(float(ot_returns(emb[None], reward.reference)))


class _FloatInput(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float() / 255)


def test_paced_prefix_matches_the_reference_at_the_same_point():
    encoder = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(4 * 4 * 3, 8))
    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    reference = torch.randn(9, 8)
    paced, whole = OTVideoReward(_FloatInput(encoder), reference, horizon=6), OTVideoReward(_FloatInput(encoder), reference)
    emb = paced.embed(frames)
    assert paced.prefix_return(emb) == pytest.approx(whole.prefix_return(emb))  # a whole video: unchanged
    # Two of six frames: the reference's first ceil(2 * 9 / 6) = 3 frames.
    assert paced.prefix_return(emb[:2]) == pytest.approx(float(ot_returns(emb[None, :2], reference[:3])))
    assert paced.prefix_return(emb[:2]) != pytest.approx(whole.prefix_return(emb[:2]))
    with pytest.raises(ValueError, match="horizon"):
        OTVideoReward(_FloatInput(encoder), reference, horizon=0)
