"""The annotator-reliability estimate (Dawid–Skene flip rates) on synthetic answers with known
flip rates, the noise-aware Bradley–Terry loss, and the reliability-weighted fit on a synthetic
reward (no simulator)."""

import json

import numpy as np
import pytest
import torch

from embodied_pref.annotator_reliability import (
    ReliabilityConfig,
    decisive_answers,
    estimate_reliability,
    reliability_report,
)
from embodied_pref.data import Label, Outcome
from embodied_pref.evaluation import evaluate_reward
from embodied_pref.preference import PartialReturnModel
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.reliability_training import train_reward_with_reliability
from embodied_pref.reward_training import RewardTrainingConfig, noise_aware_loss, train_reward
from embodied_pref.segments import PreferencePairs, SegmentBatch

FLIPS = {"ann": 0.0, "bob": 0.1, "cat": 0.25, "dan": 0.4}


def synthetic_answers(n_queries: int, flips: dict[str, float], per_query: int, seed: int,
                      model_accuracy: float = 0.85, model_confidence: float = 0.8):
    """Answers of annotators with known flip rates, `per_query` distinct annotators per query
    (1 for all but every fifth query when per_query is 1), and a model prior that is right on
    `model_accuracy` of the queries with P = `model_confidence`."""
    rng = np.random.default_rng(seed)
    names = list(flips)
    truth = rng.random(n_queries) < 0.5
    queries, annotators, answers = [], [], []
    for q in range(n_queries):
        k = per_query if per_query > 1 else (2 if q % 5 == 0 else 1)
        for name in rng.choice(names, k, replace=False):
            queries.append(f"q{q}")
            annotators.append(str(name))
            answers.append(bool(truth[q] ^ (rng.random() < flips[name])))
    right = rng.random(n_queries) < model_accuracy
    says_first = truth == right
    prob = {f"q{q}": model_confidence if says_first[q] else 1 - model_confidence for q in range(n_queries)}
    return queries, annotators, np.array(answers), prob


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_known_flip_rates_with_a_model_and_ranks_them(seed):
    queries, annotators, answers, prob = synthetic_answers(2000, FLIPS, 1, seed)
    estimate = estimate_reliability(queries, annotators, answers, prob)
    assert estimate.converged
    estimated = [estimate.annotators[name].flip_rate for name in FLIPS]
    np.testing.assert_allclose(estimated, list(FLIPS.values()), atol=0.05)
    assert np.all(np.diff(estimated) > 0), estimated
    for name, true in FLIPS.items():
        low, high = estimate.annotators[name].interval
        assert low - 0.03 <= true <= high + 0.03, (name, estimate.annotators[name])


def test_recovers_flip_rates_from_overlap_alone_without_a_model():
    queries, annotators, answers, _ = synthetic_answers(1500, FLIPS, 3, seed=2)
    estimate = estimate_reliability(queries, annotators, answers)
    assert not estimate.with_model
    estimated = [estimate.annotators[name].flip_rate for name in FLIPS]
    np.testing.assert_allclose(estimated, list(FLIPS.values()), atol=0.05)
    assert np.all(np.diff(estimated) > 0), estimated


def test_equally_reliable_annotators_get_close_estimates():
    # Control: the ranking above comes from the answers, not from the names or the order.
    flips = {name: 0.15 for name in FLIPS}
    queries, annotators, answers, prob = synthetic_answers(2000, flips, 1, seed=3)
    estimated = [a.flip_rate for a in estimate_reliability(queries, annotators, answers, prob).annotators.values()]
    assert max(estimated) - min(estimated) < 0.06, estimated
    assert abs(np.mean(estimated) - 0.15) < 0.04, estimated


def test_uncertainty_shrinks_with_more_labels():
    few = estimate_reliability(*synthetic_answers(150, FLIPS, 1, seed=4))
    many = estimate_reliability(*synthetic_answers(3000, FLIPS, 1, seed=4))
    for name in FLIPS:
        a, b = few.annotators[name], many.annotators[name]
        assert b.flip_std < a.flip_std / 2, (name, a, b)
        assert b.interval[1] - b.interval[0] < (a.interval[1] - a.interval[0]) / 2


