import numpy as np
import pytest

from embodied_pref.data import Clip, Label, Outcome, Query, Trajectory
from embodied_pref.segments import labelled_pairs
from embodied_pref.store import PreferenceDataset


def test_labelled_pairs_include_the_pairs_rankings_imply_grouped_by_query(tmp_path):
    with PreferenceDataset.create(tmp_path / "ds") as store:
        obs = np.arange(21, dtype=np.float32)[:, None].repeat(2, 1)
        trajectory = Trajectory(obs, np.zeros((20, 1), np.float32), np.zeros(20, np.float32))
        store.add_trajectory(trajectory)
        clips = [Clip(trajectory.id, start, 5) for start in (0, 5, 10, 15)]
        store.add_clips(clips)
        c = [clip.id for clip in clips]
        pair, triplet, skipped = Query((c[0], c[1])), Query((c[1], c[2], c[3])), Query((c[2], c[3]))
        store.add_queries([pair, triplet, skipped])
        store.add_label(Label(pair.id, Outcome.LEFT, annotator="ann"))
        store.add_label(Label(pair.id, Outcome.EQUAL, annotator="bob"))
        store.add_label(Label(triplet.id, Outcome.RANKING, ranking=(2, 0, 1), ties=(1,), annotator="ann"))
        store.add_label(Label(skipped.id, Outcome.SKIP, annotator="ann"))
        pairs = labelled_pairs(store)
    starts = lambda batch: batch.observations[:, 0, 0].astype(int).tolist()  # noqa: E731
    assert list(zip(starts(pairs.first), starts(pairs.second), pairs.targets.tolist())) == [
        (0, 5, 1.0), (0, 5, 0.5),  # the pair, by two annotators
        (15, 5, 1.0), (15, 10, 1.0), (5, 10, 0.5),  # clip 3 ≻ clip 1 = clip 2
    ]
    assert pairs.groups.tolist() == [pair.id] * 2 + [triplet.id] * 3


def test_a_dataset_with_only_skips_has_no_pairs(tmp_path):
    with PreferenceDataset.create(tmp_path / "ds") as store:
        trajectory = Trajectory(np.zeros((11, 2)), np.zeros((10, 1)), np.zeros(10))
        store.add_trajectory(trajectory)
        clips = [Clip(trajectory.id, 0, 5), Clip(trajectory.id, 5, 5)]
        store.add_clips(clips)
        query = Query((clips[0].id, clips[1].id))
        store.add_queries([query])
        store.add_label(Label(query.id, Outcome.SKIP))
        with pytest.raises(ValueError, match="no labels with a preference"):
            labelled_pairs(store)
