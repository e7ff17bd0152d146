import dataclasses

import numpy as np
import pytest

from embodied_pref.data import Clip, Label, Outcome, Query, Segment, Trajectory


def make_trajectory(steps: int = 10, obs_dim: int = 4, act_dim: int = 2, frames: bool = True,
                    seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed)
    return Trajectory(
        observations=rng.normal(size=(steps + 1, obs_dim)),
        actions=rng.normal(size=(steps, act_dim)),
        rewards=rng.normal(size=steps),
        frames=rng.integers(0, 256, size=(steps + 1, 6, 8, 3), dtype=np.uint8) if frames else None,
        env_id="Grid-v0",
        seed=seed,
    )


def test_trajectory_coerces_dtypes_and_counts_steps():
    traj = make_trajectory(steps=7)
    assert traj.length == 7
    assert traj.observations.dtype == np.float32
    assert traj.actions.dtype == np.float32
    assert traj.rewards.dtype == np.float32
    assert traj.frames.dtype == np.uint8
    assert len(traj.id) == 32 and traj.id != make_trajectory(steps=7).id
    ints = Trajectory(np.zeros((3, 2)), np.zeros((2, 1)), None,
                      frames=np.full((3, 2, 2, 3), 255, dtype=np.int64))
    assert ints.frames.dtype == np.uint8 and ints.frames.max() == 255


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(observations=np.zeros((10, 4))), "observations"),  # needs T+1 = 11 rows
        (dict(observations=np.zeros(11)), "observations"),
        (dict(actions=np.zeros(10)), "actions"),
        (dict(rewards=np.zeros(9)), "rewards"),
        (dict(frames=np.zeros((10, 6, 8, 3), np.uint8)), "frames"),
        (dict(frames=np.zeros((11, 6, 8), np.uint8)), "frames"),
        (dict(frames=np.zeros((11, 6, 8, 3), np.float32)), "frames"),
        (dict(frames=np.full((11, 6, 8, 3), 256)), "frames"),
        (dict(metadata={"fn": print}), "metadata"),
        (dict(seed="7"), "seed"),
        (dict(terminated="yes"), "terminated"),
        (dict(id="../escape"), "id"),
    ],
)
def test_trajectory_errors_name_the_field(change, field):
    base = make_trajectory()
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    with pytest.raises(ValueError, match=f"field '{field}'"):
        Trajectory(**{**fields, **change})


@pytest.mark.parametrize("field", ["observations", "actions", "rewards"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_trajectory_rejects_non_finite(field, bad):
    base = make_trajectory(frames=False)
    array = getattr(base, field).copy()
    array.flat[3] = bad
    with pytest.raises(ValueError, match=f"field '{field}'.*finite"):
        dataclasses.replace(base, **{field: array})


def test_shape_error_says_expected_and_found():
    with pytest.raises(ValueError, match=r"expected 11 rows.*found shape \(10, 4\)"):
        Trajectory(np.zeros((10, 4)), np.zeros((10, 2)), None)


def test_segment_slices_steps_and_next_state():
    traj = make_trajectory(steps=10)
    seg = traj.segment(3, 4)
    assert isinstance(seg, Segment) and seg.length == 4
    np.testing.assert_array_equal(seg.observations, traj.observations[3:8])
    np.testing.assert_array_equal(seg.actions, traj.actions[3:7])
    np.testing.assert_array_equal(seg.rewards, traj.rewards[3:7])
    np.testing.assert_array_equal(seg.frames, traj.frames[3:8])
    whole = traj.segment(0, 10)
    np.testing.assert_array_equal(whole.observations, traj.observations)
    assert make_trajectory(frames=False).segment(0, 2).frames is None


@pytest.mark.parametrize("start, length, field", [(-1, 2, "start"), (0, 0, "length"),
                                                  (8, 3, "length"), (10, 1, "length")])
def test_segment_bounds(start, length, field):
    with pytest.raises(ValueError, match=f"field '{field}'"):
        make_trajectory(steps=10).segment(start, length)


def test_clip_and_query_validation():
    assert Clip("abc", 0, 1).length == 1
    with pytest.raises(ValueError, match="field 'start'"):
        Clip("abc", -1, 3)
    with pytest.raises(ValueError, match="field 'length'"):
        Clip("abc", 0, 0)
    with pytest.raises(ValueError, match="field 'trajectory_id'"):
        Clip("a/b", 0, 2)
    assert Query(["a", "b"]).clip_ids == ("a", "b")
    assert len(Query(("a", "b", "c"), selector="disagreement", score=0.3).clip_ids) == 3
    for bad in (("a",), ("a", "b", "c", "d"), ("a", "a")):
        with pytest.raises(ValueError, match="field 'clip_ids'"):
            Query(bad)
    with pytest.raises(ValueError, match="field 'score'"):
        Query(("a", "b"), score=float("nan"))
    with pytest.raises(ValueError, match="field 'round'"):
        Query(("a", "b"), round=-1)


def test_outcome_coercion_and_unknown_values():
    label = Label("q1", "left")
    assert label.outcome is Outcome.LEFT
    assert Label("q1", "cannot_tell").outcome is Outcome.CANNOT_TELL
    with pytest.raises(ValueError, match="field 'outcome'") as info:
        Label("q1", "maybe")
    assert "'maybe'" in str(info.value)
    for outcome in Outcome:
        assert repr(outcome.value) in str(info.value)


def test_ranking_required_iff_outcome_is_ranking():
    assert Label("q", "ranking", ranking=[2, 0, 1]).ranking == (2, 0, 1)
    for bad in (None, (0, 0, 1), (1, 2, 3), (0,), "012"):
        with pytest.raises(ValueError, match="field 'ranking'"):
            Label("q", Outcome.RANKING, ranking=bad)
    with pytest.raises(ValueError, match="field 'ranking'"):
        Label("q", "left", ranking=(0, 1))
    with pytest.raises(ValueError, match="field 'source'"):
        Label("q", "left", source={"params": object()})


def test_label_target():
    expected = {
        Outcome.LEFT: 1.0, Outcome.RIGHT: 0.0, Outcome.EQUAL: 0.5,
        Outcome.CANNOT_TELL: None, Outcome.SKIP: None, Outcome.RANKING: None,
    }
    for outcome, target in expected.items():
        ranking = (0, 1, 2) if outcome is Outcome.RANKING else None
        assert Label("q", outcome, ranking=ranking).target() == target


def test_records_are_frozen():
    label = Label("q", "left")
    with pytest.raises(dataclasses.FrozenInstanceError):
        label.outcome = Outcome.RIGHT  # type: ignore[misc]


def test_a_ranking_implies_every_pair_it_orders_and_ties_give_half():
    ranking = Label("q1", Outcome.RANKING, ranking=(2, 0, 1), ties=(1,))  # 2 ≻ 0 = 1
    assert ranking.implied_preferences(3) == [(2, 0, 1.0), (2, 1, 1.0), (0, 1, 0.5)]
    all_equal = Label("q1", Outcome.RANKING, ranking=(1, 0, 2), ties=(0, 1))
    assert [t for _, _, t in all_equal.implied_preferences(3)] == [0.5, 0.5, 0.5]
    top_tie = Label("q1", Outcome.RANKING, ranking=(0, 1, 2), ties=(0,))  # 0 = 1 ≻ 2
    assert top_tie.implied_preferences(3) == [(0, 1, 0.5), (0, 2, 1.0), (1, 2, 1.0)]
    assert Label("q1", Outcome.RIGHT).implied_preferences(2) == [(0, 1, 0.0)]
    assert Label("q1", Outcome.SKIP).implied_preferences(2) == []