def test_an_annotator_without_overlap_is_estimated_from_the_model_only():
    queries, annotators, answers, prob = synthetic_answers(600, {"ann": 0.0, "bob": 0.1, "cat": 0.3}, 2, seed=5)
    # eve answers queries of her own: no overlap, 30% of her answers flipped
    rng = np.random.default_rng(6)
    truth = {q: p > 0.5 for q, p in prob.items()}
    solo = [f"solo{i}" for i in range(200)]
    for q in solo:
        truth[q] = bool(rng.random() < 0.5)
        prob[q] = 0.9 if truth[q] else 0.1
    queries += solo
    annotators += ["eve"] * len(solo)
    answers = np.concatenate([answers, [truth[q] ^ (rng.random() < 0.3) for q in solo]])

    without_model = estimate_reliability(queries, annotators, answers)
    eve = without_model.annotators["eve"]
    assert (eve.n_labels, eve.n_evidence, eve.n_overlap) == (200, 0, 0)
    assert eve.flip_rate is None and eve.interval is None
    assert without_model.flip_rates()["eve"] == 0.0  # no evidence: taken at face value
    others = [without_model.annotators[name].flip_rate for name in ("ann", "bob", "cat")]
    assert others == sorted(others) and others[2] > others[0] + 0.15, others

    with_model = estimate_reliability(queries, annotators, answers, prob).annotators["eve"]
    assert with_model.n_evidence == 200
    assert abs(with_model.flip_rate - 0.3) < 0.08, with_model


def test_a_query_the_model_did_not_score_counts_only_if_it_overlaps():
    estimate = estimate_reliability(["a", "b", "b"], ["x", "x", "y"], np.array([True, True, True]), {"c": 0.7})
    assert estimate.annotators["x"].n_evidence == 1  # "b" overlaps; "a" has neither a model nor overlap
    assert estimate.annotators["x"].model_agreement is None


def test_flip_rates_are_capped_at_the_coin():
    answers = np.array([True] * 50)
    estimate = estimate_reliability([f"q{i}" for i in range(50)], ["z"] * 50, answers,
                                    {f"q{i}": 0.05 for i in range(50)})
    z = estimate.annotators["z"]
    assert z.flip_rate == 0.5
    assert z.interval[0] > 0.5  # the interval still says: answers against the model


def test_report_takes_decisive_latest_answers_and_is_json():
    labels = [
        Label("q1", Outcome.LEFT, annotator="ann"),
        Label("q1", Outcome.RIGHT, annotator="bob"),
        Label("q1", Outcome.RIGHT, annotator="ann"),  # replaces ann's earlier answer
        Label("q2", Outcome.EQUAL, annotator="ann"),
        Label("q3", Outcome.SKIP, annotator="bob"),
        Label("q4", Outcome.CANNOT_TELL, annotator="bob"),
        Label("q5", Outcome.RANKING, ranking=(1, 0, 2), annotator="bob"),
        Label("q6", Outcome.LEFT, annotator="cat"),
    ]
    queries, annotators, answers = decisive_answers(labels)
    assert sorted(zip(queries, annotators, answers)) == [("q1", "ann", False), ("q1", "bob", False),
                                                          ("q6", "cat", True)]
    report = reliability_report(labels, {"q1": 0.2, "q6": 0.9})
    json.dumps(report, allow_nan=False)
    rows = {row["annotator"]: row for row in report["annotators"]}
    assert report["answers"] == 3 and report["overlapping_queries"] == 1 and report["model"]
    assert rows["ann"]["n_labels"] == 1 and rows["ann"]["model_agreement"] == 1.0
    assert rows["cat"]["n_overlap"] == 0 and len(rows["cat"]["interval"]) == 2
    no_model = reliability_report(labels)
    assert {r["annotator"]: r["flip_rate"] is None for r in no_model["annotators"]} == {
        "ann": False, "bob": False, "cat": True}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in length"):
        estimate_reliability(["a", "b"], ["x"], np.array([True, False]))
    with pytest.raises(ValueError, match="prefers_first"):
        estimate_reliability(["a"], ["x"], np.array([1]))
    with pytest.raises(ValueError, match="one answer per"):
        estimate_reliability(["a", "a"], ["x", "x"], np.array([True, False]))
    with pytest.raises(ValueError, match=r"prob_first\['a'\]"):
        estimate_reliability(["a"], ["x"], np.array([True]), {"a": 1.5})
    with pytest.raises(ValueError, match="annotators: expected names"):
        estimate_reliability(["a"], [None], np.array([True]))
    with pytest.raises(ValueError, match="max_flip"):
        ReliabilityConfig(max_flip=0.0)
    with pytest.raises(TypeError, match=r"labels\[1\]"):
        decisive_answers([Label("q1", Outcome.LEFT, annotator="a"), ("q1", "left")])


