import math

import numpy as np
import pytest

from embodied_pref.data import Clip, Query, Trajectory
from embodied_pref.gathering import TeacherGatherer
from embodied_pref.loop import ask
from embodied_pref.query_selection import ENUMERATION_LIMIT, distinct_sets, pair_scores, select_pairs
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.segments import SegmentBatch, clip_pool
from embodied_pref.store import PreferenceDataset
from embodied_pref.teachers import make_teacher


def pool(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return SegmentBatch(rng.normal(size=(n, 6, 3)).astype(np.float32), rng.normal(size=(n, 5, 2)).astype(np.float32))


def unordered(first, second):
    return [frozenset(p) for p in zip(first.tolist(), second.tolist())]


def random_exclusion(n, rng, share):
    every = [(a, b) for a in range(n) for b in range(a + 1, n)]
    chosen = rng.random(len(every)) < share
    return [p if rng.random() < 0.5 else p[::-1] for p, c in zip(every, chosen) if c]


@pytest.mark.parametrize("method", ["uniform", "disagreement", "entropy"])
def test_selection_returns_k_distinct_unasked_pairs_over_many_pools(method):
    ensemble = RewardEnsemble(3, 2, RewardNetConfig(hidden_sizes=(8,), ensemble_size=3))
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(3, 33))
        exclude = random_exclusion(n, rng, share=float(rng.uniform(0, 0.8)))
        available = n * (n - 1) // 2 - len(exclude)
        k = int(rng.integers(1, available + 1)) if available else 1
        selected = select_pairs(pool(n, trial), k, np.random.default_rng(trial), method, ensemble, oversample=3,
                                exclude=exclude)
        pairs = unordered(selected.first, selected.second)
        assert len(pairs) == min(k, available), (n, k, available)
        assert len(set(pairs)) == len(pairs)
        assert all(len(p) == 2 for p in pairs)
        assert not set(pairs) & {frozenset(p) for p in exclude}


def test_a_15_clip_pool_asked_for_12_pairs_gives_12_distinct_pairs():
    selected = select_pairs(pool(15), 12, np.random.default_rng(0))
    assert len(set(unordered(selected.first, selected.second))) == 12
    ensemble = RewardEnsemble(3, 2, RewardNetConfig(hidden_sizes=(16,), ensemble_size=4))
    active = select_pairs(pool(32), 50, np.random.default_rng(0), "disagreement", ensemble)
    assert len(set(unordered(active.first, active.second))) == 50


def test_distinct_sets_of_three_and_large_pools_are_sampled_without_repeats():
    n = 200  # C(200, 3) > ENUMERATION_LIMIT: the sampling branch
    assert math.comb(n, 3) > ENUMERATION_LIMIT
    exclude = [(0, 1, 2), (5, 4, 3)]
    rows = distinct_sets(n, 3, 5000, np.random.default_rng(1), exclude)
    keys = {frozenset(r) for r in rows.tolist()}
    assert rows.shape == (5000, 3) and len(keys) == 5000
    assert all(len(k) == 3 for k in keys) and not keys & {frozenset(e) for e in exclude}
    small = distinct_sets(5, 3, 100, np.random.default_rng(2), exclude=[(0, 1, 2)])
    assert len(small) == math.comb(5, 3) - 1  # every other triplet, once each
    with pytest.raises(ValueError, match="at least 3 clips"):
        distinct_sets(2, 3, 1, np.random.default_rng(0))


def test_pairs_are_shown_in_random_order():
    rows = distinct_sets(30, 2, 400, np.random.default_rng(3))
    assert 0.4 < np.mean(rows[:, 0] < rows[:, 1]) < 0.6


def test_active_selection_keeps_the_highest_scoring_candidates():
    clips = pool()
    ensemble = RewardEnsemble(3, 2, RewardNetConfig(hidden_sizes=(16,), ensemble_size=4))
    for method in ("disagreement", "entropy"):
        selected = select_pairs(clips, 10, np.random.default_rng(1), method, ensemble, oversample=10)
        recomputed = pair_scores(method, ensemble, clips[selected.first], clips[selected.second])
        np.testing.assert_allclose(selected.scores, recomputed, rtol=1e-5)
        assert np.all(np.diff(selected.scores) <= 1e-7)
        baseline = distinct_sets(len(clips), 2, 100, np.random.default_rng(2))
        assert selected.scores.mean() > pair_scores(method, ensemble, clips[baseline[:, 0]], clips[baseline[:, 1]]).mean()


def test_uniform_selection_needs_no_model_and_active_does():
    clips = pool()
    assert len(select_pairs(clips, 7, np.random.default_rng(0)).first) == 7
    with pytest.raises(ValueError, match="needs a reward ensemble"):
        select_pairs(clips, 7, np.random.default_rng(0), "disagreement")
    with pytest.raises(ValueError, match="method"):
        select_pairs(clips, 7, np.random.default_rng(0), "psychic")


def small_dataset(path, n_clips):
    rng = np.random.default_rng(0)
    dataset = PreferenceDataset.create(path)
    trajectory = Trajectory(rng.normal(size=(n_clips * 4 + 1, 3)), rng.normal(size=(n_clips * 4, 2)),
                            rng.normal(size=n_clips * 4))
    dataset.add_trajectory(trajectory)
    dataset.add_clips([Clip(trajectory.id, 4 * i, 4) for i in range(n_clips)])
    return dataset


def test_the_loops_rounds_never_ask_a_pair_twice(tmp_path):
    with small_dataset(tmp_path / "ds", 12) as dataset:  # 66 pairs
        gatherer = TeacherGatherer(dataset, make_teacher("oracle"))
        ensemble = RewardEnsemble(3, 2, RewardNetConfig(hidden_sizes=(8,), ensemble_size=2))
        rng = np.random.default_rng(0)
        for round_index, method in enumerate(["uniform", "disagreement", "entropy", "uniform"]):
            assert ask(dataset, gatherer, 15, method, ensemble, round_index, rng) == 15
        assert ask(dataset, gatherer, 15, "disagreement", ensemble, 4, rng) == 6  # the 6 pairs left
        asked = [frozenset(q.clip_ids) for q in dataset.queries()]
        assert len(asked) == 66 and len(set(asked)) == 66
        assert ask(dataset, gatherer, 15, "uniform", None, 5, rng) == 0
        assert len(clip_pool(dataset)) == 12


def test_asking_skips_pairs_of_stored_triplet_queries_only_when_they_are_pairs(tmp_path):
    with small_dataset(tmp_path / "ds", 3) as dataset:  # 3 pairs
        clips = [c.id for c in dataset.clips()]
        dataset.add_queries([Query((clips[0], clips[1])), Query((clips[0], clips[1], clips[2]))])
        gatherer = TeacherGatherer(dataset, make_teacher("oracle"))
        assert ask(dataset, gatherer, 5, "uniform", None, 0, np.random.default_rng(0)) == 2
        pairs = {frozenset(q.clip_ids) for q in dataset.queries() if len(q.clip_ids) == 2}
        assert pairs == {frozenset(p) for p in [(clips[0], clips[1]), (clips[0], clips[2]), (clips[1], clips[2])]}
