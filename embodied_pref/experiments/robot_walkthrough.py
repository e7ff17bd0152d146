"""From recordings to a deployed policy, end to end, with the Franka simulation standing in
for the robot and a synthetic teacher for the person:

1. a pretrained diffusion policy (BC on demonstrations that keep and break the task's hidden
   preference in equal shares, so it does both);
2. its rollouts recorded "on the robot" with two cameras and written as a LeRobot v3.0
   dataset (and the same episodes as robomimic HDF5), as a robot would log them;
3. the LeRobot recording imported into a preference dataset (frames video-backed) and its
   clips labelled by the teacher (the only step that sees the ground-truth reward);
4. `align-offline` on it, once per method: a quarter of the episodes (and the labels on their
   clips) held out, a reward fit to the rest, the policy aligned on the training episodes by
   reward-weighted regression on that reward, or by Diffusion-DPO on the training labels;
5. a held-out report that does not grade a policy by its own reward: the reward's accuracy on
   the held-out labels, each policy's action and denoising errors on the held-out labels'
   preferred vs dispreferred clips, the same on the held-out episodes that keep vs break the
   preference (which only a simulation knows), and each policy run in the simulator
   (violation rate, success), which a real robot would replace;
6. the aligned policy exported (TorchScript, ONNX) and run by the deployment runtime at the
   control rate, with its latency per action chunk.

Writes results.json and table.md (and the recordings, dataset, policies and export) under `out`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import gymnasium
import numpy as np
import torch

from embodied_pref.evaluation import evaluate_reward
from embodied_pref.experiments.align_policy import EMBODIMENT
from embodied_pref.experiments.results import save_results
from embodied_pref.experiments.reward_quality import XMAGICAL_REWARD_NET
from embodied_pref.experiments.tasks import episode_outcomes, scripted_episodes, task_spec
from embodied_pref.gathering import TeacherGatherer, dataset_teacher
from embodied_pref.loop import ask_in_rounds
from embodied_pref.offline_alignment import METHODS, AlignOfflineConfig, align_offline
from embodied_pref.recordings.episode import RecordedEpisode, to_trajectory
from embodied_pref.recordings.importing import RecordingImportConfig, import_episodes
from embodied_pref.recordings.lerobot import read_lerobot
from embodied_pref.recordings.lerobot_writer import write_lerobot
from embodied_pref.recordings.robomimic import write_robomimic
from embodied_pref.reward_nets import RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig
from embodied_pref.segments import stack_segments
from embodied_pref.store import PreferenceDataset
from envs.franka.recording import CAMERA_KEYS, TwoCameraRender, recorded_episode
from policies.deploy.export import export_policy
from policies.deploy.runtime import DeployedPolicy
from policies.diffusion.bc import BCConfig, StatePolicyConfig, pretrain_state_policy
from policies.diffusion.dpo import DPOConfig
from policies.diffusion.offline import OfflineRWRConfig, alignment_report
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import policy_sampler, run_episodes
from policies.diffusion.training import TrainerConfig



@dataclass(frozen=True)
class RobotWalkthroughConfig:
    """The walkthrough; the defaults take about 12 minutes on 2 CPU cores."""

    task: str = "franka-group"
    """A Franka task with a hidden preference (see `collect --task`)."""
    demonstrations: int = 40
    """Scripted expert demonstrations for BC, half of them breaking the preference."""
    policy: StatePolicyConfig = StatePolicyConfig(unet="tiny", n_action_steps=4)
    """The pretrained policy (samples with noise: it shows both behaviours)."""
    bc: BCConfig = field(default_factory=lambda: BCConfig(
        steps=1500, eval_every=500, progress=False,
        trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=100, batch_size=64)))
    """BC pretraining."""
    recorded_episodes: int = 40
    """Rollouts of the pretrained policy recorded, labelled and aligned on (a quarter held out)."""
    episode_steps: int = 100
    """Steps per episode (45..100)."""
    camera_size: int = 64
    """Square frame size of both cameras."""
    labels: int = 400
    """Teacher labels on pairs of recorded clips, asked in rounds."""
    labels_per_round: int = 100
    """Queries per round: uniform, then by ensemble disagreement."""
    clip_length: int = 50
    """Steps per labelled clip (each episode is cut into consecutive clips)."""
    held_out_fraction: float = 0.25
    """Share of the recorded episodes held out from the reward and the alignment."""
    reward_net: RewardNetConfig = XMAGICAL_REWARD_NET
    """The state reward learned from the labels (s' only)."""
    reward_training: RewardTrainingConfig = field(
        default_factory=lambda: RewardTrainingConfig(max_epochs=200, progress=False))
    """Fitting the reward ensemble."""
    rwr: OfflineRWRConfig = field(default_factory=lambda: OfflineRWRConfig(steps=500, progress=False))
    """Offline reward-weighted regression on the recordings."""
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(
        steps=600, beta=500.0, progress=False, trainer=TrainerConfig(learning_rate=3e-4, warmup_steps=50, batch_size=64)))
    """Diffusion-DPO on the labelled pairs: a larger step and a smaller β than DPO's defaults,
    which barely move the policy on a few hundred labels."""
    sim_episodes: int = 16
    """Simulator episodes per policy for the violation rate and success."""
    deploy_steps: int = 40
    """Control steps run through the exported policy's runtime."""
    seed: int = 0
    """Seeds demonstrations, recordings, labels, reward, fine-tuning and evaluation."""
    out: Path = Path("runs/experiments/robot_walkthrough")
    """Directory for everything the walkthrough writes."""


