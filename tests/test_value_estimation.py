import numpy as np
import pytest

from embodied_pref.value_estimation import ValueFitConfig, ValueFunction, fit_value_function


def _linear_targets(n=400, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    return obs, 5.0 + 2.0 * obs[:, 0] - obs[:, 1]


def test_regression_recovers_a_smooth_value_and_reports_its_fit(tmp_path):
    obs, targets = _linear_targets()
    value = fit_value_function(obs, targets, {"kind": "test"}, ValueFitConfig(epochs=150, seed=0))
    assert value.validation_r2 > 0.97
    probe, truth = _linear_targets(50, seed=1)
    assert np.abs(value.predict(probe) - truth).mean() < 0.2
    assert value.provenance() == {"kind": "test", "samples": 400, "fit": "mlp regression",
                                  "validation_r2": round(value.validation_r2, 4)}
    value.save(tmp_path / "v.pt")
    loaded = ValueFunction.load(tmp_path / "v.pt")
    np.testing.assert_array_equal(loaded.predict(probe), value.predict(probe))
    assert loaded.provenance() == value.provenance()


def test_bad_targets_are_rejected_with_the_shapes():
    obs, targets = _linear_targets(20)
    with pytest.raises(ValueError, match=r"\(N, D\) and targets \(N,\)"):
        fit_value_function(obs, targets[:-1], {})
    targets[3] = np.nan
    with pytest.raises(ValueError, match="1 not finite"):
        fit_value_function(obs, targets, {})
