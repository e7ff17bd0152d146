"""A reward learned from 500 synthetic labels on Crafter clips ranks held-out clips like the
ground truth, and far better than one fitted to the same pairs with shuffled labels."""

import numpy as np
import pytest

from embodied_pref.experiments.crafter_demo import CRAFTER_QUALITIES, CRAFTER_REWARD_NET
from embodied_pref.experiments.reward_quality import fit_and_evaluate, teacher_pairs
from embodied_pref.experiments.tasks import scripted_clips
from embodied_pref.query_selection import select_pairs
from embodied_pref.segments import PreferencePairs
from embodied_pref.teachers import make_teacher


@pytest.mark.slow
def test_reward_from_500_labels_ranks_held_out_crafter_clips():
    rng = np.random.default_rng(0)
    train, test = (scripted_clips("crafter-thrift", "Player", [CRAFTER_QUALITIES[i % 4] for i in range(n)], first_seed,
                                  50, 8, rng, violations=[i % 2 == 1 for i in range(n)])
                   for n, first_seed in ((14, 0), (8, 50_000)))
    selected = select_pairs(train, 500, np.random.default_rng(0))
    pairs = teacher_pairs(train, selected.first, selected.second, make_teacher("oracle", seed=0))
    _, learned = fit_and_evaluate(pairs, test, seed=0, reward_config=CRAFTER_REWARD_NET, max_epochs=100)
    shuffled = PreferencePairs(pairs.first, pairs.second, rng.permutation(pairs.targets))
    _, control = fit_and_evaluate(shuffled, test, seed=0, reward_config=CRAFTER_REWARD_NET, max_epochs=100)
    assert learned.accuracy >= 0.8
    assert learned.accuracy > control.accuracy + 0.2
