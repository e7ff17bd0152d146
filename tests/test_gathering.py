"""Gatherers: labels written by another process-like writer reach the loop through the store."""

import threading

import numpy as np

from embodied_pref.data import Clip, Label, Outcome, Query, Trajectory
from embodied_pref.gathering import StoreGatherer, TeacherGatherer
from embodied_pref.store import PreferenceDataset
from embodied_pref.teachers import make_teacher


def dataset_with_queries(path, n_queries=3):
    store = PreferenceDataset.create(path)
    rewards = np.linspace(-1, 0, 20, dtype=np.float32)
    trajectory = Trajectory(np.zeros((21, 2), np.float32), np.zeros((20, 1), np.float32), rewards)
    store.add_trajectory(trajectory)
    clips = [Clip(trajectory.id, start, 5) for start in (0, 5, 10, 15)]
    store.add_clips(clips)
    queries = [Query((clips[i].id, clips[i + 1].id)) for i in range(n_queries)]
    store.add_queries(queries)
    return store, queries


def test_store_gatherer_returns_labels_another_writer_commits(tmp_path):
    store, queries = dataset_with_queries(tmp_path / "ds")
    gatherer = StoreGatherer(store, poll_seconds=0.05)
    gatherer.submit(queries)

    def annotate():
        with PreferenceDataset.open(tmp_path / "ds") as other:
            for query in queries:
                other.add_label(Label(query.id, Outcome.LEFT, annotator="ann"))

    writer = threading.Timer(0.2, annotate)
    writer.start()
    labels = gatherer.collect(timeout=10)
    writer.join()
    assert sorted(label.query_id for label in labels) == sorted(q.id for q in queries)
    assert gatherer.collect(timeout=0.1) == []  # nothing pending any more
    store.close()


def test_store_gatherer_times_out_with_what_arrived(tmp_path):
    store, queries = dataset_with_queries(tmp_path / "ds")
    store.add_label(Label(queries[0].id, Outcome.RIGHT))
    gatherer = StoreGatherer(store, poll_seconds=0.05)
    gatherer.submit(queries)
    labels = gatherer.collect(timeout=0.2)
    assert [label.query_id for label in labels] == [queries[0].id]
    store.close()


def test_teacher_gatherer_prefers_the_clip_with_higher_return(tmp_path):
    store, queries = dataset_with_queries(tmp_path / "ds")
    gatherer = TeacherGatherer(store, make_teacher("oracle"))
    gatherer.submit(queries)
    labels = gatherer.collect()
    # Rewards rise along the trajectory, so the later (second) clip always wins.
    assert [label.outcome for label in labels] == [Outcome.RIGHT] * 3
    assert len(store.labels()) == 3 and gatherer.collect() == []
    store.close()
