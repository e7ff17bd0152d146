"""Learning tests of the reward ensemble on a synthetic nonlinear reward (no simulator)."""

import numpy as np
import pytest
import torch

from embodied_pref.evaluation import evaluate_reward
from embodied_pref.reward_nets import PessimisticReward, RewardEnsemble, RewardNetConfig, StandardizedReward
from embodied_pref.reward_training import RewardTrainingConfig, train_reward
from embodied_pref.segments import PreferencePairs, SegmentBatch

D, A, L = 6, 2, 10
W = np.array([1.0, -0.5, 0.8, 0.0, 0.3, -1.2], dtype=np.float32)


def synthetic_clips(n: int, seed: int, length: int = L) -> SegmentBatch:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, length + 1, D)).astype(np.float32) + rng.normal(size=(n, 1, D)).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(n, length, A)).astype(np.float32)
    rewards = np.tanh(obs[:, 1:] @ W) - 0.1 * (acts**2).sum(-1)
    return SegmentBatch(obs, acts, rewards.astype(np.float32))


def oracle_pairs(clips: SegmentBatch, n: int, seed: int) -> PreferencePairs:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(clips), n), rng.integers(0, len(clips), n)
    ga, gb = clips.gt_returns[a], clips.gt_returns[b]
    return PreferencePairs(clips[a], clips[b], (ga > gb).astype(np.float32))


CONFIG = RewardNetConfig(hidden_sizes=(64, 64), use_state=False, use_action=True, use_next_state=True)


def fit(seed: int = 0, n_labels: int = 300):
    train_clips, test_clips = synthetic_clips(400, seed), synthetic_clips(200, seed + 1000)
    ensemble = RewardEnsemble(D, A, CONFIG)
    report = train_reward(ensemble, oracle_pairs(train_clips, n_labels, seed),
                          RewardTrainingConfig(seed=seed, progress=False, max_epochs=150))
    return ensemble, report, evaluate_reward(ensemble, test_clips, n_pairs=1000, seed=seed)


def test_learns_held_out_preferences_far_above_chance():
    _, report, evaluation = fit()
    assert evaluation.accuracy >= 0.88, evaluation
    assert evaluation.spearman >= 0.9, evaluation
    assert report.validation_loss[report.best_epoch] < report.validation_loss[0]


def test_more_labels_help():
    few = fit(n_labels=20)[2]
    many = fit(n_labels=400)[2]
    assert many.accuracy > few.accuracy


def test_training_is_deterministic_under_a_seed():
    clips = synthetic_clips(30, 5)
    first, _, _ = fit(seed=3, n_labels=60)
    second, _, _ = fit(seed=3, n_labels=60)
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).numpy() for t in clips.tensors())
    np.testing.assert_array_equal(first.predict(obs, acts, next_obs), second.predict(obs, acts, next_obs))


def test_checkpoint_round_trip_preserves_predictions(tmp_path):
    ensemble, _, _ = fit(n_labels=40)
    ensemble.save(tmp_path / "reward.pt")
    loaded = RewardEnsemble.load(tmp_path / "reward.pt")
    clips = synthetic_clips(5, 9)
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).numpy() for t in clips.tensors())
    np.testing.assert_allclose(ensemble.predict(obs, acts, next_obs), loaded.predict(obs, acts, next_obs), rtol=1e-6)
    assert loaded.config == CONFIG


def test_standardized_reward_has_zero_mean_unit_std_on_reference():
    ensemble, _, _ = fit(n_labels=40)
    clips = synthetic_clips(50, 11)
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).numpy() for t in clips.tensors())
    standardized = StandardizedReward(ensemble.predict, obs, acts, next_obs)(obs, acts, next_obs)
    assert abs(standardized.mean()) < 1e-4
    assert standardized.std() == pytest.approx(1.0, rel=1e-3)


