import pytest
import torch

from embodied_pref.data import Clip
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.queue import LabelQueue, QueueError, is_overlap_position
from human_ui.server import create_app


@pytest.fixture
def store(dataset_target):
    ds = PreferenceDataset.open(dataset_target)
    yield ds
    ds.close()


def answer_all(queue, annotator, n, outcome="left"):
    seen = []
    for _ in range(n):
        query = queue.next_query(annotator)
        assert query is not None
        seen.append(query.id)
        queue.add_label(annotator, query.id, outcome)
    return seen


def test_an_annotator_never_gets_a_query_twice_and_new_ones_are_selected(store):
    queue = LabelQueue(store, UIConfig(overlap=0.0, batch_size=4))
    stored_pairs = [q.id for q in store.queries() if len(q.clip_ids) == 2]
    seen = answer_all(queue, "ann", 14)
    assert len(set(seen)) == 14
    assert seen[:len(stored_pairs)] == stored_pairs  # stored queries first, in order
    generated = [q for q in store.queries() if q.id in seen[len(stored_pairs):]]
    assert len(generated) == 14 - len(stored_pairs) and all(q.selector == "uniform" for q in generated)
    assert len(store.labels()) == 14


def test_overlap_queries_go_to_a_second_annotator_and_only_those(store):
    for share in (0.1, 0.15, 0.3, 1 / 3):
        flags = [is_overlap_position(i, share) for i in range(1000)]
        assert all(sum(flags[:n]) == int(n * share + 1e-9) for n in range(1001))  # exactly the share
    alone = LabelQueue(store, UIConfig(overlap=0.0))
    first = answer_all(alone, "ann", 3)
    assert alone.next_query("dan").id not in first
    both = LabelQueue(store, UIConfig(overlap=1.0))
    assert both.next_query("bob").id == first[0]  # waiting for its second answer: first in line
    both.add_label("bob", first[0], "right")
    assert {label.annotator for label in store.labels_for(first[0])} == {"ann", "bob"}
    assert both.next_query("carl").id not in first[:1]  # two answers are enough


def test_a_held_query_is_not_handed_to_another_annotator(store):
    queue = LabelQueue(store, UIConfig(overlap=0.0))
    held = queue.next_query("ann")
    assert queue.next_query("ann").id == held.id  # same until answered (reload resumes)
    assert queue.next_query("bob").id != held.id


def test_undo_retry_and_conflicts(store):
    queue = LabelQueue(store, UIConfig(overlap=0.0))
    query = queue.next_query("ann")
    label, created = queue.add_label("ann", query.id, "equal", label_id="retry1")
    again, created_again = queue.add_label("ann", query.id, "equal", label_id="retry1")
    assert created and not created_again and again == label and len(store.labels()) == 1
    with pytest.raises(QueueError, match="label_id") as info:
        queue.add_label("ann", query.id, "left", label_id="retry1")
    assert info.value.status == 409
    with pytest.raises(QueueError, match="already answered"):
        queue.add_label("ann", query.id, "left")
    with pytest.raises(QueueError, match="field 'query_id'") as info:
        queue.add_label("ann", "nosuchquery", "left")
    assert info.value.status == 404
    assert queue.undo("ann").id == "retry1" and store.labels() == []
    assert queue.next_query("ann").id == query.id
    assert queue.undo("ann") is None


def test_a_second_server_process_cannot_store_an_answer_twice(store, dataset_target):
    first = LabelQueue(store, UIConfig(overlap=0.0))
    query = first.next_query("ann")
    with PreferenceDataset.open(dataset_target) as other_store:
        second = LabelQueue(other_store, UIConfig(overlap=0.0))  # sees the lease, not the label
        first.add_label("ann", query.id, "left")
        with pytest.raises(QueueError, match="field 'annotator'.*already answered") as info:
            second.add_label("ann", query.id, "right")
        assert info.value.status == 409
    assert [(x.annotator, x.outcome.value) for x in store.labels_for(query.id)] == [("ann", "left")]


def test_disagreement_selection_scores_pairs_and_triplets(store):
    torch.manual_seed(0)
    ensemble = RewardEnsemble(4, 2, RewardNetConfig(hidden_sizes=(16,)))
    for mode, n_clips in (("pair", 2), ("triplet", 3)):
        config = UIConfig(mode=mode, selection="disagreement", batch_size=3, overlap=0.0)
        queue = LabelQueue(store, config, ensemble)
        before = {q.id for q in store.queries()}
        answer_all(queue, f"ann-{mode}", 12, "skip")
        new = [q for q in store.queries() if q.id not in before]
        assert new and all(q.selector == "disagreement" and q.score is not None for q in new)
        assert all(len(q.clip_ids) == n_clips for q in new)
        batch = [q.score for q in new[:3]]
        assert batch == sorted(batch, reverse=True)  # the most disputed first