# --- the noise-aware loss ----------------------------------------------------------------

def _rewards(seed: int = 0, n: int = 64, length: int = 5):
    gen = torch.Generator().manual_seed(seed)
    ra = torch.randn(n, length, generator=gen, requires_grad=True)
    rb = torch.randn(n, length, generator=gen, requires_grad=True)
    targets = (torch.rand(n, generator=gen) < 0.5).float()
    targets[:4] = 0.5
    return ra, rb, targets


def test_noise_aware_loss_at_zero_flips_is_the_plain_loss():
    model = PartialReturnModel(temperature=2.0)
    ra, rb, targets = _rewards()
    plain = model.loss(ra, rb, targets)
    assert torch.equal(noise_aware_loss(model, ra, rb, targets), plain)  # no flip rates: the same call
    zero = noise_aware_loss(model, ra, rb, targets, torch.zeros(len(targets)))
    torch.testing.assert_close(zero, plain)
    grad_plain = torch.autograd.grad(plain, ra)[0]
    grad_zero = torch.autograd.grad(noise_aware_loss(model, ra, rb, targets, torch.zeros(len(targets))), ra)[0]
    torch.testing.assert_close(grad_zero, grad_plain)


def test_noise_aware_loss_at_half_gives_no_gradient():
    model = PartialReturnModel()
    ra, rb, targets = _rewards(1)
    flips = torch.full((len(targets),), 0.5)
    grad_a, grad_b = torch.autograd.grad(noise_aware_loss(model, ra * 3, rb, targets, flips), (ra, rb))
    assert grad_a.abs().max() < 1e-6 and grad_b.abs().max() < 1e-6
    # and a label of a flip rate in between pulls less than a trusted one
    flips = torch.full((len(targets),), 0.2)
    noisy = torch.autograd.grad(noise_aware_loss(model, ra, rb, targets, flips), ra)[0]
    trusted = torch.autograd.grad(model.loss(ra, rb, targets), ra)[0]
    assert noisy.norm() < trusted.norm()


def test_noise_aware_loss_is_bounded_for_a_confidently_wrong_prediction():
    model = PartialReturnModel()
    ra, rb = torch.full((1, 3), 30.0), torch.zeros(1, 3)  # P_BT(first) ≈ 1
    wrong = torch.zeros(1)
    assert model.loss(ra, rb, wrong) > 80
    assert noise_aware_loss(model, ra, rb, wrong, torch.full((1,), 0.2)).item() == pytest.approx(-np.log(0.2), rel=1e-4)


# --- training with flip rates --------------------------------------------------------------

D, A, L = 6, 2, 10
W = np.array([1.0, -0.5, 0.8, 0.0, 0.3, -1.2], dtype=np.float32)
NET = RewardNetConfig(hidden_sizes=(32, 32), use_state=False, use_action=True, use_next_state=True)