def test_each_member_trains_on_its_own_bootstrap_resample():
    _, report, _ = fit(n_labels=60)
    n_train = report.n_train
    assert len(report.member_pairs) == 3 and len(set(report.member_pairs)) > 1
    assert all(0.5 * n_train < m < 0.8 * n_train for m in report.member_pairs)  # ≈ 63% distinct
    pairs = oracle_pairs(synthetic_clips(400, 0), 60, 0)
    whole = train_reward(RewardEnsemble(D, A, CONFIG), pairs,
                         RewardTrainingConfig(bootstrap=False, progress=False, max_epochs=2))
    assert whole.member_pairs == [whole.n_train] * 3


def test_learning_beats_a_shuffled_label_control_by_a_margin():
    _, _, evaluation = fit(n_labels=300)
    train_clips, test_clips = synthetic_clips(400, 0), synthetic_clips(200, 1000)
    pairs = oracle_pairs(train_clips, 300, 0)
    shuffled = PreferencePairs(pairs.first, pairs.second, np.random.default_rng(5).permutation(pairs.targets))
    control = RewardEnsemble(D, A, CONFIG)
    train_reward(control, shuffled, RewardTrainingConfig(seed=0, progress=False, max_epochs=150))
    control_evaluation = evaluate_reward(control, test_clips, n_pairs=1000, seed=0)
    assert evaluation.accuracy > control_evaluation.accuracy + 0.25, (evaluation, control_evaluation)
    assert control_evaluation.accuracy < 0.7


OPTIONS = {
    "default": RewardNetConfig(hidden_sizes=(16,)),
    "state only": RewardNetConfig(hidden_sizes=(16,), use_action=False),
    "next state": RewardNetConfig(hidden_sizes=(16, 16), use_state=False, use_action=False, use_next_state=True),
    "potential": RewardNetConfig(hidden_sizes=(16,), use_next_state=True, potential=True),
    "potential, one member": RewardNetConfig(hidden_sizes=(8,), potential=True, ensemble_size=1),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_same_seed_same_predictions_for_every_net_option_whatever_came_before(name):
    clips = synthetic_clips(30, 5)
    pairs = oracle_pairs(synthetic_clips(80, 6), 40, 6)
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).numpy() for t in clips.tensors())
    config = RewardTrainingConfig(seed=4, progress=False, max_epochs=3)
    predictions = []
    for global_seed in (0, 123):  # another global RNG state, and a model that was trained before
        torch.manual_seed(global_seed)
        ensemble = RewardEnsemble(D, A, OPTIONS[name])
        if global_seed:
            train_reward(ensemble, oracle_pairs(synthetic_clips(80, 7), 40, 7),
                         RewardTrainingConfig(seed=9, progress=False, max_epochs=3))
        train_reward(ensemble, pairs, config)
        predictions.append(ensemble.predict(obs, acts, next_obs))
    np.testing.assert_array_equal(predictions[0], predictions[1])


def test_the_validation_split_keeps_each_querys_pairs_together():
    from embodied_pref.reward_training import split_by_query

    clips = synthetic_clips(60, 2)
    pairs = oracle_pairs(clips, 60, 2)
    groups = np.repeat([f"q{i}" for i in range(20)], 3)  # e.g. three annotators, or a triplet's pairs
    grouped = PreferencePairs(pairs.first, pairs.second, pairs.targets, groups)
    for seed in range(10):
        val, train = split_by_query(grouped, 0.2, np.random.default_rng(seed))
        assert not set(groups[val]) & set(groups[train])
        assert len(val) == 12 and len(train) == 48 and len(set(val) | set(train)) == 60
    report = train_reward(RewardEnsemble(D, A, CONFIG), grouped,
                          RewardTrainingConfig(progress=False, max_epochs=2))
    assert report.n_validation == 12
    with pytest.raises(ValueError, match="at least 2 queries"):
        split_by_query(PreferencePairs(pairs.first[:3], pairs.second[:3], pairs.targets[:3],
                                       np.array(["q"] * 3)), 0.2, np.random.default_rng(0))


def test_rejects_too_few_pairs():
    clips = synthetic_clips(4, 0)
    with pytest.raises(ValueError, match="at least 2"):
        train_reward(RewardEnsemble(D, A, CONFIG), oracle_pairs(clips, 1, 0))