def test_background_retraining_every_n_labels_feeds_selection(dataset_dir, session_client):
    config = UIConfig(selection="disagreement", retrain_every=4, reward_epochs=5, overlap=0.0)
    app = create_app(dataset_dir, config)
    with session_client(app) as client:
        for i in range(4):
            query = client.get("/api/next").json()["query"]
            assert client.post("/api/label", json={"query_id": query["id"],
                                                   "outcome": "left" if i % 2 else "right"}).status_code == 200
        app.state.retrainer.wait(timeout=60)
        assert app.state.retrainer.fits == 1 and app.state.queue.ensemble is not None
        report = client.get("/api/agreement").json()
        assert report["model"]["local"]["n"] == 4 and report["retraining"]["fits"] == 1
        for _ in range(8):  # the stored pairs run out; new ones come from the refit model
            query = client.get("/api/next").json()["query"]
            client.post("/api/label", json={"query_id": query["id"], "outcome": "skip"})
        assert any(q.selector == "disagreement" for q in app.state.dataset.queries())


def test_generated_queries_never_repeat_a_set_of_clips(store):
    for mode, size in (("pair", 2), ("triplet", 3)):
        queue = LabelQueue(store, UIConfig(mode=mode, batch_size=5, overlap=0.0))
        answer_all(queue, f"ann-{mode}", 25, "skip")
        asked = [frozenset(q.clip_ids) for q in store.queries() if len(q.clip_ids) == size]
        assert len(asked) >= 25 and len(set(asked)) == len(asked)


def test_disagreement_falls_back_to_uniform_over_clips_of_different_lengths(tmp_path):
    from human_ui.demo import make_trajectory

    dataset = PreferenceDataset.create(tmp_path / "mixed")
    trajectory = make_trajectory(seed=0, steps=30, size=32)
    dataset.add_trajectory(trajectory)
    clips = [Clip(trajectory.id, 0, 10), Clip(trajectory.id, 5, 12), Clip(trajectory.id, 12, 14)]
    dataset.add_clips(clips)
    for clip in clips:
        dataset.write_preview(clip.id)
    ensemble = RewardEnsemble(4, 2, RewardNetConfig(hidden_sizes=(8,)))
    with dataset:
        queue = LabelQueue(dataset, UIConfig(selection="disagreement", batch_size=8, overlap=0.0), ensemble)
        seen = answer_all(queue, "ann", 3)  # the three possible pairs, then nothing new to ask
        assert {q.selector for q in dataset.queries()} == {"uniform"}
        assert len({frozenset(q.clip_ids) for q in dataset.queries()}) == 3 == len(set(seen))
        assert queue.next_query("ann") is None


def test_background_refit_in_triplet_mode_learns_from_rankings_with_ties(dataset_dir, session_client):
    config = UIConfig(mode="triplet", retrain_every=3, reward_epochs=5, overlap=0.0)
    app = create_app(dataset_dir, config)
    with session_client(app) as client:
        for ranking, ties in (([0, 1, 2], []), ([2, 0, 1], [1]), ([1, 2, 0], [0, 1])):
            query = client.get("/api/next").json()["query"]
            assert len(query["clips"]) == 3
            response = client.post("/api/label", json={"query_id": query["id"], "outcome": "ranking",
                                                       "ranking": ranking, "ties": ties})
            assert response.status_code == 200, response.text
        app.state.retrainer.wait(timeout=60)
        assert app.state.retrainer.last_error is None
        assert app.state.retrainer.fits == 1 and app.state.queue.ensemble is not None


def test_a_refit_that_fails_on_a_dataset_error_reports_it(dataset_dir, monkeypatch, session_client):
    from embodied_pref.store import DatasetError
    from human_ui import reward_model

    def unreadable(*args, **kwargs):
        raise DatasetError(f"{dataset_dir}/trajectories/x.npz: field 'observations': truncated file")

    monkeypatch.setattr(reward_model, "fit_reward", unreadable)
    app = create_app(dataset_dir, UIConfig(retrain_every=1, overlap=0.0))
    with session_client(app) as client:
        query = client.get("/api/next").json()["query"]
        client.post("/api/label", json={"query_id": query["id"], "outcome": "left"})
        app.state.retrainer.wait(timeout=60)
        error = client.get("/api/agreement").json()["retraining"]["error"]
    assert error.startswith("DatasetError") and "truncated file" in error
