import numpy as np
import pytest

from embodied_pref.query_selection import pair_scores, random_pairs, select_pairs
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.segments import SegmentBatch


def pool(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return SegmentBatch(rng.normal(size=(n, 6, 3)).astype(np.float32), rng.normal(size=(n, 5, 2)).astype(np.float32))


def test_random_pairs_never_pair_a_clip_with_itself():
    first, second = random_pairs(5, 1000, np.random.default_rng(0))
    assert np.all(first != second)
    assert set(first) | set(second) == set(range(5))


def test_active_selection_keeps_the_highest_scoring_candidates():
    clips = pool()
    ensemble = RewardEnsemble(3, 2, RewardNetConfig(hidden_sizes=(16,), ensemble_size=4))
    for method in ("disagreement", "entropy"):
        selected = select_pairs(clips, 10, np.random.default_rng(1), method, ensemble, oversample=10)
        recomputed = pair_scores(method, ensemble, clips[selected.first], clips[selected.second])
        np.testing.assert_allclose(selected.scores, recomputed, rtol=1e-5)
        assert np.all(np.diff(selected.scores) <= 1e-7)
        first, second = random_pairs(len(clips), 100, np.random.default_rng(2))
        assert selected.scores.mean() > pair_scores(method, ensemble, clips[first], clips[second]).mean()


def test_uniform_selection_needs_no_model_and_active_does():
    clips = pool()
    assert len(select_pairs(clips, 7, np.random.default_rng(0)).first) == 7
    with pytest.raises(ValueError, match="needs a reward ensemble"):
        select_pairs(clips, 7, np.random.default_rng(0), "disagreement")
    with pytest.raises(ValueError, match="method"):
        select_pairs(clips, 7, np.random.default_rng(0), "psychic")