def record_rollouts(policy: DiffusionPolicy, config: RobotWalkthroughConfig, seeds: list[int]) -> list[RecordedEpisode]:
    """Rollouts of `policy` with both cameras, as the robot's log would hold them."""
    spec = task_spec(config.task)

    def make_env() -> gymnasium.Env:
        return TwoCameraRender(gymnasium.make(spec.env_id(EMBODIMENT[config.task], "state"),
                                              max_steps=config.episode_steps), config.camera_size)

    trajectories = run_episodes(make_env, seeds, policy.config, policy_sampler(policy, config.seed + seeds[0]),
                                record_frames=True)
    return [recorded_episode(t, f"rollout_{seed}", spec.instructions, {"seed": int(seed)})
            for t, seed in zip(trajectories, seeds)]


def run_robot_walkthrough(config: RobotWalkthroughConfig = RobotWalkthroughConfig()) -> dict:
    """Every step above; returns the results (also in `config.out`)."""
    torch.set_num_threads(1)
    out, seed, spec = config.out, config.seed, task_spec(config.task)
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = time.monotonic() - clock
        clock = time.monotonic()

    n = config.demonstrations
    demos = scripted_episodes(config.task, EMBODIMENT[config.task], [1.0] * n, seed * 100_000,
                              violations=[i % 2 == 1 for i in range(n)],
                              env_kwargs={"max_steps": config.episode_steps})
    pretrained, _ = pretrain_state_policy(demos, out / "pretrained", replace(config.bc, seed=seed), config.policy)
    lap("pretrain_s")

    first = seed * 100_000 + 50_000
    recorded = record_rollouts(pretrained, config, [first + i for i in range(config.recorded_episodes)])
    lerobot = write_lerobot(recorded, out / "recordings" / "lerobot", version="v3.0", robot_type="panda")
    write_robomimic(recorded, out / "recordings" / "robomimic.hdf5")
    lap("record_s")

    dataset_dir = out / "dataset"
    with PreferenceDataset.create(dataset_dir, description=f"robot walkthrough: {config.task}") as dataset:
        import_episodes(read_lerobot(lerobot), dataset, "lerobot",
                        RecordingImportConfig(camera=CAMERA_KEYS[0], clip_length=config.clip_length, progress=False))
        ask_in_rounds(dataset, TeacherGatherer(dataset, dataset_teacher(dataset, "oracle", seed)), config.labels,
                      config.labels_per_round, "disagreement", config.reward_net,
                      replace(config.reward_training, seed=seed), seed)
    lap("import_and_label_s")

    alignments = {method: align_offline(AlignOfflineConfig(
        policy=out / "pretrained" / "policy", dataset=dataset_dir, out=out / method, method=method,
        held_out_fraction=config.held_out_fraction, reward_net=config.reward_net,
        reward_training=config.reward_training, rwr=config.rwr, dpo=config.dpo, seed=seed)) for method in METHODS}
    lap("align_s")

    held_out = alignments["rwr"].held_out_episodes  # the same split for every method (same seed)
    keeps, breaks = [e for e in held_out if not spec.violates(e)], [e for e in held_out if spec.violates(e)]
    held_out_clips = stack_segments([e.segment(s, config.clip_length) for e in held_out
                                     for s in range(0, e.length - config.clip_length + 1, config.clip_length)])
    reward_gt_accuracy = evaluate_reward(alignments["rwr"].reward, held_out_clips, seed=seed).accuracy

    def make_sim() -> gymnasium.Env:
        return gymnasium.make(spec.env_id(EMBODIMENT[config.task], "state"), max_steps=config.episode_steps)

    sim_seeds = [seed * 100_000 + 90_000 + i for i in range(config.sim_episodes)]
    policies = {"pretrained": pretrained, **{method: a.policy for method, a in alignments.items()}}
    rows = []
    for name, policy in policies.items():
        labelled = alignments.get(name, alignments["rwr"]).report["aligned" if name in alignments else "pretrained"]
        row = {"policy": name, **{f"labels_{k}": v for k, v in labelled.items()}}
        if keeps and breaks:
            scores = alignment_report(policy, keeps, breaks, seed=seed)
            row.update(episodes_action_margin=scores.action_margin,
                       episodes_log_likelihood_ratio=scores.log_likelihood_ratio)
        row.update(episode_outcomes(config.task, run_episodes(make_sim, sim_seeds, policy.config,
                                                              policy_sampler(policy, seed))))
        rows.append(row)
    lap("report_s")

    best = max(rows[1:], key=lambda r: r["labels_log_likelihood_ratio"])["policy"]
    export = export_policy(policies[best], out / "export")
    deployed = DeployedPolicy.load(export, backend="onnxruntime")
    latencies = _run_deployed(deployed, make_sim, config)
    lap("export_and_deploy_s")

    summary = {
        "reward_accuracy_held_out_labels": alignments["rwr"].report["reward_accuracy"],
        "reward_accuracy_held_out_gt": reward_gt_accuracy, "labels": config.labels,
        "held_out_episodes": len(held_out), "held_out_keep": len(keeps), "held_out_break": len(breaks),
        "held_out_labels": alignments["rwr"].report["held_out_labels"],
        "recorded_violation_rate": float(np.mean([spec.violates(to_trajectory(e)) for e in recorded])),
        "deployed": best, "deploy_ddim_steps": deployed.steps, "deploy_chunk_ms_p50": float(np.percentile(latencies, 50)),
        "deploy_chunk_ms_p95": float(np.percentile(latencies, 95)), **timings,
        "wall_s": float(sum(timings.values())),
    }
    return save_results(out, config, rows, _table(rows, summary, config), **summary)


