import numpy as np
import pytest
import torch

from embodied_pref.evaluation import cross_accuracy
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.segments import SegmentBatch


def _reward_equal_to_the_state():
    """A one-member ensemble whose step reward is the (1-d) state reached."""
    config = RewardNetConfig(hidden_sizes=(), use_state=False, use_action=False, use_next_state=True, ensemble_size=1)
    ensemble = RewardEnsemble(1, 1, config)
    with torch.no_grad():
        ensemble.members[0].net[0].weight.fill_(1.0)
        ensemble.members[0].net[0].bias.zero_()
    return ensemble


def _one_step_segments(learned_returns, gt_returns) -> SegmentBatch:
    n = len(learned_returns)
    observations = np.zeros((n, 2, 1), np.float32)
    observations[:, 1, 0] = learned_returns
    return SegmentBatch(observations, np.zeros((n, 1, 1), np.float32), np.asarray(gt_returns, np.float32)[:, None])


def test_cross_accuracy_scores_every_pair_across_the_groups_and_leaves_ground_truth_ties_out():
    ensemble = _reward_equal_to_the_state()
    keep = _one_step_segments([3.0, 0.0], [2.0, 1.5])
    violate = _one_step_segments([1.0, 2.0], [1.0, 1.5])
    # (keep0, violate0) and (keep0, violate1) ordered right, (keep1, violate0) wrong, (keep1, violate1) a tie
    assert cross_accuracy(ensemble, keep, violate) == pytest.approx(2 / 3)
    assert cross_accuracy(ensemble, violate, keep) == pytest.approx(2 / 3)


def test_cross_accuracy_is_nan_when_the_ground_truth_ties_every_pair():
    ensemble = _reward_equal_to_the_state()
    assert np.isnan(cross_accuracy(ensemble, _one_step_segments([1.0], [0.0]), _one_step_segments([2.0], [0.0])))
