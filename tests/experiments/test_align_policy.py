import json

import pytest

from embodied_pref.evaluation import evaluate_reward
from embodied_pref.experiments import align_policy
from embodied_pref.experiments.align_policy import AlignPolicyConfig, run_align_policy
from embodied_pref.experiments.tasks import scripted_episodes
from embodied_pref.loop import fit_reward
from embodied_pref.reward_nets import RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig
from embodied_pref.store import PreferenceDataset
from policies.diffusion.bc import BCConfig, StatePolicyConfig
from policies.diffusion.dpo import DPOConfig
from policies.diffusion.dppo import DPPOConfig
from policies.diffusion.rwr import RWRConfig
from policies.diffusion.training import TrainerConfig

SMALL = TrainerConfig(batch_size=8, warmup_steps=1)


@pytest.mark.slow
def test_align_policy_reports_every_method_with_its_plots(tmp_path):
    config = AlignPolicyConfig(
        tasks=("xmagical-avoid",), seeds=(0,), demonstrations=4, labels=20, labels_per_round=10,
        preference_episodes=6, clips_per_episode=3, episode_labels=10, policy=StatePolicyConfig(unet="tiny", n_action_steps=2, noise_scale=0.0),
        bc=BCConfig(steps=4, eval_every=2, progress=False, trainer=SMALL),
        rwr=RWRConfig(rounds=2, episodes_per_round=2, updates_per_round=2, trainer=SMALL, progress=False),
        dpo=DPOConfig(steps=2, trainer=SMALL, progress=False),
        dppo=DPPOConfig(iterations=2, episodes_per_iteration=2, epochs=1, trainer=SMALL, progress=False),
        eval_episodes=2, expert_episodes=6, held_out_episodes=8, workers=1, out=tmp_path)
    result = run_align_policy(config)
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["pretrained", "rwr", "dpo", "dppo"] == [r["method"] for r in result["rows"]]
    for row in rows:
        assert 0 <= row["success"] <= 1 and 0 <= row["violation_rate"] <= 1
        assert row["labels"] == (0 if row["method"] == "pretrained" else 20 + 10)
        assert 0 <= row["reward_expert_accuracy"] <= 1  # nan unless some experts keep out of the zone and some enter it
    assert [len(r["curve"]) for r in rows if r["method"] in ("rwr", "dppo")] == [2, 2]
    with PreferenceDataset.open(tmp_path / "xmagical-avoid" / "seed0" / "labels") as labels:
        assert len(labels.clips()) == 6 * 3 and len(labels.labels()) == 20
    with PreferenceDataset.open(tmp_path / "xmagical-avoid" / "seed0" / "episode_labels") as labels:
        assert {(c.start, c.length) for c in labels.clips()} == {(0, 100)} and len(labels.labels()) == 10
    assert (tmp_path / "align_policy.png").stat().st_size > 0
    assert (tmp_path / "learned_vs_true_return.png").stat().st_size > 0
    table = (tmp_path / "table.md").read_text()
    assert "| xmagical-avoid | dpo |" in table
    assert f"on expert episodes that keep vs break the preference {rows[0]['reward_expert_accuracy']:.3f}" in table


def test_align_policy_names_what_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="no hidden preference"):
        run_align_policy(AlignPolicyConfig(tasks=("xmagical-sweep",), out=tmp_path))
    with pytest.raises(ValueError, match="methods"):
        run_align_policy(AlignPolicyConfig(methods=("ppo",), out=tmp_path))
    with pytest.raises(ValueError, match="selection"):
        run_align_policy(AlignPolicyConfig(selection="loudest", out=tmp_path))
    with pytest.raises(ValueError, match="held_out_episodes"):
        run_align_policy(AlignPolicyConfig(held_out_episodes=1, out=tmp_path))


def test_align_policy_without_methods_learns_and_scores_the_reward_only(tmp_path, monkeypatch):
    fits = []

    def recording_fit(datasets, reward_net, training):
        fits.append((reward_net.hidden_sizes, training.validation_fraction, training.seed))
        return fit_reward(datasets, reward_net, training)

    scored, held_out = [], []

    def recording_evaluate(ensemble, clips, **kwargs):
        scored.append(len(clips))
        return evaluate_reward(ensemble, clips, **kwargs)

    def recording_episodes(task, embodiment, qualities, first_seed, **kwargs):
        if first_seed % 100_000 == 80_000:
            held_out.append(set(zip(qualities, kwargs["violations"])))
        return scripted_episodes(task, embodiment, qualities, first_seed, **kwargs)

    monkeypatch.setattr(align_policy, "fit_reward", recording_fit)
    monkeypatch.setattr(align_policy, "evaluate_reward", recording_evaluate)
    monkeypatch.setattr(align_policy, "scripted_episodes", recording_episodes)
    config = AlignPolicyConfig(
        tasks=("xmagical-avoid",), seeds=(0, 1), methods=(), labels=20, labels_per_round=10,
        preference_episodes=6, clips_per_episode=3, expert_episodes=6, held_out_episodes=8, workers=1, out=tmp_path,
        reward_net=RewardNetConfig(hidden_sizes=(32, 32, 32), use_state=False, use_action=False, use_next_state=True),
        reward_training=RewardTrainingConfig(validation_fraction=0.0, max_epochs=5, progress=False))
    rows = run_align_policy(config)["rows"]
    assert [(r["seed"], r["method"], r["labels"]) for r in rows] == [(0, "reward", 20), (1, "reward", 20)]
    assert all(0 <= r["reward_accuracy"] <= 1 for r in rows)
    assert not (tmp_path / "xmagical-avoid" / "bc").exists() and not (tmp_path / "align_policy.png").exists()
    table = (tmp_path / "table.md").read_text()
    assert "| task | method |" not in table
    assert set(fits) == {((32, 32, 32), 0.0, 0), ((32, 32, 32), 0.0, 1)}  # the configured fit, seeded per seed
    assert scored == [8 * 4, 8 * 4]  # four clips of each held-out episode, per seed
    every_kind = {(q, v) for q in (0.3, 0.6, 0.9, 1.0) for v in (False, True)}
    assert held_out == [every_kind, every_kind]  # each quality keeps and breaks the preference
    assert f"({rows[0]['reward_accuracy']:.3f} / {rows[1]['reward_accuracy']:.3f})" in table
