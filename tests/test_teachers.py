import json
import math

import numpy as np
import pytest
from scipy.special import expit

from embodied_pref.data import Outcome
from embodied_pref.teachers import (
    PRESETS,
    SyntheticTeacher,
    TeacherConfig,
    make_teacher,
    teacher_scale,
)


def random_pairs(n: int, length: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, length)), rng.normal(size=(n, length))


def rational(rewards_a: np.ndarray, rewards_b: np.ndarray) -> list[Outcome]:
    return [Outcome.RIGHT if a < b else Outcome.LEFT for a, b in zip(rewards_a.sum(1), rewards_b.sum(1))]


def assert_marks_exactly(labels, mask, outcome, rewards_a, rewards_b):
    """`outcome` exactly where `mask` holds; the oracle's answer everywhere else."""
    assert 0 < mask.sum() < len(mask)
    assert [label == outcome for label in labels] == mask.tolist()
    truth = rational(rewards_a, rewards_b)
    assert [label for label, m in zip(labels, mask) if not m] == [t for t, m in zip(truth, mask) if not m]


def binomial_ok(successes: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(successes / n - p) < sigmas * math.sqrt(p * (1 - p) / n)


def test_presets_have_b_pref_defaults():
    assert set(PRESETS) == {"oracle", "stoch", "mistake", "skip", "equal", "myopic"}
    assert PRESETS["oracle"] == TeacherConfig("oracle")
    assert PRESETS["stoch"].beta == 1.0
    assert PRESETS["mistake"].mistake_prob == 0.1
    assert PRESETS["skip"].skip_fraction == 0.1
    assert PRESETS["equal"].equal_fraction == 0.1
    assert PRESETS["myopic"].gamma == 0.9


def test_oracle_agrees_with_return_ordering():
    rewards_a, rewards_b = random_pairs(2000)
    labels = make_teacher("oracle").label(rewards_a, rewards_b)
    assert labels == rational(rewards_a, rewards_b)
    assert all(isinstance(label, Outcome) for label in labels)
    assert {Outcome.LEFT, Outcome.RIGHT} == set(labels)


def test_first_segment_preferred_is_left():
    teacher = make_teacher("oracle")
    assert teacher.label(np.array([[1.0, 1.0]]), np.array([[0.0, 0.0]])) == [Outcome.LEFT]
    assert teacher.label(np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]])) == [Outcome.RIGHT]
    assert teacher.label(np.zeros((0, 3)), np.zeros((0, 3))) == []


@pytest.mark.parametrize("diff", [0.3, 1.0, -2.0])
def test_stoch_rate_matches_softmax(diff):
    n = 20000
    rewards_a = np.zeros((n, 4))
    rewards_b = np.full((n, 4), diff / 4)
    labels = make_teacher("stoch", seed=1).label(rewards_a, rewards_b)
    p_right = expit(1.0 * diff)  # softmax([0, diff])[1]
    assert binomial_ok(labels.count(Outcome.RIGHT), n, p_right)
    assert labels.count(Outcome.RIGHT) + labels.count(Outcome.LEFT) == n


def test_stoch_with_varied_returns_matches_summed_probabilities():
    rewards_a, rewards_b = random_pairs(20000, length=3, seed=2)
    beta = 2.0
    labels = make_teacher("stoch", seed=3, beta=beta).label(rewards_a, rewards_b)
    p = expit(beta * (rewards_b.sum(1) - rewards_a.sum(1)))
    right = np.array([label == Outcome.RIGHT for label in labels])
    assert abs(right.sum() - p.sum()) < 4 * math.sqrt((p * (1 - p)).sum())


def test_mistake_flips_about_ten_percent():
    n = 20000
    rewards_a, rewards_b = random_pairs(n, seed=4)
    labels = make_teacher("mistake", seed=5).label(rewards_a, rewards_b)
    flips = sum(label != truth for label, truth in zip(labels, rational(rewards_a, rewards_b)))
    assert binomial_ok(flips, n, 0.1)


def test_skip_drops_exactly_the_pairs_below_threshold():
    rewards_a, rewards_b = random_pairs(3000, length=4, seed=6)
    rewards_a[0], rewards_b[0] = 0.25, 0.0  # max return exactly at the threshold 1.0: skipped
    teacher = make_teacher("skip", scale=10.0)
    assert teacher.skip_threshold == pytest.approx(1.0)
    labels = teacher.label(rewards_a, rewards_b)
    skipped = np.maximum(rewards_a.sum(1), rewards_b.sum(1)) <= 1.0
    assert skipped[0]
    assert_marks_exactly(labels, skipped, Outcome.SKIP, rewards_a, rewards_b)


