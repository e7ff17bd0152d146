"""Learning test on real X-MAGICAL physics: a reward fit to 100 oracle labels ranks held-out
clips (from episodes never trained on) like the ground truth does."""

import numpy as np

from embodied_pref.experiments.reward_quality import fit_and_evaluate, teacher_pairs
from embodied_pref.experiments.xmagical_data import mixed_quality_pools
from embodied_pref.query_selection import select_pairs
from embodied_pref.teachers import make_teacher


def test_hundred_oracle_labels_learn_the_sweep_reward():
    pools = mixed_quality_pools("Gripper", seed=0, train_episodes=40, test_episodes=20)
    selected = select_pairs(pools.train, 100, np.random.default_rng(0))
    pairs = teacher_pairs(pools.train, selected.first, selected.second, make_teacher("oracle"))
    _, evaluation = fit_and_evaluate(pairs, pools.test, seed=0, max_epochs=60)
    assert evaluation.accuracy >= 0.9, evaluation
    assert evaluation.spearman >= 0.93, evaluation


def test_a_reward_from_shuffled_labels_is_no_better_than_chance():
    pools = mixed_quality_pools("Gripper", seed=1, train_episodes=40, test_episodes=20)
    selected = select_pairs(pools.train, 100, np.random.default_rng(1))
    pairs = teacher_pairs(pools.train, selected.first, selected.second, make_teacher("oracle"))
    shuffled = type(pairs)(pairs.first, pairs.second, np.random.default_rng(2).permutation(pairs.targets))
    _, evaluation = fit_and_evaluate(shuffled, pools.test, seed=1, max_epochs=60)
    assert evaluation.accuracy < 0.75, evaluation
