import numpy as np
import pytest

from embodied_pref.experiments.tasks import scripted_episodes, task_spec


@pytest.mark.parametrize("task, embodiment, env_kwargs", [
    ("xmagical-avoid", "Gripper", {"layout": "jitter"}),
    ("franka-group", "Panda", {}),
])
def test_violating_demonstrations_are_the_ones_judged_violating(task, embodiment, env_kwargs):
    spec = task_spec(task)
    compliant = scripted_episodes(task, embodiment, [1.0] * 4, 100, env_kwargs=env_kwargs)
    violating = scripted_episodes(task, embodiment, [1.0] * 4, 100, violations=[True] * 4, env_kwargs=env_kwargs)
    assert np.mean([spec.violates(e) for e in violating]) == 1.0
    assert np.mean([spec.violates(e) for e in compliant]) <= 0.25
    assert np.mean([spec.success(e) for e in compliant]) >= 0.5
    random = scripted_episodes(task, embodiment, [0.0] * 4, 100, env_kwargs=env_kwargs)
    assert np.mean([spec.success(e) for e in random]) < np.mean([spec.success(e) for e in compliant])


def test_sweep_has_no_hidden_preference_to_violate():
    spec = task_spec("xmagical-sweep")
    episode = scripted_episodes("xmagical-sweep", "Gripper", [0.0], 0)[0]
    assert spec.violates(episode) is False and 0 <= spec.success(episode) <= 1