def test_potential_term_telescopes_over_a_segment_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = RewardNetConfig(hidden_sizes=(8,), use_state=False, use_action=False, use_next_state=True,
                             potential=True, ensemble_size=1)
    ensemble = RewardEnsemble(3, 2, config)
    rng = np.random.default_rng(0)
    obs, acts = rng.normal(size=(4, 6, 3)).astype(np.float32), rng.normal(size=(4, 5, 2)).astype(np.float32)
    ensemble.fit_input_normalization(obs[:, :-1].reshape(-1, 3), acts.reshape(-1, 2), obs[:, 1:].reshape(-1, 3))
    o, a = torch.from_numpy(obs), torch.from_numpy(acts)
    member = ensemble.members[0]
    with torch.no_grad():
        score = ensemble(o[:, :-1], a, o[:, 1:])[0].sum(-1)
        reward_only = member.net((o[:, 1:] - member.input_mean) / member.input_std).squeeze(-1).sum(-1)
        expected = reward_only + member.potential_of(o[:, -1]) - member.potential_of(o[:, 0])
    torch.testing.assert_close(score, expected)
    ensemble.save(tmp_path / "r.pt")
    again = RewardEnsemble.load(tmp_path / "r.pt")
    np.testing.assert_array_equal(again.predict(obs[:, 0], acts[:, 0], obs[:, 1]),
                                  ensemble.predict(obs[:, 0], acts[:, 0], obs[:, 1]))


def test_pessimistic_reward_discounts_member_disagreement():
    torch.manual_seed(0)
    ensemble = RewardEnsemble(3, 1, RewardNetConfig(hidden_sizes=(8,), ensemble_size=4))
    obs = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    acts = np.zeros((50, 1), np.float32)
    members = ensemble(*(torch.as_tensor(a) for a in (obs, acts, obs))).detach().numpy()
    np.testing.assert_allclose(PessimisticReward(ensemble, 0.0)(obs, acts, obs), ensemble.predict(obs, acts, obs), atol=1e-6)
    np.testing.assert_allclose(PessimisticReward(ensemble, 2.0)(obs, acts, obs),
                               members.mean(0) - 2.0 * members.std(0, ddof=1), atol=1e-5)
    assert (PessimisticReward(ensemble, 1.0)(obs, acts, obs) < ensemble.predict(obs, acts, obs)).all()


def test_pair_sets_of_another_clip_length_train_the_same_step_reward():
    short, long_clips, test_clips = synthetic_clips(400, 0), synthetic_clips(400, 1, length=3 * L), synthetic_clips(200, 2)
    config = RewardTrainingConfig(seed=0, progress=False, max_epochs=150)
    few_short = oracle_pairs(short, 30, 0)
    alone, together = RewardEnsemble(D, A, CONFIG), RewardEnsemble(D, A, CONFIG)
    train_reward(alone, few_short, config)
    report = train_reward(together, [few_short, oracle_pairs(long_clips, 270, 1)], config)
    assert report.n_train + report.n_validation == 300
    accuracy_alone = evaluate_reward(alone, test_clips, n_pairs=1000).accuracy
    accuracy_together = evaluate_reward(together, test_clips, n_pairs=1000).accuracy
    assert accuracy_together >= 0.85 and accuracy_together > accuracy_alone + 0.05, (accuracy_alone, accuracy_together)


def test_one_pair_set_in_a_list_trains_as_the_set_itself():
    pairs, clips = oracle_pairs(synthetic_clips(100, 4), 60, 4), synthetic_clips(30, 5)
    config = RewardTrainingConfig(seed=1, progress=False, max_epochs=20)
    bare, listed = RewardEnsemble(D, A, CONFIG), RewardEnsemble(D, A, CONFIG)
    train_reward(bare, pairs, config)
    train_reward(listed, [pairs], config)
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).numpy() for t in clips.tensors())
    np.testing.assert_array_equal(bare.predict(obs, acts, next_obs), listed.predict(obs, acts, next_obs))