def _run_deployed(deployed: DeployedPolicy, make_sim, config: RobotWalkthroughConfig) -> list[float]:
    """Drive the simulator with the runtime's `act` for `deploy_steps` steps; the milliseconds
    of each step on which it sampled a new chunk."""
    env = make_sim()
    obs, _ = env.reset(seed=config.seed * 100_000 + 99_000)
    deployed.reset()
    latencies = []
    for step in range(config.deploy_steps):
        started = time.perf_counter()
        action = deployed.act({"state": np.asarray(obs, np.float32)})
        if step % deployed.config.n_action_steps == 0:
            latencies.append((time.perf_counter() - started) * 1e3)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
            deployed.reset()
    env.close()
    return latencies


def _table(rows: list[dict], summary: dict, config: RobotWalkthroughConfig) -> list[str]:
    def cell(row: dict, key: str, signed: bool = False) -> str:
        return "–" if key not in row else (f"{row[key]:+.4f}" if signed else f"{row[key]:.4f}")

    table = [f"{config.task}: {config.recorded_episodes} recorded rollouts of the pretrained policy (violation rate "
             f"{summary['recorded_violation_rate']:.2f}), {config.labels} labels; held out "
             f"{summary['held_out_episodes']} episodes ({summary['held_out_keep']} keep, {summary['held_out_break']} "
             f"break the preference) and the {summary['held_out_labels']} labels on their clips", "",
             f"Reward fit to the training labels: accuracy {summary['reward_accuracy_held_out_labels']:.3f} on the "
             f"held-out labels, {summary['reward_accuracy_held_out_gt']:.3f} against the ground truth on held-out clips.",
             "", "| policy | held-out labels: action error, preferred / dispreferred | margin | log-likelihood ratio "
             "| held-out episodes, keep vs break: margin | log-likelihood ratio | sim violation rate | sim success |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        table.append(f"| {row['policy']} | {row['labels_action_error_preferred']:.4f} / "
                     f"{row['labels_action_error_dispreferred']:.4f} | {cell(row, 'labels_action_margin', True)} | "
                     f"{cell(row, 'labels_log_likelihood_ratio', True)} | {cell(row, 'episodes_action_margin', True)} | "
                     f"{cell(row, 'episodes_log_likelihood_ratio', True)} | {row['violation_rate']:.2f} | "
                     f"{row['success']:.2f} |")
    table += ["", f"Deployed: {summary['deployed']} (onnxruntime, DDIM-{summary['deploy_ddim_steps']}), "
                  f"latency per action chunk p50 {summary['deploy_chunk_ms_p50']:.1f} ms, "
                  f"p95 {summary['deploy_chunk_ms_p95']:.1f} ms; wall time {summary['wall_s']:.0f} s."]
    return table