def synthetic_clips(n: int, seed: int) -> SegmentBatch:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, L + 1, D)).astype(np.float32) + rng.normal(size=(n, 1, D)).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(n, L, A)).astype(np.float32)
    rewards = np.tanh(obs[:, 1:] @ W) - 0.1 * (acts**2).sum(-1)
    return SegmentBatch(obs, acts, rewards.astype(np.float32))


def noisy_labels(clips: SegmentBatch, n: int, flips: dict[str, float], seed: int, overlap: float = 0.2):
    """n labels of random pairs by annotators with the given flip rates; a share `overlap` of
    the queries answered by two of them. -> (pairs with query groups, annotator per pair)."""
    rng = np.random.default_rng(seed)
    names = list(flips)
    n_queries = int(round(n / (1 + overlap)))
    a, b = rng.integers(0, len(clips), n_queries), rng.integers(0, len(clips), n_queries)
    truth = clips.gt_returns[a] > clips.gt_returns[b]
    rows = []
    for q in range(n_queries):
        for name in rng.choice(names, 2 if q < n - n_queries else 1, replace=False):
            rows.append((q, str(name), float(truth[q] ^ (rng.random() < flips[name]))))
    query = np.array([r[0] for r in rows])
    pairs = PreferencePairs(clips[a[query]], clips[b[query]], np.array([r[2] for r in rows], np.float32),
                            np.array([f"q{q}" for q in query]))
    return pairs, np.array([r[1] for r in rows])


def test_zero_flip_rates_train_exactly_as_none():
    clips = synthetic_clips(80, 0)
    pairs, _ = noisy_labels(clips, 60, {"ann": 0.0, "bob": 0.2}, seed=0)
    config = RewardTrainingConfig(seed=0, progress=False, max_epochs=5)
    plain, zero = RewardEnsemble(D, A, NET), RewardEnsemble(D, A, NET)
    train_reward(plain, pairs, config)
    train_reward(zero, pairs, config, flip_rates=np.zeros(len(pairs)))
    for p, z in zip(plain.state_dict().values(), zero.state_dict().values()):
        assert torch.equal(p, z)


def test_unseen_marks_each_members_out_of_bag_queries():
    clips = synthetic_clips(80, 3)
    pairs, _ = noisy_labels(clips, 120, {"ann": 0.0, "bob": 0.2}, seed=3, overlap=0.5)
    report = train_reward(RewardEnsemble(D, A, NET), pairs, RewardTrainingConfig(seed=0, progress=False, max_epochs=1))
    (unseen,) = report.unseen
    assert unseen.shape == (NET.ensemble_size, len(pairs))
    for group in np.unique(pairs.groups):  # a query is seen or unseen whole
        same = unseen[:, pairs.groups == group]
        assert (same == same[:, :1]).all()
    held_out = unseen.all(0)
    assert report.n_validation <= held_out.sum() < len(pairs)  # the validation split and more

    single, _ = noisy_labels(clips, 200, {"ann": 0.0, "bob": 0.2}, seed=4, overlap=0.0)
    report = train_reward(RewardEnsemble(D, A, NET), single, RewardTrainingConfig(seed=0, progress=False, max_epochs=1))
    # the 20% held out, and e^-1 of the rest that a bootstrap resample leaves out
    assert abs(report.unseen[0].mean() - (0.2 + 0.8 * np.exp(-1))) < 0.06


def test_flip_rates_are_checked():
    clips = synthetic_clips(40, 1)
    pairs, _ = noisy_labels(clips, 30, {"ann": 0.0, "bob": 0.2}, seed=1)
    config = RewardTrainingConfig(seed=0, progress=False, max_epochs=1)
    with pytest.raises(ValueError, match=r"flip_rates\[0\]: expected shape"):
        train_reward(RewardEnsemble(D, A, NET), pairs, config, flip_rates=np.zeros(len(pairs) - 1))
    with pytest.raises(ValueError, match=r"flip_rates\[0\]: expected rates in \[0, 0.5\]"):
        train_reward(RewardEnsemble(D, A, NET), pairs, config, flip_rates=np.full(len(pairs), 0.7))
    with pytest.raises(ValueError, match="annotators"):
        train_reward_with_reliability(RewardEnsemble(D, A, NET), pairs, np.array(["ann"]), config)