def test_skip_with_negative_scale_skips_nothing_and_warns():
    rewards_a, rewards_b = random_pairs(3000, length=4, seed=7)
    with pytest.warns(UserWarning, match="no pair is skipped"):
        teacher = make_teacher("skip", scale=-10.0)
    labels = teacher.label(rewards_a, rewards_b)
    assert Outcome.SKIP not in labels
    assert labels == make_teacher("oracle").label(rewards_a, rewards_b)


@pytest.mark.parametrize("scale", [10.0, -10.0])
def test_equal_marks_exactly_the_near_ties(scale):
    rewards_a, rewards_b = random_pairs(3000, length=4, seed=8)
    labels = make_teacher("equal", scale=scale).label(rewards_a, rewards_b)
    ties = np.abs(rewards_a.sum(1) - rewards_b.sum(1)) < 1.0
    assert_marks_exactly(labels, ties, Outcome.EQUAL, rewards_a, rewards_b)


def test_myopic_weighs_recent_steps_more():
    rewards_a = np.array([[3.0, 0.0, 0.0]])  # sum 3.0, discounted 3 * 0.81 = 2.43
    rewards_b = np.array([[0.0, 0.0, 2.8]])  # sum 2.8, discounted 2.8
    assert make_teacher("oracle").label(rewards_a, rewards_b) == [Outcome.LEFT]
    assert make_teacher("myopic").label(rewards_a, rewards_b) == [Outcome.RIGHT]


def test_myopic_with_gamma_one_is_the_oracle():
    rewards_a, rewards_b = random_pairs(500, seed=9)
    labels = make_teacher("myopic", gamma=1.0).label(rewards_a, rewards_b)
    assert labels == rational(rewards_a, rewards_b)


def test_same_seed_same_labels():
    rewards_a, rewards_b = random_pairs(1000, seed=10)
    noisy = dict(beta=1.0, mistake_prob=0.2)

    def run(seed):
        teacher = make_teacher("stoch", seed=seed, **noisy)
        return teacher.label(rewards_a, rewards_b) + teacher.label(rewards_a, rewards_b)

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_unknown_teacher_name_lists_presets():
    with pytest.raises(ValueError, match="oracle.*stoch.*mistake.*skip.*equal.*myopic"):
        make_teacher("sarcastic")
    with pytest.raises(ValueError, match="unknown TeacherConfig field"):
        make_teacher("oracle", temperature=2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(beta=0.0),
        dict(beta=-1.0),
        dict(gamma=0.0),
        dict(gamma=1.1),
        dict(mistake_prob=0.6),
        dict(mistake_prob=-0.1),
        dict(skip_fraction=-0.1),
        dict(equal_fraction=-0.1),
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError, match="TeacherConfig"):
        TeacherConfig("bad", **kwargs)


def test_label_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        make_teacher("oracle").label(np.zeros((3, 4)), np.zeros((3, 5)))


def test_provenance_is_json_and_complete():
    teacher = make_teacher("myopic", scale=2.5, seed=7)
    record = json.loads(json.dumps(teacher.provenance()))
    assert record == {
        "kind": "teacher",
        "name": "myopic",
        "params": {
            "beta": "inf",
            "gamma": 0.9,
            "mistake_prob": 0.0,
            "skip_fraction": 0.0,
            "equal_fraction": 0.0,
            "scale": 2.5,
            "seed": 7,
        },
    }
    assert math.isinf(float(record["params"]["beta"]))
    assert make_teacher("stoch").provenance()["params"]["beta"] == 1.0


def test_teacher_scale():
    assert teacher_scale(200.0, 50, 1000) == pytest.approx(10.0)
    assert teacher_scale(-100.0, 3, 30) == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="episode_length"):
        teacher_scale(1.0, 3, 0)


def test_constructor_takes_a_config():
    teacher = SyntheticTeacher(TeacherConfig("custom", beta=5.0, equal_fraction=0.2), scale=3.0)
    assert teacher.name == "custom"
    assert teacher.equal_threshold == pytest.approx(0.6)
