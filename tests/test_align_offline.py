"""`align-offline` on a labelled dataset of recordings: episodes split by a seed, the labels on
held-out episodes' clips kept out of the reward and the fine-tuning, the aligned policy, the
reward and the held-out report written; bad datasets are named."""

import json

import numpy as np
import pytest
import torch

from embodied_pref.cli import main
from embodied_pref.offline_alignment import split_episodes
from embodied_pref.recordings.episode import RecordedEpisode, to_trajectory
from embodied_pref.recordings.importing import GradedPair, RecordingImportConfig, add_graded_labels, import_episodes
from embodied_pref.store import PreferenceDataset
from policies.diffusion.bc import BCConfig, pretrain
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.training import TrainerConfig

N = 24


def episode(i: int) -> RecordedEpisode:
    """Half the episodes push their actions up (the preferred behaviour), half down."""
    rng = np.random.default_rng(i)
    sign = 1.0 if i % 2 == 0 else -1.0
    states = np.cumsum(rng.normal(size=(N, 3)) * 0.1, axis=0)
    return RecordedEpisode(states=states, actions=sign * 0.5 + 0.05 * rng.normal(size=(N, 2)), cameras={},
                           fps=10.0, name=f"ep{i}", source="/robot/log")


@pytest.fixture
def labelled(tmp_path):
    episodes = [episode(i) for i in range(8)]
    with PreferenceDataset.create(tmp_path / "ds") as dataset:
        summary = import_episodes(episodes, dataset, "mp4", RecordingImportConfig(clip_length=8, progress=False))
        pairs = [GradedPair(f"ep{a}", f"ep{b}", {"kind": "person"}) for a in range(0, 8, 2) for b in range(1, 8, 2)]
        add_graded_labels(dataset, pairs, summary.trajectory_of, "ada", per_pair=2)
    torch.manual_seed(0)
    config = DiffusionPolicyConfig(state_dim=3, action_dim=2, horizon=8, n_action_steps=4, unet="tiny")
    policy, _ = pretrain(config, [to_trajectory(episode(i)) for i in range(8)], tmp_path / "bc",
                         BCConfig(steps=30, eval_every=30, progress=False, val_fraction=0.0,
                                  trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=5, batch_size=32)))
    return tmp_path / "ds", tmp_path / "bc" / "policy"


def test_split_holds_out_a_seeded_share_never_all():
    ids = [f"t{i}" for i in range(8)]
    held = split_episodes(ids, 0.25, seed=0)
    assert len(held) == 2 and held == split_episodes(ids, 0.25, seed=0) and held != split_episodes(ids, 0.25, seed=1)
    assert len(split_episodes(ids[:2], 0.9, seed=0)) == 1 and len(split_episodes(ids, 0.01, seed=0)) == 1


@pytest.mark.parametrize("method", ["rwr", "dpo"])
def test_align_offline_writes_the_policy_reward_and_held_out_report(labelled, tmp_path, capsys, method):
    dataset, policy = labelled
    main(["align-offline", "--policy", str(policy), "--dataset", str(dataset), "--out", str(tmp_path / method),
          "--method", method, "--rwr.steps", "20", "--dpo.steps", "20", "--reward-training.max-epochs", "20"])
    report = json.loads((tmp_path / method / "report.json").read_text())
    assert report["training_episodes"] == 6 and report["held_out_episodes"] == 2
    with PreferenceDataset.open(dataset) as store:
        assert report["training_labels"] + report["held_out_labels"] == len(store.labels()) == 32
    assert 0 < report["held_out_labels"] < 32 and 0 <= report["reward_accuracy"] <= 1
    for name in ("pretrained", "aligned"):
        assert set(report[name]) >= {"action_error_preferred", "action_margin", "log_likelihood_ratio"}
    assert report["pretrained"] != report["aligned"]  # fine-tuning moved it
    assert (tmp_path / method / "policy" / "model.safetensors").is_file() and (tmp_path / method / "reward.pt").is_file()
    assert "log-likelihood ratio" in capsys.readouterr().out


def test_a_dataset_without_enough_episodes_or_labels_is_named(labelled, tmp_path):
    _, policy = labelled
    with PreferenceDataset.create(tmp_path / "one") as dataset:
        import_episodes([episode(0)], dataset, "mp4", RecordingImportConfig(clip_length=8, progress=False))
    with pytest.raises(SystemExit, match="field 'trajectories': need at least 2 episodes"):
        main(["align-offline", "--policy", str(policy), "--dataset", str(tmp_path / "one"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
