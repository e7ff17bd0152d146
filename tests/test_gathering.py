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


def triplet_dataset(path, rewards_per_clip=(-3.0, -1.0, -2.0, -1.0)):
    """Four 5-step clips whose ground-truth returns are 5 × the given per-step rewards."""
    store = PreferenceDataset.create(path)
    rewards = np.repeat(np.asarray(rewards_per_clip, np.float32), 5)
    trajectory = Trajectory(np.zeros((21, 2), np.float32), np.zeros((20, 1), np.float32), rewards)
    store.add_trajectory(trajectory)
    clips = [Clip(trajectory.id, start, 5) for start in (0, 5, 10, 15)]
    store.add_clips(clips)
    return store, [c.id for c in clips]


def test_a_teacher_ranks_triplet_queries_with_ties(tmp_path):
    store, clips = triplet_dataset(tmp_path / "ds")
    ranked = Query((clips[0], clips[1], clips[2]))  # returns -15, -5, -10
    tied = Query((clips[1], clips[0], clips[3]))  # -5, -15, -5
    pair = Query((clips[0], clips[1]))
    store.add_queries([ranked, tied, pair])
    gatherer = TeacherGatherer(store, make_teacher("equal"))  # equal returns are labelled equal
    gatherer.submit([ranked, tied, pair])
    labels = {label.query_id: label for label in gatherer.collect()}
    assert (labels[ranked.id].outcome, labels[ranked.id].ranking, labels[ranked.id].ties) == (Outcome.RANKING, (1, 2, 0), ())
    assert (labels[tied.id].ranking, labels[tied.id].ties) == ((0, 2, 1), (0,))
    assert labels[pair.id].outcome is Outcome.RIGHT
    assert {label.annotator for label in store.labels()} == {"teacher:equal"}


def test_ranking_from_comparisons_counts_wins_and_skips_when_nothing_is_known():
    from embodied_pref.gathering import ranking_from_comparisons

    L, R, E, S = Outcome.LEFT, Outcome.RIGHT, Outcome.EQUAL, Outcome.SKIP
    assert ranking_from_comparisons([R, R, L]) == ((1, 2, 0), ())  # 1 ≻ 0, 2 ≻ 0, 1 ≻ 2
    assert ranking_from_comparisons([L, R, L]) == ((0, 1, 2), (0, 1))  # a cycle: all equal
    assert ranking_from_comparisons([E, E, E]) == ((0, 1, 2), (0, 1))
    assert ranking_from_comparisons([S, L, S]) == ((0, 1, 2), ())  # skips: half a win each
    assert ranking_from_comparisons([E, L, L]) == ((0, 1, 2), (0,))
    assert ranking_from_comparisons([S, S, Outcome.CANNOT_TELL]) is None


def test_label_command_answers_pending_triplet_queries_from_the_app(tmp_path, capsys):
    from embodied_pref.cli import main

    store, clips = triplet_dataset(tmp_path / "ds")
    triplet = Query((clips[0], clips[1], clips[2]), selector="uniform")
    store.add_queries([triplet])
    store.close()
    main(["label", "--dataset", str(tmp_path / "ds"), "--queries", "2"])
    with PreferenceDataset.open(tmp_path / "ds") as reopened:
        [ranking] = reopened.labels_for(triplet.id)
        assert ranking.ranking == (1, 2, 0)
        assert len(reopened.labels()) == 3 and not reopened.unlabeled_queries()