def test_reliability_weighting_learns_past_an_adversarial_annotator():
    """Half of the labels come from an annotator who flips 45% of their answers: taken at face
    value, or with one flip rate for everyone, they drown the oracle's; weighted by each
    annotator's estimated flip rate they barely count. The control: with two equally good
    annotators, one rate per annotator does no better than one for all."""
    train, test = synthetic_clips(300, 2), synthetic_clips(200, 1002)
    config = RewardTrainingConfig(seed=0, progress=False, max_epochs=60)

    def accuracies(flips, seed):
        pairs, annotators = noisy_labels(train, 240, flips, seed)
        plain, pooled, weighted = RewardEnsemble(D, A, NET), RewardEnsemble(D, A, NET), RewardEnsemble(D, A, NET)
        train_reward(plain, pairs, config)
        train_reward_with_reliability(pooled, pairs, np.full(len(pairs), "everyone"), config)
        fit = train_reward_with_reliability(weighted, pairs, annotators, config)
        assert len(fit.reports) == len(fit.estimates) == 2 and fit.trained_with is fit.estimates[0]
        score = [evaluate_reward(e, test, n_pairs=1000, seed=0).accuracy for e in (plain, pooled, weighted)]
        return score, fit.estimate.flip_rates()

    (plain, uniform, weighted), rates = accuracies({"oracle": 0.0, "adversary": 0.45}, seed=3)
    assert rates["adversary"] > 0.3 > 0.1 > rates["oracle"], rates
    assert weighted >= max(plain, uniform) + 0.03, (plain, uniform, weighted)
    assert weighted >= 0.88, weighted

    (plain, uniform, weighted), rates = accuracies({"ann": 0.05, "bob": 0.05}, seed=4)
    assert abs(rates["ann"] - rates["bob"]) < 0.05, rates
    assert abs(weighted - uniform) < 0.02, (plain, uniform, weighted)


def systematic_labels(clips: SegmentBatch, n: int, seed: int, overlap: float = 0.2):
    """Half of the queries answered by "sys", who compares returns under a reward with one
    feature's sign flipped (a consistent bias a reward can learn), the rest by two oracles,
    "ann" and "bob"; -> (pairs, annotator per pair, each annotator's true disagreement)."""
    rng = np.random.default_rng(seed)
    n_queries = int(round(n / (1 + overlap)))
    a, b = rng.integers(0, len(clips), n_queries), rng.integers(0, len(clips), n_queries)
    biased_weights = W.copy()
    biased_weights[2] = -W[2]
    biased = (np.tanh(clips.observations[:, 1:] @ biased_weights) - 0.1 * (clips.actions**2).sum(-1)).sum(-1)
    truth, says = clips.gt_returns[a] > clips.gt_returns[b], biased[a] > biased[b]
    rows = []
    for q in range(n_queries):
        k = 2 if q < n - n_queries else 1
        names = ["sys", "ann"][:k] if rng.random() < 0.5 else list(rng.choice(["ann", "bob"], k, replace=False))
        rows += [(q, str(name), float(says[q] if name == "sys" else truth[q])) for name in names]
    query = np.array([r[0] for r in rows])
    annotators = np.array([r[1] for r in rows])
    pairs = PreferencePairs(clips[a[query]], clips[b[query]], np.array([r[2] for r in rows], np.float32),
                            np.array([f"q{q}" for q in query]))
    true = {name: float(np.mean(pairs.targets[annotators == name] != truth[query][annotators == name]))
            for name in ("ann", "bob", "sys")}
    return pairs, annotators, true


