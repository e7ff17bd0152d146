import numpy as np

from embodied_pref.experiments.continuous_regret import expert_returns
from embodied_pref.experiments.xmagical_data import scripted_episodes


def test_replayed_expert_returns_match_the_recorded_episode_and_grow_along_it():
    # From step 0 of the expert's own episode, replay + expert must give back the recorded
    # return (X-MAGICAL and the expert are deterministic).
    expert = scripted_episodes("Longstick", [1.0], seed=3)[0]
    steps = np.array([0, 10, 35])
    returns = expert_returns("Longstick", expert, steps, horizon=expert.length)
    np.testing.assert_allclose(returns[0], expert.rewards.sum(), rtol=1e-5)
    # Later states of an expert episode are closer to done: more value over the same horizon.
    assert returns[0] < returns[1] < returns[2], returns
