"""The continuous regret teacher on a 1-D corridor whose V* is known exactly:
reward −1 per step until the agent stands at 0, so V*(s) = −|s| (unit steps)."""

import numpy as np

from embodied_pref.data import Outcome, Query, Trajectory
from embodied_pref.gathering import TeacherGatherer
from embodied_pref.regret_teacher import RegretTeacher
from embodied_pref.segments import SegmentBatch, cut_clips
from embodied_pref.store import PreferenceDataset


class CorridorValue:
    def predict(self, obs):
        return -np.abs(np.asarray(obs, dtype=np.float64)[..., 0])

    def provenance(self):
        return {"kind": "exact", "domain": "corridor"}


def _segments(paths):
    """Segments of positions s_0..s_L: reward −1 at every step that starts away from 0."""
    positions = np.asarray(paths, dtype=np.float32)[..., None]
    rewards = -(np.abs(positions[:, :-1, 0]) > 0).astype(np.float32)
    return SegmentBatch(positions, np.zeros((len(paths), positions.shape[1] - 1, 1), np.float32), rewards)


def test_regret_prefers_optimal_behaviour_over_a_larger_partial_return():
    # Optimal steps from 5 towards 0: partial return −3, regret 0. Idling at 1: partial
    # return −3, regret 3. Leaving 0: partial return −2 (the largest), regret 0 − (−2 − 3) = 5.
    teacher = RegretTeacher(CorridorValue())
    np.testing.assert_allclose(teacher.regrets(_segments([[5, 4, 3, 2], [1, 1, 1, 1], [0, 1, 2, 3]])), [0, 3, 5])
    assert teacher.label_segments(_segments([[5, 4, 3, 2]]), _segments([[0, 1, 2, 3]])) == [Outcome.LEFT]
    assert teacher.label_segments(_segments([[0, 1, 2, 3]]), _segments([[5, 4, 3, 2]])) == [Outcome.RIGHT]
    # Equal regret (both optimal) is a tie, whatever the partial returns (−3 vs 0).
    assert teacher.label_segments(_segments([[5, 4, 3, 2]]), _segments([[0, 0, 0, 0]])) == [Outcome.EQUAL]


def test_stochastic_regret_teacher_follows_the_bradley_terry_probability():
    first, second = _segments([[5, 4, 3, 2]] * 4000), _segments([[1, 1, 1, 2]] * 4000)  # regret 0 vs 4
    outcomes = RegretTeacher(CorridorValue(), temperature=4.0, seed=0).label_segments(first, second)
    share_first = np.mean([o is Outcome.LEFT for o in outcomes])
    assert abs(share_first - 1 / (1 + np.exp(-1.0))) < 0.02


def test_labels_through_the_gatherer_record_the_value_source(tmp_path):
    positions = np.array([5, 4, 3, 2, 1, 0, 0, 1, 2], np.float32)[:, None]
    trajectory = Trajectory(observations=positions, actions=np.zeros((8, 1), np.float32),
                            rewards=-(np.abs(positions[:-1, 0]) > 0).astype(np.float32), env_id="corridor", seed=0)
    with PreferenceDataset.create(tmp_path / "d") as store:
        store.add_trajectory(trajectory)
        clips = cut_clips([trajectory], 3, 6, np.random.default_rng(0))
        store.add_clips(clips)
        queries = [Query((clips[0].id, clips[1].id)), Query((clips[2].id, clips[3].id))]
        store.add_queries(queries)
        gatherer = TeacherGatherer(store, RegretTeacher(CorridorValue()))
        gatherer.submit(queries)
        labels = gatherer.collect()
        assert len(labels) == 2 and len(store.labels()) == 2
        for label in store.labels():
            assert label.annotator == "teacher:regret"
            assert label.source["params"]["value_source"] == {"kind": "exact", "domain": "corridor"}
