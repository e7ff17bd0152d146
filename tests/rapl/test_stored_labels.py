"""RAPL alignment on a dataset's stored triplet rankings: triplets from labels (with ties),
and `embodied-pref train-rapl` end to end on a recorded X-MAGICAL dataset and on synthetic
videos whose content shows their quality."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from embodied_pref.cli import main
from embodied_pref.data import Clip, Label, Outcome, Query, Trajectory
from embodied_pref.rapl.alignment import triplet_accuracy
from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder
from embodied_pref.rapl.stored_labels import StoredRankingsConfig, clip_videos
from embodied_pref.rapl.triplets import synthetic_triplets, triplets_from_labels
from embodied_pref.recordings.episode import RecordedEpisode
from embodied_pref.recordings.importing import RecordingImportConfig, import_episodes
from embodied_pref.store import PreferenceDataset


def _ranking_label(query: Query, returns: np.ndarray, tolerance: float) -> Label:
    """A RANKING label of `query` by `returns` (one per clip, best first), tying neighbours
    whose returns differ by at most `tolerance`."""
    ranking = tuple(int(i) for i in np.argsort(-returns, kind="stable"))
    ties = tuple(k for k in range(2) if returns[ranking[k]] - returns[ranking[k + 1]] <= tolerance)
    return Label(query.id, Outcome.RANKING, ranking=ranking, ties=ties)


def _rank_queries(store: PreferenceDataset, clip_ids: list[str], n: int, tolerance: float, rng: np.random.Generator,
                  shuffle: np.random.Generator | None = None) -> list[Label]:
    """Stores `n` 3-clip queries over `clip_ids` and a label for each, ranked by ground-truth
    return (by randomly permuted returns when `shuffle` is given: the control)."""
    returns = {c: float(store.segment(c).rewards.sum()) for c in clip_ids}
    queries = [Query(tuple(rng.choice(clip_ids, 3, replace=False))) for _ in range(n)]
    store.add_queries(queries)
    labels = []
    for query in queries:
        clip_returns = np.array([returns[c] for c in query.clip_ids])
        ranked_by = clip_returns if shuffle is None else shuffle.permutation(clip_returns)
        labels.append(_ranking_label(query, ranked_by, tolerance))
        store.add_label(labels[-1])
    return labels


def _report(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_triplets_from_labels_mark_equal_exactly_where_neutral_and_negative_tie():
    queries = [Query(("a", "b", "c"), id=f"q{i}") for i in range(4)] + [Query(("a", "b"), id="pair")]
    index = {"a": 0, "b": 1, "c": 2}
    labels = [
        Label("q0", Outcome.RANKING, ranking=(2, 0, 1)),
        Label("q1", Outcome.RANKING, ranking=(2, 0, 1), ties=(0,)),  # c = a ≻ b: not equal
        Label("q2", Outcome.RANKING, ranking=(1, 2, 0), ties=(1,)),  # b ≻ c = a
        Label("q3", Outcome.RANKING, ranking=(0, 1, 2), ties=(0, 1)),  # all equal
        Label("q0", Outcome.SKIP),
        Label("pair", Outcome.RANKING, ranking=(1, 0)),
        Label("unknown", Outcome.RANKING, ranking=(0, 1, 2)),
    ]
    triplets = triplets_from_labels(queries, labels, index)
    assert triplets.positive.tolist() == [2, 2, 1, 0]
    assert triplets.neutral.tolist() == [0, 0, 2, 1]
    assert triplets.negative.tolist() == [1, 1, 0, 2]
    assert triplets.equal.tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match=r"no video for clip ids \['c'\] of query q0"):
        triplets_from_labels(queries, labels, {"a": 0, "b": 1})


def test_train_rapl_on_a_recorded_xmagical_dataset(tmp_path, capsys):
    dataset = tmp_path / "ds"
    main(["collect", "--dataset", str(dataset), "--task", "xmagical-avoid", "--embodiment", "Gripper", "--frames",
          "--episodes", "3", "--qualities", "0.0", "0.5", "1.0", "--clip-length", "10", "--clips-per-episode", "3"])
    with PreferenceDataset.open(dataset) as store:
        clip_ids = [c.id for c in store.clips()]
        labels = _rank_queries(store, clip_ids, 8, 0.1, np.random.default_rng(0))
        pair = Query(tuple(clip_ids[:2]))
        store.add_queries([pair])
        store.add_label(Label(pair.id, Outcome.LEFT))  # pairwise labels are not triplets
        shown = {c for q in store.queries() if len(q.clip_ids) == 3 for c in q.clip_ids}
    expected_equal = sum(1 in label.ties for label in labels)
    assert 0 < expected_equal < len(labels)  # the tolerance gives both kinds

    out = tmp_path / "encoder.pt"
    capsys.readouterr()
    main(["train-rapl", "--dataset", str(dataset), "--out", str(out), "--epochs", "5", "--held-out", "0.25"])
    first = _report(capsys)
    assert out.is_file() and first["encoder"] == str(out)
    assert (first["train_queries"], first["held_out_queries"]) == (6, 2)
    assert (first["train_triplets"], first["held_out_triplets"]) == (6, 2)
    assert first["equal_triplets"] == expected_equal and first["clips"] == len(shown)

    # The file is an encoder_weights checkpoint: starting from it, the held-out accuracy
    # before training is the first run's accuracy after training.
    again = tmp_path / "again.pt"
    main(["train-rapl", "--dataset", str(dataset), "--out", str(again), "--epochs", "1", "--held-out", "0.25",
          "--encoder.encoder-weights", str(out)])
    assert _report(capsys)["held_out_accuracy_before"] == first["held_out_accuracy_after"]


SQUARE_TIE_TOLERANCE = 0.5
"""Square videos whose returns (0 … 8) differ by at most this are ranked equal."""


def _square_video(quality: float, steps: int, rng: np.random.Generator) -> Trajectory:
    """A background of random colour and a white square whose side grows with `quality` (the
    return: quality per step), jittering around the centre from frame to frame."""
    size = 64
    side = 4 + round(24 * quality)
    frames = np.empty((steps + 1, size, size, 3), np.uint8)
    frames[:] = rng.integers(0, 201, 3)
    for t, (x, y) in enumerate(np.clip((size - side) // 2 + rng.integers(-6, 7, (steps + 1, 2)), 0, size - side)):
        frames[t, y : y + side, x : x + side] = 255
    return Trajectory(np.zeros((steps + 1, 1)), np.zeros((steps, 1)), np.full(steps, quality), frames=frames)


def _square_dataset(path, n: int, steps: int, rng: np.random.Generator) -> list[str]:
    """A dataset of `n` square videos of uniform random quality, one clip each; their ids."""
    with PreferenceDataset.create(path) as store:
        clips = []
        for quality in rng.uniform(0, 1, n):
            trajectory = _square_video(float(quality), steps, rng)
            store.add_trajectory(trajectory)
            clips.append(Clip(trajectory.id, 0, steps))
        store.add_clips(clips)
    return [c.id for c in clips]


def _accuracy_on(dataset, encoder_file, clip_ids: list[str], stride: int) -> float:
    """Triplet accuracy of a saved encoder on 300 triplets of `clip_ids`, ranked by ground truth."""
    config = dataclasses.replace(StoredRankingsConfig().encoder, encoder_weights=encoder_file)
    encoder = FrameEncoder(config).eval()
    with PreferenceDataset.open(dataset) as store:
        returns = np.array([float(store.segment(c).rewards.sum()) for c in clip_ids])
        with torch.no_grad():
            features = encoder.features(clip_videos(store, clip_ids, stride, config.image_size))
    triplets = synthetic_triplets(returns, 300, np.random.default_rng(3), SQUARE_TIE_TOLERANCE)
    return triplet_accuracy(encoder.projection, features, triplets)


def test_train_rapl_learns_from_rankings_and_a_shuffled_control_does_not(tmp_path, capsys):
    steps, stride = 8, 2
    clip_ids = _square_dataset(tmp_path / "ranked", 50, steps, np.random.default_rng(0))
    shutil.copytree(tmp_path / "ranked", tmp_path / "control")
    train_clips, unseen_clips = clip_ids[:30], clip_ids[30:]
    for name, shuffle in (("ranked", None), ("control", np.random.default_rng(2))):
        with PreferenceDataset.open(tmp_path / name) as store:
            _rank_queries(store, train_clips, 120, SQUARE_TIE_TOLERANCE, np.random.default_rng(1), shuffle)
    results = {}
    for name in ("ranked", "control"):
        capsys.readouterr()
        main(["train-rapl", "--dataset", str(tmp_path / name), "--out", str(tmp_path / f"{name}.pt"),
              "--stride", str(stride)])
        results[name] = (_report(capsys), _accuracy_on(tmp_path / name, tmp_path / f"{name}.pt", unseen_clips, stride))
    (ranked, ranked_unseen), (control, control_unseen) = results["ranked"], results["control"]
    assert ranked["train_triplets"] == control["train_triplets"] == 96
    assert ranked_unseen > 0.75 and ranked_unseen > control_unseen + 0.1


def test_train_rapl_sees_the_imported_camera_it_is_asked_for(tmp_path, capsys):
    """Imported recordings whose quality shows only in the wrist camera: an encoder that sees
    the wrist camera learns the rankings; one that sees only the compared (scene) camera,
    whose frames show nothing of the quality, does not."""
    steps, stride, rng = 8, 2, np.random.default_rng(0)
    episodes = []
    for k, quality in enumerate(rng.uniform(0, 1, 50)):
        wrist = _square_video(float(quality), steps, rng).frames
        scene = rng.integers(0, 256, wrist.shape, dtype=np.uint8)
        episodes.append(RecordedEpisode(states=np.zeros((steps + 1, 1)), actions=np.zeros((steps + 1, 1)),
                                        cameras={"scene": scene, "wrist": wrist}, fps=10.0,
                                        rewards=np.full(steps + 1, quality), name=f"episode_{k}"))
    config = RecordingImportConfig(camera="scene", encoder_cameras=("wrist",), clip_length=steps, lossless=True,
                                   progress=False)
    with PreferenceDataset.create(tmp_path / "ds") as store:
        trajectory_of = import_episodes(episodes, store, "mp4", config).trajectory_of
        clip_of = {clip.trajectory_id: clip.id for clip in store.clips()}
        clip_ids = [clip_of[trajectory_of[episode.name]] for episode in episodes]
        _rank_queries(store, clip_ids[:30], 120, SQUARE_TIE_TOLERANCE, np.random.default_rng(1))
    accuracy = {}
    for name, flags, cameras in (("wrist", ["--cameras", "wrist", "--no-own-frames"], ["wrist"]),
                                 ("scene", [], [None])):
        out = tmp_path / f"{name}.pt"
        main(["train-rapl", "--dataset", str(tmp_path / "ds"), "--out", str(out), "--stride", str(stride), *flags])
        saved = torch.load(out)
        assert (saved["own_frames"], saved["cameras"]) == (name == "scene", [c for c in cameras if c])
        encoder = FrameEncoder(dataclasses.replace(StoredRankingsConfig().encoder, encoder_weights=out)).eval()
        with PreferenceDataset.open(tmp_path / "ds") as store:
            returns = np.array([float(store.segment(c).rewards.sum()) for c in clip_ids[30:]])
            with torch.no_grad():
                features = encoder.features(clip_videos(store, clip_ids[30:], stride, 64, cameras))
        triplets = synthetic_triplets(returns, 300, np.random.default_rng(3), SQUARE_TIE_TOLERANCE)
        accuracy[name] = triplet_accuracy(encoder.projection, features, triplets)
    assert accuracy["wrist"] > 0.75 and accuracy["wrist"] > accuracy["scene"] + 0.1, accuracy


def test_a_clip_without_frames_says_to_record_frames(tmp_path):
    dataset = tmp_path / "ds"
    with PreferenceDataset.create(dataset) as store:
        trajectory = Trajectory(np.zeros((9, 1)), np.zeros((8, 1)), np.arange(8.0))
        store.add_trajectory(trajectory)
        clips = [Clip(trajectory.id, start, 4) for start in range(3)]
        store.add_clips(clips)
        query = Query(tuple(c.id for c in clips))
        store.add_queries([query])
        store.add_label(Label(query.id, Outcome.RANKING, ranking=(2, 1, 0)))
    with pytest.raises(ValueError, match=rf"{dataset}: clip '{clips[0].id}' has no frames.*collect --frames"):
        main(["train-rapl", "--dataset", str(dataset), "--out", str(tmp_path / "encoder.pt")])
    assert not (tmp_path / "encoder.pt").exists()


def test_a_dataset_without_rankings_says_how_to_rank(tmp_path):
    _square_dataset(tmp_path / "ds", 3, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no 3-clip query has a ranking label.*--server.mode triplet"):
        main(["train-rapl", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "encoder.pt")])


def test_config_rejects_a_trainable_backbone_and_a_bad_share():
    with pytest.raises(ValueError, match="encoder.freeze_backbone"):
        StoredRankingsConfig(encoder=EncoderConfig(freeze_backbone=False))
    with pytest.raises(ValueError, match="held_out"):
        StoredRankingsConfig(held_out=1.0)
