"""`embodied-pref`: the command line. Each subcommand's `--help` lists its options."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

from embodied_pref.agent_ranking import leaderboard_markdown
from embodied_pref.data.vpt import VPTImportConfig, import_recordings
from embodied_pref.distributed import is_main_process
from embodied_pref.evaluation import evaluate_reward
from embodied_pref.experiments.agent_ranking import AgentRankingConfig, rank_agents
from embodied_pref.experiments.align_policy import AlignPolicyConfig, run_align_policy
from embodied_pref.experiments.annotator_reliability import AnnotatorReliabilityConfig, run_annotator_reliability
from embodied_pref.experiments.continuous_regret import ContinuousRegretConfig, run_continuous_regret
from embodied_pref.experiments.crafter_demo import CRAFTER_TASKS, run_crafter_demo
from embodied_pref.experiments.demo import DemoConfig, RunRefused, evaluate_policy, run_demo
from embodied_pref.experiments.env_grid import render_env_grid
from embodied_pref.experiments.presets import flags_given
from embodied_pref.experiments.label_efficiency import LabelEfficiencyConfig, run_label_efficiency
from embodied_pref.experiments.rapl import RaplExperimentConfig, run_rapl_experiment
from embodied_pref.experiments.regret import RegretExperimentConfig, run_regret_experiment
from embodied_pref.experiments.reward_quality import RewardQualityConfig, run_reward_quality
from embodied_pref.experiments.robot_walkthrough import RobotWalkthroughConfig, run_robot_walkthrough
from embodied_pref.experiments.tasks import scripted_episodes, task_spec
from embodied_pref.gathering import TeacherGatherer, dataset_teacher
from embodied_pref.loop import ask, fit_reward, fit_reward_with_reliability
from embodied_pref.offline_alignment import AlignOfflineConfig, align_offline, report_markdown
from embodied_pref.policy_training import TrainPolicyConfig, evaluate_diffusion_policy, run_train_policy
from embodied_pref.recordings.episode import RobotDataError, from_trajectory
from embodied_pref.recordings.formats import Format, read_episodes, write_episodes
from embodied_pref.recordings.importing import (
    GradedPair,
    RecordingImportConfig,
    add_graded_labels,
    import_episodes,
)
from embodied_pref.rapl.stored_labels import StoredRankingsConfig, train_on_stored_rankings
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig
from embodied_pref.segments import clip_pool, cut_clips
from embodied_pref.store import DatasetError, PreferenceDataset
from envs.basalt import flatten_action
from envs.xmagical import env_id
from human_ui.annotators import add_annotator
from human_ui.config import UIConfig
from human_ui.server import serve
from policies.deploy.export import export_policy
from policies.deploy.serve import serve_policy
from policies.diffusion.policy import DiffusionPolicy
from policies.ppo import PPOAgent


def demo(config: Annotated[DemoConfig, tyro.conf.arg(name="")]) -> None:
    """Run the PbRL loop end to end on X-MAGICAL SweepToTop-Gripper (state) with a synthetic
    teacher, then compare PPO on the learned reward with PPO on the ground truth and a random
    policy. Writes runs/<name>/report.md and PNG plots.

    With --task crafter-achieve or crafter-thrift it runs on Crafter (state) instead and
    compares PPO on the learned reward with a random policy by the Crafter score and each
    achievement's success rate (report.md only). A short run:
    embodied-pref demo --task crafter-thrift --initial-episodes 8 --loop.iterations 2
    --loop.policy-steps-per-iteration 2048 --eval-episodes 4"""
    (run_crafter_demo if config.task in CRAFTER_TASKS else run_demo)(config)


def collect(
    dataset: Path,
    task: str = "xmagical-sweep",
    embodiment: str | None = None,
    episodes: int = 60,
    qualities: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9),
    violating_fraction: float = 0.0,
    clip_length: int = 50,
    clips_per_episode: int = 4,
    frames: bool = False,
    layout: str | None = None,
    seed: int = 0,
) -> None:
    """Record scripted episodes of a task into a dataset directory (created if missing) and
    cut them into clips; reproducible from the seed.

    Args:
        dataset: Dataset directory.
        task: xmagical-sweep, xmagical-avoid, xmagical-group, franka-group, franka-clutter,
            crafter-achieve or crafter-thrift.
        embodiment: X-MAGICAL: Gripper (default), Shortstick, Mediumstick or Longstick;
            Franka: Panda; Crafter: Player (the default of each suite).
        episodes: Number of episodes.
        qualities: Demonstrator qualities cycled over episodes (0 random ... 1 expert).
        violating_fraction: Share of episodes whose demonstrator is good at the task but
            violates the hidden preference (tasks other than xmagical-sweep).
        clip_length: Steps per clip.
        clips_per_episode: Clips cut at random starts from each episode.
        frames: Record RGB frames and write an H.264 mp4 preview of every clip (for labeling by people).
        layout: X-MAGICAL start layout: demo (one start state), random, or jitter (the demo
            layout with every block moved per seed); default: demo.
        seed: First episode seed; also seeds clip starts.
    """
    if not 0 <= violating_fraction <= 1:
        raise SystemExit(f"--violating-fraction: expected a share in [0, 1], found {violating_fraction}")
    spec = task_spec(task)  # a misspelt task fails before the dataset is created
    embodiment = spec.embodiments[0] if embodiment is None else embodiment
    store = PreferenceDataset.create(dataset, exist_ok=True)
    with store:
        cycle = [qualities[i % len(qualities)] for i in range(episodes)]
        violations = [i < round(violating_fraction * episodes) for i in range(episodes)]
        violations = list(np.random.default_rng(seed).permutation(violations))
        trajectories = scripted_episodes(task, embodiment, cycle, seed, violations=violations,
                                         record_frames=frames, progress=True,
                                         env_kwargs=None if layout is None else {"layout": layout})
        for trajectory in trajectories:
            store.add_trajectory(trajectory)
        # A Crafter player can die before a clip's length: its episode is kept, without clips.
        long_enough = [t for t in trajectories if t.length >= clip_length]
        clips = cut_clips(long_enough, clip_length, clips_per_episode, np.random.default_rng(seed))
        store.add_clips(clips)
        if frames:
            for clip in clips:
                store.write_preview(clip.id)
        if not store.instructions and spec.instructions:
            store.write_instructions(spec.instructions)
            print(f"{dataset / 'instructions.md'}: what people labeling {task} are told "
                  "(edit it; the labeling app shows it above the clips)")
        short = len(trajectories) - len(long_enough)
        print(f"{dataset}: +{len(trajectories)} trajectories, +{len(clips)} clips "
              f"({len(store.trajectory_ids())} trajectories, {len(store.clips())} clips in all)"
              + (f"; {short} episodes shorter than {clip_length} steps gave no clip" if short else ""))


def label(
    dataset: str,
    ui: bool = False,
    server: UIConfig = UIConfig(),
    teacher: str = "oracle",
    queries: int = 100,
    selection: str = "uniform",
    reward: Path | None = None,
    oversample: int = 10,
    seed: int = 0,
) -> None:
    """Label queries: with --ui, people label in the browser (the labeling app serves the
    dataset until Ctrl+C); otherwise a synthetic teacher labels every stored query without a
    label, then `queries` new pairs drawn from the dataset's clip pool.

    Args:
        dataset: Dataset directory (see `collect`; `collect --frames` writes the video previews),
            or its URL: sqlite:///DIR, or postgresql://USER@HOST/DB?files=DIR for labels in
            PostgreSQL with the arrays and previews in DIR.
        ui: Serve the labeling app (binds 127.0.0.1 unless --server.host says otherwise).
        server: Labeling app settings (--ui only).
        teacher: oracle, stoch, mistake, skip, equal or myopic (B-Pref teachers).
        queries: New pairs to select and label.
        selection: uniform, disagreement or entropy (the last two need --reward).
        reward: Reward ensemble checkpoint used by active selection.
        oversample: Candidates scored per selected pair.
        seed: Seeds the teacher and the selection.
    """
    if ui:
        serve(dataset, server)
        return

    with PreferenceDataset.open(dataset) as store:
        gatherer = TeacherGatherer(store, dataset_teacher(store, teacher, seed))
        gatherer.submit(store.unlabeled_queries())
        pending = len(gatherer.collect())
        ensemble = RewardEnsemble.load(reward) if reward is not None else None
        new = ask(store, gatherer, queries, selection, ensemble, round_index=0,
                  rng=np.random.default_rng(seed), oversample=oversample) if queries else 0
        print(f"{store.name}: labelled {pending} pending and {new} new queries with teacher {teacher!r} "
              f"({len(store.labels())} labels in all)")


def train_reward(
    dataset: Path,
    out: Path,
    net: RewardNetConfig = RewardNetConfig(),
    training: RewardTrainingConfig = RewardTrainingConfig(),
    annotator_model: Literal["none", "reliability"] = "none",
) -> None:
    """Fit a reward ensemble to every label in a dataset (pairs, and the pairs each triplet
    ranking implies); save it to `out`.

    Args:
        dataset: Dataset directory with labels.
        out: Checkpoint path to write (e.g. reward.pt).
        net: Reward network shape.
        training: Optimization settings.
        annotator_model: none takes every label at face value; reliability estimates each
            annotator's flip rate (how often their left/right answer is the opposite of the
            truth, from queries two people answered and from agreement with a first plain fit),
            refits with each label weighted by it and prints the estimates (one more fit).
    """

    with PreferenceDataset.open(dataset) as store:
        if annotator_model == "reliability":
            ensemble, val_accuracy, estimate = fit_reward_with_reliability(
                store, net, training, log_dir=out.parent / "tensorboard")
        else:
            ensemble, val_accuracy = fit_reward(store, net, training, log_dir=out.parent / "tensorboard")
            estimate = None
    if not is_main_process():  # under torchrun every rank holds the same weights; rank 0 reports
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    ensemble.save(out)
    print(f"{out}: reward ensemble of {net.ensemble_size}; validation preference accuracy {val_accuracy:.3f}")
    if estimate is not None:
        for a in estimate.annotators.values():
            rate = "no evidence" if a.flip_rate is None else (
                f"flip rate {a.flip_rate:.3f} (90% interval {a.interval[0]:.3f}-{a.interval[1]:.3f})")
            print(f"  {a.annotator or '(unnamed)'}: {a.n_labels} left/right answers, {rate}")


def train_rapl(
    dataset: Path,
    out: Path,
    config: Annotated[StoredRankingsConfig, tyro.conf.arg(name="")] = StoredRankingsConfig(),
) -> None:
    """Train RAPL's visual encoder on the triplet rankings people stored in a dataset (the
    labeling app's triplet mode: `label --ui --server.mode triplet`); save it to `out`.

    Example: `embodied-pref train-rapl --dataset runs/ds --out runs/rapl_encoder.pt`.
    The dataset must have frames (`collect --frames`). A share of the ranked queries is held
    out; the report (printed, last line JSON) gives the triplets used and held out, how many
    rank neutral = negative, and the held-out triplet accuracy before and after training. The
    backbone is frozen (random init by default: pass --encoder.pretrained or
    --encoder.encoder-weights for better features; `--encoder.backbone efficientnet_lite0
    --encoder.pretrained --encoder.pretrained-source package --encoder.imagenet-normalize`
    starts from ImageNet weights offline) and only the projection is trained, so
    the defaults run on a CPU: the backbone sees each kept frame once (~10 ms a 64-px frame
    on one core), then the projection trains in seconds. Reuse the saved encoder with
    `--encoder.encoder-weights OUT` (same backbone, pool grid and embedding dim).

    Args:
        dataset: Dataset directory with 3-clip queries ranked by people.
        out: Encoder state-dict file to write (e.g. rapl_encoder.pt).
        config: Frames, encoder, held-out share and optimization.
    """
    with PreferenceDataset.open(dataset) as store:
        report = train_on_stored_rankings(store, out, config)
    if not is_main_process():
        return
    print(f"{out}: RAPL encoder aligned on {report.train_triplets} ranked triplets ({report.equal_triplets} "
          f"with neutral = negative, train and held out); held-out triplet accuracy "
          f"{report.held_out_accuracy_before:.3f} -> {report.held_out_accuracy_after:.3f} "
          f"on {report.held_out_triplets} triplets")
    print(json.dumps({"encoder": str(out), **asdict(report)}))


def train_policy(config: Annotated[TrainPolicyConfig, tyro.conf.arg(name="")]) -> None:
    """Train or align a policy. Pick --algo and give what it needs:

    - ppo: --task (and --observation pixels for a CNN policy); --reward with --dataset trains
      on a learned reward (an ensemble from train-reward, or a RAPL encoder with
      --reward-kind rapl), no --reward on the ground truth.
    - diffusion-bc: --dataset with demonstrations (`collect --task T --qualities 1.0`), on the
      same --task; writes a diffusion policy directory to --out.
    - diffusion-rwr, dppo: --policy (a diffusion-bc output), --reward and --dataset (its
      clips standardize the reward, its trajectories anchor the policy by BC).
    - diffusion-dpo: --policy and a --dataset with preference labels (`label`).

    Example: embodied-pref collect --dataset runs/avoid --task xmagical-avoid --qualities 1.0
      then: embodied-pref train-policy --algo diffusion-bc --task xmagical-avoid --dataset runs/avoid --out runs/bc
    """
    print(run_train_policy(config))


def evaluate(
    agent: Path | None = None,
    policy: Path | None = None,
    reward: Path | None = None,
    dataset: Path | None = None,
    task: str = "xmagical-sweep",
    embodiment: str = "Gripper",
    layout: str | None = None,
    episodes: int = 10,
    seed: int = 2_000_000,
) -> None:
    """Score a policy on ground truth (--agent: PPO on SweepToTop; --policy: a diffusion
    policy on --task, next to the scripted expert on the same seeds) and/or a learned reward
    against the ground truth of a dataset's clips (--reward with --dataset).

    Example: embodied-pref eval --policy runs/bc --task xmagical-avoid --layout random --episodes 20

    Args:
        agent: PPO policy saved by train-policy.
        policy: Diffusion policy directory saved by train-policy (diffusion-bc/-rwr/-dpo, dppo).
        reward: Reward ensemble checkpoint.
        dataset: Dataset whose clips (with ground truth) score the reward.
        task: Task the --policy acts in (xmagical-sweep, xmagical-avoid, xmagical-group, franka-group, franka-clutter).
        embodiment: X-MAGICAL embodiment the policy acts in.
        layout: X-MAGICAL start layout for --policy: demo, random or jitter (default: the env's, demo).
        episodes: Evaluation episodes for the policy.
        seed: First evaluation episode seed.
    """
    if agent is None and policy is None and reward is None:
        raise SystemExit("nothing to evaluate: pass --agent, --policy and/or --reward")
    if policy is not None:
        try:
            print(json.dumps(evaluate_diffusion_policy(policy, task, embodiment, layout, episodes, seed)))
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"--policy: {err}") from None
    if agent is not None:

        ppo = PPOAgent(env_id(embodiment, "state"))
        ppo.load(agent)
        mean_return, score = evaluate_policy(ppo, embodiment, episodes, seed)
        print(json.dumps({"agent": str(agent), "gt_return": mean_return, "eval_score": score}))
    if reward is not None:
        if dataset is None:
            raise SystemExit("--dataset is required with --reward")

        with PreferenceDataset.open(dataset) as store:
            clips = clip_pool(store)
        print(json.dumps({"reward": str(reward), **asdict(evaluate_reward(RewardEnsemble.load(reward), clips))}))


def experiment(
    config: Annotated[
        Union[
            Annotated[RewardQualityConfig, tyro.conf.subcommand("reward-quality", prefix_name=False)],
            Annotated[LabelEfficiencyConfig, tyro.conf.subcommand("label-efficiency", prefix_name=False)],
            Annotated[ContinuousRegretConfig, tyro.conf.subcommand("continuous-regret", prefix_name=False)],
            Annotated[RegretExperimentConfig, tyro.conf.subcommand("regret", prefix_name=False)],
            Annotated[RaplExperimentConfig, tyro.conf.subcommand("rapl", prefix_name=False)],
            Annotated[AlignPolicyConfig, tyro.conf.subcommand("align-policy", prefix_name=False)],
            Annotated[AnnotatorReliabilityConfig, tyro.conf.subcommand("annotator-reliability", prefix_name=False)],
            Annotated[RobotWalkthroughConfig, tyro.conf.subcommand("robot-walkthrough", prefix_name=False)],
        ],
        tyro.conf.arg(name=""),
    ],
) -> None:
    """Run a named experiment; results (JSON, markdown table, PNG) go to its --out directory.

    Args:
        config: Which experiment, and its settings.
    """
    runners = {RewardQualityConfig: run_reward_quality, LabelEfficiencyConfig: run_label_efficiency,
               ContinuousRegretConfig: run_continuous_regret, RegretExperimentConfig: run_regret_experiment,
               RaplExperimentConfig: run_rapl_experiment, AlignPolicyConfig: run_align_policy,
               AnnotatorReliabilityConfig: run_annotator_reliability, RobotWalkthroughConfig: run_robot_walkthrough}
    if getattr(config, "quick", False):  # flags given beside --quick win over it, even at their default values
        config = config.resolved(flags_given(_command_line))
    runners[type(config)](config)


def import_vpt(
    recordings: Path,
    dataset: Path,
    config: Annotated[VPTImportConfig, tyro.conf.arg(name="")] = VPTImportConfig(),
) -> None:
    """Import OpenAI VPT recordings (MineRL BASALT's demonstrations: <name>.mp4 beside
    <name>.jsonl in one folder) into a dataset, created if missing. Each recording becomes a
    trajectory whose frames stay in its mp4 (copied into the dataset, decoded on demand at
    --size) and whose actions are MineRL's 24-d flat actions (22 buttons, camera pitch/yaw in
    degrees), cut into clips; label them with `label --ui`. Running it again imports only the
    recordings not stored yet.

    Args:
        recordings: Folder of <name>.mp4 + <name>.jsonl pairs.
        dataset: Dataset directory.
    """
    store = PreferenceDataset.create(dataset, exist_ok=True)
    with store:
        summary = import_recordings(recordings, store, flatten_action, config)
    print(f"{dataset}: {len(summary.trajectory_ids)} recordings stored, {summary.clips} clips cut, "
          f"{len(summary.already_stored)} stored before, {len(summary.skipped)} skipped")
    for name, error in summary.skipped.items():
        print(f"  skipped {name}: {error}")


def import_recordings_command(
    source: Path,
    dataset: Path,
    format: Format = "auto",
    cameras: tuple[str, ...] | None = None,
    fps: float | None = None,
    quality_labels: bool = False,
    config: Annotated[RecordingImportConfig, tyro.conf.arg(name="")] = RecordingImportConfig(),
) -> None:
    """Import robot recordings into a dataset (created if missing): a LeRobot v2.1/v3.0
    directory, a robomimic HDF5 file or a folder of mp4 files (each with an optional
    <name>.npz of actions/states/rewards). Every episode becomes a trajectory whose frames are
    --camera's (kept in their mp4, copied once into the dataset), cut into clips to label with
    `label --ui`. Running it again imports only the episodes not stored yet.

    Args:
        source: The recording (directory or .hdf5 file).
        dataset: Dataset directory.
        format: auto (from what SOURCE is), lerobot, robomimic or mp4.
        cameras: Cameras to read (default: all); --camera picks the one people compare.
        fps: Frame rate for formats that do not record one (robomimic; default 20).
        quality_labels: robomimic only: store its operator-quality masks (better > okay > worse)
            as labels, the better demonstration's clip preferred, annotator "robomimic-quality".
    """
    chosen, episodes = read_episodes(source, format, cameras, fps)
    with PreferenceDataset.create(dataset, exist_ok=True) as store:
        summary = import_episodes(episodes, store, chosen, config)
        labels = 0
        if quality_labels:
            if chosen != "robomimic":
                raise RobotDataError(f"{source}: field 'quality_labels': only robomimic files carry quality masks")
            from embodied_pref.recordings.robomimic import quality_preferences, robomimic_info

            pairs = [GradedPair(q.preferred, q.rejected, {"kind": "robomimic-quality", "file": str(source),
                                                          "better": q.preferred_mask, "worse": q.rejected_mask})
                     for q in quality_preferences(robomimic_info(source).masks)]
            labels = add_graded_labels(store, pairs, summary.trajectory_of, "robomimic-quality")
    print(f"{dataset}: {len(summary.stored)} {chosen} episodes stored, {summary.clips} clips cut, "
          f"{len(summary.already)} stored before" + (f", {labels} quality labels" if quality_labels else ""))


def export_recordings_command(dataset: Path, out: Path, format: Literal["lerobot", "robomimic"] = "lerobot") -> None:
    """Write a dataset's trajectories (e.g. a policy's rollouts) as a LeRobot v3.0 dataset
    directory or a robomimic HDF5 file; imported episodes come back as they were recorded.

    Args:
        dataset: Dataset directory.
        out: Directory (lerobot) or .hdf5 file (robomimic) to write.
        format: lerobot or robomimic.
    """
    with PreferenceDataset.open(dataset) as store:
        episodes = (from_trajectory(store.trajectory(i)) for i in store.trajectory_ids())
        print(write_episodes(episodes, out, format))


def align_offline_command(config: Annotated[AlignOfflineConfig, tyro.conf.arg(name="")]) -> None:
    """Align a pretrained diffusion policy with people's labels on recorded episodes, offline:
    a share of the episodes (and the labels on their clips) is held out, a reward is fit to the
    other labels, and the policy is fine-tuned on the other episodes (rwr: weighted by that
    reward; dpo: Diffusion-DPO on the labels). Writes <out>/policy (export it with
    `export-policy`), <out>/reward.pt and <out>/report.json, and prints the held-out report:
    the reward's accuracy on the held-out labels, and the pretrained vs the aligned policy's
    action and denoising errors on their preferred vs dispreferred clips."""
    print(report_markdown(align_offline(config).report))


def export_policy_command(policy: Path, out: Path, formats: tuple[Literal["torchscript", "onnx"], ...] = ("torchscript", "onnx")) -> None:
    """Export a diffusion policy (a directory written by `DiffusionPolicy.save`, such as the
    walkthrough's aligned/) for the robot's control computer: its observation encoder and
    denoiser as TorchScript and ONNX, each checked against PyTorch, with the normalization
    statistics, the DDIM schedule and checksums; run it with `serve-policy`.

    Args:
        policy: Policy directory (config.json + model.safetensors).
        out: Export directory to write (an earlier export there is replaced).
        formats: Formats to write.
    """
    print(export_policy(DiffusionPolicy.load(policy), out, formats))


def rank_agents_command(config: Annotated[AgentRankingConfig, tyro.conf.arg(name="")]) -> None:
    """Rank agents from their episode videos, BASALT-style: people compare two agents'
    episodes of the same task and seed in the labeling app and TrueSkill ranks the agents.
    Imports new episodes of --episodes (<task>/<agent>/<seed>.mp4) into <out-dir>/dataset
    (label it with `label --dataset <out-dir>/dataset --ui`: the queue asks the pairs with the
    largest expected decrease of σ₁² + σ₂²), rates every stored answer (and BEDD's, with
    --bedd-answers) and writes <out-dir>/leaderboard.{md,csv,png} and the answers as BEDD's
    updated_human_answers.json. Run it again after labeling to update the leaderboard."""
    result = rank_agents(config)
    print(leaderboard_markdown(result.leaderboard))
    for path in result.files.values():
        print(path)


def make_previews(dataset: Path, fps: float = 10.0, height: int | None = None) -> None:
    """Write the H.264 preview the labeling app shows of every clip that has none yet (clips
    of trajectories recorded with frames: `collect --frames`, imported videos).

    Args:
        dataset: Dataset directory.
        fps: Frames per second of the previews.
        height: Scale previews to this many pixels high (default: the recording's size).
    """
    with PreferenceDataset.open(dataset) as store:
        clips = [c for c in store.clips() if not store.preview_path(c.id).is_file()]
        framed = {t: store.trajectory_info(t)["has_frames"] for t in {c.trajectory_id for c in clips}}
        todo = [c for c in clips if framed[c.trajectory_id]]
        for clip in tqdm(todo, desc="previews", unit="clip"):
            store.write_preview(clip.id, fps=fps, height=height)
        print(f"{dataset}: wrote {len(todo)} previews")
        if len(todo) < len(clips):
            raise SystemExit(f"{dataset}: {len(clips) - len(todo)} clips come from trajectories "
                             "recorded without frames, so they cannot be shown to people; "
                             "record them again with `collect --frames`")


def annotators(
    action: tyro.conf.Positional[Literal["add", "list", "revoke"]],
    dataset: tyro.conf.Positional[Path],
    name: tyro.conf.Positional[str] = "",
    role: Literal["annotator", "owner"] = "annotator",
    server: UIConfig = UIConfig(),
) -> None:
    """Manage the people who label a dataset in the labeling app.

    `annotators add DATASET NAME [--role owner]` prints NAME's personal token and link (shown
    once; only its hash is stored): an annotator labels and undoes their own labels, an owner
    also exports every label and sees the agreement page. `annotators revoke DATASET NAME`
    invalidates a token (the labels stay); `annotators list DATASET` lists everyone.

    Args:
        action: add, list or revoke.
        dataset: Dataset directory.
        name: The annotator's name (add and revoke).
        role: annotator or owner (add only).
        server: Where the link points: --server.public-url (e.g. https://labels.example.org
            behind a reverse proxy), else --server.host and --server.port.
    """
    if action in ("add", "revoke") and not name.strip():
        raise SystemExit(f"annotators {action}: expected a NAME after the dataset")
    if action == "add":
        add_annotator(dataset, name, server, role)
        return
    with PreferenceDataset.open(dataset) as store:
        if action == "revoke":
            store.revoke_annotator(name)
            print(f"{dataset}: {name!r} can no longer label (their labels stay)")
            return
        records = store.annotator_records()
        for entry in records:
            state = "revoked" if entry["revoked_at"] is not None else "active"
            print(f"{entry['name']}\t{entry['role']}\t{state}")
        if not records:
            print(f"{dataset}: no annotators yet")


def env_grid(out: Path = Path("docs/images/env_grid.png"), seed: int = 0) -> None:
    """Render the first, middle and last frame of an expert episode of every task and
    embodiment into one PNG grid.

    Args:
        out: PNG path to write.
        seed: Episode seed.
    """
    print(render_env_grid(out, seed))


COMMANDS = {
    "demo": demo,
    "collect": collect,
    "label": label,
    "train-reward": train_reward,
    "train-rapl": train_rapl,
    "train-policy": train_policy,
    "eval": evaluate,
    "make-previews": make_previews,
    "annotators": annotators,
    "import-vpt": import_vpt,
    "import-recordings": import_recordings_command,
    "export-recordings": export_recordings_command,
    "align-offline": align_offline_command,
    "export-policy": export_policy_command,
    "serve-policy": serve_policy,
    "rank-agents": rank_agents_command,
    "experiment": experiment,
    "env-grid": env_grid,
}


_command_line: list[str] = []
"""The arguments `main` parses (a subcommand asks which flags were given)."""


def main(args: list[str] | None = None) -> None:
    # Every network these commands train is a small MLP: on CPU one thread beats several
    # contending with the simulator for the same cores.
    torch.set_num_threads(1)
    _command_line[:] = sys.argv[1:] if args is None else args
    try:
        tyro.extras.subcommand_cli_from_dict(COMMANDS, prog="embodied-pref", args=args,
                                             description="Learn rewards from preferences over trajectory clips.")
    # A missing dataset, a bad recording, a demo that will not start: the message says it all.
    except (DatasetError, RobotDataError, RunRefused) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":  # `torchrun -m embodied_pref.cli ...`, `python -m embodied_pref.cli ...`
    main()
