"""Learning tests of the reward ensemble on a synthetic nonlinear reward (no simulator)."""

import numpy as np
import pytest
import torch

from embodied_pref.evaluation import evaluate_reward
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig, StandardizedReward
from embodied_pref.reward_training import RewardTrainingConfig, train_reward
from embodied_pref.segments import PreferencePairs, SegmentBatch

D, A, L = 6, 2, 10
W = np.array([1.0, -0.5, 0.8, 0.0, 0.3, -1.2], dtype=np.float32)


def synthetic_clips(n: int, seed: int) -> SegmentBatch:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, L + 1, D)).astype(np.float32) + rng.normal(size=(n, 1, D)).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(n, L, A)).astype(np.float32)
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


def test_ensemble_members_differ():
    ensemble, _, _ = fit(n_labels=60)
    clips = synthetic_clips(20, 12)
    rewards = ensemble(*clips.tensors())
    assert rewards.shape == (3, 20, L)
    assert torch.std(rewards, dim=0).mean() > 1e-3


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
