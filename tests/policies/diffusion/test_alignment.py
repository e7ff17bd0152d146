import math

import gymnasium
import numpy as np
import pytest
import torch

from embodied_pref.data import Trajectory
from embodied_pref.segments import PreferencePairs, SegmentBatch
from envs.xmagical import env_id
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.dpo import DPOConfig, decisive_pairs, dpo_loss, train_dpo
from policies.diffusion.dppo import DenoisingConfig, DPPOPolicy, gaussian_log_prob
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import Decisions, policy_sampler, recorder, run_episodes
from policies.diffusion.rwr import RWRConfig, decision_weights, train_rwr
from policies.diffusion.training import TrainerConfig
from policies.diffusion.windows import ChunkWindows

CONFIG = DiffusionPolicyConfig(state_dim=3, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, unet="tiny",
                               inference_steps=5)


def policy(seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    return DiffusionPolicy(CONFIG)


def windows_batch(seed: int, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    return {"state": torch.randn(n, 2, 3, generator=g)}, torch.rand(n, 8, 2, generator=g) * 2 - 1


def test_dpo_loss_is_log_2_when_the_policy_is_its_reference():
    p = policy()
    reference = policy()
    loss, bracket = dpo_loss(p, reference, windows_batch(0), windows_batch(1), beta=2000.0,
                             generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.allclose(bracket, torch.zeros_like(bracket), atol=1e-6)


def test_a_dpo_step_moves_the_policy_toward_the_winner():
    p, reference = policy(), policy()
    winner, loser = windows_batch(0), windows_batch(1)
    optimizer = torch.optim.SGD(p.parameters(), lr=1e-4)

    def errors(model):
        g = torch.Generator().manual_seed(9)
        noise = torch.randn(winner[1].shape, generator=g)
        t = torch.randint(0, 100, (8,), generator=g)
        with torch.no_grad():
            w = model.noise_prediction_error(model.condition(winner[0]), winner[1], noise, t)
            l = model.noise_prediction_error(model.condition(loser[0]), loser[1], noise, t)
        return w.mean().item(), l.mean().item()

    before_w, before_l = errors(p)
    loss, _ = dpo_loss(p, reference, winner, loser, beta=2000.0, generator=torch.Generator().manual_seed(9))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after_w, after_l = errors(p)
    # One step on these noises: the winner is now denoised better relative to the loser, so
    # the loss on the same noises has fallen below log 2.
    assert after_w - after_l < before_w - before_l
    final, bracket = dpo_loss(p, reference, winner, loser, beta=2000.0, generator=torch.Generator().manual_seed(9))
    assert final.item() < math.log(2)
    assert (bracket < 0).float().mean() > 0.5


def clip_pairs(n: int, seed: int, length: int = 12) -> PreferencePairs:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(2, n, length + 1, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, (2, n, length, 2)).astype(np.float32)
    targets = np.array([1.0, 0.0, 0.5] * (n // 3) + [1.0] * (n % 3), np.float32)
    return PreferencePairs(SegmentBatch(obs[0], actions[0]), SegmentBatch(obs[1], actions[1]), targets)


def test_decisive_pairs_orient_winners_and_drop_ties():
    pairs = clip_pairs(6, 0)
    winners, losers = decisive_pairs(pairs)
    assert len(winners) == 4
    np.testing.assert_array_equal(winners[0].actions, pairs.first.actions[0])
    np.testing.assert_array_equal(winners[1].actions, pairs.second.actions[1])
    np.testing.assert_array_equal(losers[1].actions, pairs.first.actions[1])


def test_decisive_pairs_of_several_sets_keep_each_sets_clips():
    clips, episodes = clip_pairs(6, 0), clip_pairs(2, 1, length=40)
    winners, losers = decisive_pairs([clips, episodes])
    assert len(winners) == len(losers) == 4 + 2
    assert [len(w.actions) for w in winners] == [12] * 4 + [40] * 2
    np.testing.assert_array_equal(winners[4].actions, episodes.first.actions[0])
    np.testing.assert_array_equal(losers[5].actions, episodes.second.actions[1])


def implicit_accuracy(tuned: DiffusionPolicy, reference: DiffusionPolicy, pairs: PreferencePairs, draws: int = 64) -> float:
    """Share of decisive pairs whose bracket, averaged over windows and noise draws, is negative."""
    winners, losers = decisive_pairs(pairs)
    win, lose = ChunkWindows(winners, CONFIG), ChunkWindows(losers, CONFIG)
    rng = np.random.default_rng(0)
    chosen = np.repeat(np.arange(len(winners)), draws)
    w, l = win.batch(win.windows_of(chosen, rng)), lose.batch(lose.windows_of(chosen, rng))
    with torch.no_grad():
        _, bracket = dpo_loss(tuned, reference, w[:2], l[:2], 2000.0, torch.Generator().manual_seed(1))
    return float((bracket.reshape(len(winners), draws).mean(1) < 0).float().mean())


def test_train_dpo_makes_the_policy_prefer_its_winners(tmp_path):
    pretrained, pairs = policy(), clip_pairs(12, 1)
    config = DPOConfig(steps=60, beta=2000.0, progress=False,
                       trainer=TrainerConfig(learning_rate=1e-4, warmup_steps=5, batch_size=16))
    tuned, log = train_dpo(pretrained, pairs, tmp_path, config)
    assert [row["step"] for row in log] == [50, 60]
    assert implicit_accuracy(tuned, pretrained, pairs) >= 0.75
    # Control: the same pairs with winners and losers swapped train the opposite preference.
    swapped = PreferencePairs(pairs.first, pairs.second, 1 - pairs.targets)
    assert implicit_accuracy(tuned, pretrained, swapped) <= 0.25
    # the reference stayed untouched
    assert all(torch.equal(a, b) for a, b in zip(pretrained.state_dict().values(), policy().state_dict().values()))


def test_a_dppo_step_log_probability_is_the_hand_computed_gaussian():
    base, actor = policy(0), policy(1)
    denoising = DenoisingConfig(denoising_steps=5, finetuned_steps=2, eta=1.0, min_std=0.1)
    model = DPPOPolicy(base, actor, denoising)
    obs = {"state": torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(2))}
    chain, actions = model.sample(obs, torch.Generator().manual_seed(3))
    assert chain.shape == (3, 3, 8, 2) and actions.shape == (3, 4, 2)
    log_probs = model.log_probs(obs, chain)
    assert log_probs.shape == (3, 2)

    alphas = base.noise_scheduler.alphas_cumprod
    timesteps = [80, 60, 40, 20, 0]  # DDIM "leading" spacing of 5 of 100 steps
    assert model.timesteps.tolist() == timesteps
    cond = actor.condition(obs)
    for k, i in enumerate([3, 4]):
        x, t = chain[:, k], timesteps[i]
        a_t = alphas[t]
        a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
        with torch.no_grad():
            eps = actor.unet(x, torch.full((3,), t), cond)
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        mean = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        std = max(float(((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()), 0.1)
        expected = torch.distributions.Normal(mean, std).log_prob(chain[:, k + 1])[:, 1:5]
        assert torch.allclose(log_probs[:, k], expected.clamp(-5, 2).mean(dim=(1, 2)), atol=1e-5)
    assert torch.allclose(gaussian_log_prob(torch.tensor(0.3), torch.tensor(0.1), torch.tensor(0.5)),
                          torch.distributions.Normal(0.1, 0.5).log_prob(torch.tensor(0.3)))


def test_a_saved_dppo_policy_keeps_its_denoising_split(tmp_path):
    model = DPPOPolicy(policy(0), policy(1), DenoisingConfig(denoising_steps=6, finetuned_steps=3))
    model.save(tmp_path / "dppo")
    loaded = DPPOPolicy.load(tmp_path / "dppo")
    assert loaded.denoising == model.denoising
    obs = {"state": torch.randn(2, 2, 3)}
    _, a = model.sample(obs, torch.Generator().manual_seed(0), deterministic=True)
    _, b = loaded.sample(obs, torch.Generator().manual_seed(0), deterministic=True)
    assert torch.equal(a, b)
    # The fine-tuned steps matter: the base alone samples something else.
    _, base_only = DPPOPolicy(policy(0), policy(0), model.denoising).sample(obs, torch.Generator().manual_seed(0), True)
    assert not torch.allclose(a, base_only)


def episodes_with_returns(returns: list[float], length: int = 12) -> list[Trajectory]:
    out = []
    for r in returns:
        obs = np.zeros((length + 1, 3), np.float32)
        obs[:, 0] = r / length  # the reward below pays obs[0] of the next state each step
        out.append(Trajectory(observations=obs, actions=np.zeros((length, 2), np.float32), rewards=None))
    return out


def reward_from_first_feature(obs, acts, next_obs):
    return next_obs[:, 0].astype(np.float32)


def decisions_of(episodes: list[Trajectory], n_action_steps: int = 4) -> Decisions:
    """The decisions a policy with Ta = `n_action_steps` makes in `episodes` (placeholder chunks)."""
    episode = np.concatenate([np.full(-(-len(e.actions) // n_action_steps), i) for i, e in enumerate(episodes)])
    index = np.concatenate([np.arange(-(-len(e.actions) // n_action_steps)) for e in episodes])
    return Decisions(obs={"state": torch.zeros(len(episode), 2, 3)}, sampled=torch.zeros(len(episode), 8, 2),
                     episode=episode, index=index)


def test_rwr_weights_favour_higher_learned_returns():
    episodes = episodes_with_returns([-5.0, 0.0, 5.0, 6.0])
    decisions = decisions_of(episodes)
    weights = decision_weights(episodes, decisions, reward_from_first_feature, RWRConfig(temperature=1.0), 4)
    per_episode = [weights[decisions.episode == i].mean() for i in range(4)]
    assert per_episode == sorted(per_episode) and per_episode[0] < 0.1 * per_episode[-1]
    assert weights.mean() == pytest.approx(1.0)
    top = decision_weights(episodes, decisions, reward_from_first_feature, RWRConfig(weighting="top", top_fraction=0.25), 4)
    assert set(np.unique(top[decisions.episode < 3])) == {0.0}
    assert (top[decisions.episode == 3] > 0).all()


def test_advantage_weights_score_the_actions_a_decision_executes():
    obs = np.zeros((13, 3), np.float32)
    obs[7:, 0] = 1.0  # Â = 1 for the steps whose next state has index >= 7 (steps 6 .. 11)
    episode = Trajectory(observations=obs, actions=np.zeros((12, 2), np.float32), rewards=None)
    decisions = decisions_of([episode])
    weights = decision_weights([episode], decisions, reward_from_first_feature,
                               RWRConfig(score="advantage", temperature=1.0), 4)
    # Decision j executes steps 4j .. 4j + 3: Σ Â = 0, 2 and 4.
    assert weights[0] < weights[1] < weights[2]


def test_recorded_chunks_become_decisions_in_env_and_step_order():
    records: dict[int, list] = {}
    record = recorder(records)
    obs = {"state": torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)}
    record(np.array([1, 0]), obs, torch.ones(2, 8, 2))
    record(np.array([1]), {"state": obs["state"][:1] + 100}, torch.full((1, 8, 2), 2.0))
    decisions = Decisions.from_records(records)
    assert decisions.episode.tolist() == [0, 1, 1] and decisions.index.tolist() == [0, 0, 1]
    assert torch.equal(decisions.obs["state"][0], obs["state"][1])
    assert torch.equal(decisions.obs["state"][2], obs["state"][0] + 100)
    assert decisions.sampled[:, 0, 0].tolist() == [1.0, 1.0, 2.0]


def test_rwr_explores_with_its_rollout_noise_and_keeps_the_policys_own(tmp_path):
    config = DiffusionPolicyConfig(state_dim=16, action_dim=2, horizon=8, n_action_steps=4, unet="tiny",
                                   inference_steps=3, noise_scale=0.0)
    torch.manual_seed(0)
    deterministic = DiffusionPolicy(config)
    deterministic.normalizer.set_limits("action", -np.ones(2), np.ones(2))

    def make_env():
        return gymnasium.make(env_id("Longstick", "state"))

    def first_round_return(noise_scale: float) -> float:
        rwr = RWRConfig(rounds=1, episodes_per_round=2, updates_per_round=1, bc_weight=0.0, rollout_noise_scale=noise_scale,
                        trainer=TrainerConfig(batch_size=8, warmup_steps=1), progress=False)
        tuned, log = train_rwr(deterministic, reward_from_first_feature, make_env, [], tmp_path / str(noise_scale), rwr,
                               first_seed=3)
        assert tuned.config.noise_scale == 0.0
        return log[0]["gt_return"]

    acting = run_episodes(make_env, [3, 4], config, policy_sampler(deterministic, 123))
    assert first_round_return(0.0) == pytest.approx(np.mean([e.rewards.sum() for e in acting]))
    assert first_round_return(1.0) != pytest.approx(first_round_return(0.0))
