"""The annotator-reliability experiment end to end on real X-MAGICAL physics, at a small size:
where half of the labels come from near-coin-flipping annotators, weighting labels by each
annotator's estimated reliability beats taking them at face value, and beats the noise-aware
loss with one flip rate for everyone; with four good annotators (the control) one flip rate
per annotator does no better than one for all."""

import json

import numpy as np
import pytest

from embodied_pref.experiments.annotator_reliability import (
    ANNOTATOR_NAMES,
    AnnotatorReliabilityConfig,
    assign_queries,
    ranks_correctly,
    run_annotator_reliability,
)
from embodied_pref.reward_nets import RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig

SMALL = dict(seeds=(0,), labels=300, train_episodes=24, test_episodes=12, clips_per_episode=6, test_pairs=1000,
             reward_net=RewardNetConfig(hidden_sizes=(32, 32), use_state=False, use_action=False, use_next_state=True),
             training=RewardTrainingConfig(max_epochs=80, progress=False))


def test_weighting_by_reliability_beats_face_value_when_half_the_labels_are_noise(tmp_path):
    config = AnnotatorReliabilityConfig(**SMALL, mistake_prob=0.45, adversarial_prob=0.5, out=tmp_path / "noisy")
    result = run_annotator_reliability(config)
    row = result["rows"][0]
    assert row["labels"] == 300 and row["queries"] == 261
    assert row["accuracy_reliability"] >= row["accuracy_none"] + 0.08, row
    assert row["accuracy_reliability"] >= row["accuracy_uniform"] + 0.03, row
    rates = {a["annotator"]: a["final"]["flip_rate"] for a in row["annotators"]}
    assert min(rates["mistake"], rates["adversarial"]) > 0.3 > 0.15 > max(rates["oracle"], rates["myopic"]), rates
    for a in row["annotators"]:
        low, high = a["final"]["interval"]
        assert low <= a["final"]["flip_rate"] <= high
        assert len(a["estimates_by_round"]) == config.rounds + 1
    true = {a["annotator"]: a["true_flip_rate"] for a in row["annotators"]}
    assert true["oracle"] == 0.0 and abs(true["mistake"] - 0.45) < 0.03 and abs(true["adversarial"] - 0.5) < 0.03, true
    assert 0.0 < true["myopic"] < 0.45, true
    assert {"weighting", "final"} == set(row["ranking"])
    assert {"kendall_tau", "ranks_correctly", "ranks_as_on_labels"} == set(row["ranking"]["final"])
    saved = json.loads((tmp_path / "noisy" / "results.json").read_text())
    assert saved["rows"][0]["accuracy_reliability"] == row["accuracy_reliability"]
    assert "reliability" in (tmp_path / "noisy" / "table.md").read_text()
    assert (tmp_path / "noisy" / "flip_rates.png").stat().st_size > 10_000

    control = run_annotator_reliability(AnnotatorReliabilityConfig(
        **SMALL, mistake_prob=0.0, myopic_gamma=1.0, adversarial_prob=0.0, out=tmp_path / "control"))["rows"][0]
    assert abs(control["accuracy_reliability"] - control["accuracy_uniform"]) < 0.02, control
    assert max(a["final"]["flip_rate"] for a in control["annotators"]) < 0.1, control["annotators"]
    assert row["accuracy_none"] < control["accuracy_none"] - 0.05  # the noise did hurt face value


def test_queries_are_shared_out_as_asked():
    query, annotator, n_queries = assign_queries(600, 4, 0.15, np.random.default_rng(0))
    assert (len(query), n_queries) == (600, 522)
    per_query = np.bincount(query, minlength=n_queries)
    assert set(per_query) == {1, 2} and (per_query == 2).sum() == 78
    twice = np.flatnonzero(per_query == 2)
    assert all(len(set(annotator[query == q])) == 2 for q in twice)
    assert np.ptp(np.bincount(annotator)) <= 8  # about as many labels each
    with pytest.raises(ValueError, match="overlap"):
        AnnotatorReliabilityConfig(overlap=1.5)


def test_ranks_correctly_ignores_only_ties_of_the_truth():
    assert ranks_correctly(np.array([0.01, 0.2, 0.1]), np.array([0.0, 0.25, 0.12]))
    assert not ranks_correctly(np.array([0.01, 0.2, 0.3]), np.array([0.0, 0.25, 0.12]))
    assert ranks_correctly(np.array([0.2, 0.1]), np.array([0.1, 0.1]))
    assert len(ANNOTATOR_NAMES) == 4