def test_a_reward_without_the_annotator_exposes_a_systematic_bias():
    """A reward fit to everyone's labels learns part of a systematic annotator's bias from their
    other labels, so the out-of-bag prior undercounts their errors; a reward fit without any of
    their labels does not."""
    pairs, annotators, true = systematic_labels(synthetic_clips(300, 2), 300, seed=1)
    config = RewardTrainingConfig(seed=0, progress=False, max_epochs=60)
    rates = {prior: train_reward_with_reliability(RewardEnsemble(D, A, NET), pairs, annotators, config,
                                                  prior=prior).estimates[0].flip_rates()
             for prior in ("out_of_bag", "without_annotator")}
    assert true["sys"] > 0.2 and true["ann"] == true["bob"] == 0.0
    assert rates["without_annotator"]["sys"] > rates["out_of_bag"]["sys"] + 0.05, (rates, true)
    assert abs(rates["without_annotator"]["sys"] - true["sys"]) < abs(rates["out_of_bag"]["sys"] - true["sys"])
    assert max(rates["without_annotator"]["ann"], rates["without_annotator"]["bob"]) < 0.12, rates
    with pytest.raises(ValueError, match="prior"):
        train_reward_with_reliability(RewardEnsemble(D, A, NET), pairs, annotators, config, prior="everyone")


# --- fitting a dataset's labels -------------------------------------------------------------

def test_fit_reward_weights_a_dataset_by_its_annotators(tmp_path):
    from embodied_pref.data import Clip, Query, Trajectory
    from embodied_pref.loop import fit_reward, fit_reward_with_reliability
    from embodied_pref.store import PreferenceDataset

    clips = synthetic_clips(60, 7)
    rng = np.random.default_rng(8)
    with PreferenceDataset.create(tmp_path / "ds") as dataset:
        ids = [dataset.add_trajectory(Trajectory(clips.observations[i], clips.actions[i], clips.gt_rewards[i]))
               for i in range(len(clips))]
        dataset.add_clips([Clip(t, 0, L) for t in ids])
        clip_of = {c.trajectory_id: c.id for c in dataset.clips()}
        returns = dict(zip(ids, clips.gt_returns))
        drawn = [rng.choice(ids, 2, replace=False) for _ in range(160)]
        queries = [Query((clip_of[a], clip_of[b])) for a, b in drawn]
        triplet = Query(tuple(clip_of[t] for t in ids[:3]))
        dataset.add_queries(queries + [triplet])
        for q, (query, (a, b)) in enumerate(zip(queries, drawn)):
            for name in (["ann", "eve"] if q % 4 == 0 else ["ann" if q % 2 else "eve"]):
                first = (returns[a] > returns[b]) ^ (name == "eve" and rng.random() < 0.45)
                dataset.add_label(Label(query.id, Outcome.LEFT if first else Outcome.RIGHT, annotator=name))
        dataset.add_label(Label(queries[1].id, Outcome.EQUAL, annotator="eve"))
        dataset.add_label(Label(queries[3].id, Outcome.SKIP, annotator="eve"))
        dataset.add_label(Label(triplet.id, Outcome.RANKING, ranking=(2, 0, 1), annotator="ann"))

        net = RewardNetConfig(hidden_sizes=(16,), ensemble_size=2, use_state=False, use_action=True,
                              use_next_state=True)
        training = RewardTrainingConfig(seed=0, progress=False, max_epochs=30)
        ensemble, accuracy, estimate = fit_reward_with_reliability(dataset, net, training)
        assert 0 <= accuracy <= 1 and len(ensemble.members) == 2
        assert estimate.annotators["eve"].flip_rate > estimate.annotators["ann"].flip_rate + 0.2, estimate.annotators
        assert estimate.annotators["ann"].n_labels == 120  # the ranking is trained on, not counted
        plain, plain_accuracy = fit_reward(dataset, net, training)
        assert 0 <= plain_accuracy <= 1 and len(plain.members) == 2
