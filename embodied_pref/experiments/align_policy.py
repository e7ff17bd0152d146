"""Aligning a pretrained diffusion policy with a hidden preference: BC on demonstrations
that mix preferred and dispreferred behaviour, then alignment (i) on the reward the loop
learns from synthetic preference labels (reward-weighted regression, DPPO) and (ii) on the
labels directly (Diffusion-DPO). Per task, method and seed: task success, the share of
episodes that violate the preference, ground-truth and learned return, labels used and wall
time, on randomized start states; a bar plot, a learned-vs-true return plot per fine-tuning
run (a policy that games the learned reward shows as a rising learned and a falling true
return), results.json and table.md.

Under `torchrun` every rank trains (the trainers average gradients) and only rank 0
evaluates and writes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import gymnasium
import numpy as np
import torch

from embodied_pref.data import Clip
from embodied_pref.distributed import distributed_context
from embodied_pref.evaluation import cross_accuracy, evaluate_reward
from embodied_pref.experiments.presets import with_preset
from embodied_pref.experiments.results import mean_std, save_results
from embodied_pref.experiments.reward_quality import XMAGICAL_REWARD_NET
from embodied_pref.experiments.tasks import episode_outcomes, scripted_episodes, task_spec
from embodied_pref.gathering import TeacherGatherer, dataset_teacher
from embodied_pref.loop import LoopConfig, ask_in_rounds, fit_reward, standardized_on_pool
from embodied_pref.plots import plot_grouped_bars, plot_learned_vs_true
from embodied_pref.query_selection import METHODS as SELECTION_METHODS
from embodied_pref.reward_nets import PessimisticReward, RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig
from embodied_pref.segments import clip_pool, cut_clips, labelled_pairs, stack_segments
from embodied_pref.store import PreferenceDataset
from policies.diffusion.bc import BCConfig, StatePolicyConfig, pretrain_state_policy
from policies.diffusion.dpo import DPOConfig, train_dpo
from policies.diffusion.dppo import DPPOConfig, acting_sampler, train_dppo
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import rollout_returns, run_episodes
from policies.diffusion.rwr import RWRConfig, train_rwr
from policies.diffusion.training import TrainerConfig

METHODS = ("pretrained", "rwr", "dpo", "dppo")
EMBODIMENT = {"xmagical-avoid": "Gripper", "xmagical-group": "Gripper", "franka-group": "Panda",
              "franka-clutter": "Panda"}
# X-MAGICAL's "jitter" layout moves every block per seed and keeps the avoid zone on the
# middle block's path; Franka draws block and goal positions per seed anyway.
ENV_KWARGS = {"xmagical-avoid": {"layout": "jitter"}, "xmagical-group": {"layout": "jitter"}}
# Scripted qualities of the labelled and the held-out episodes (1.0: the expert).
EPISODE_QUALITIES = (0.3, 0.6, 0.9, 1.0)


@dataclass(frozen=True)
class AlignPolicyConfig:
    """The align-policy experiment. Defaults: the full preset, sized for one GPU."""

    tasks: tuple[str, ...] = ("xmagical-avoid", "franka-group")
    """Tasks with a hidden preference (see `collect --task`)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Alignment seeds (labels, reward, fine-tuning, evaluation episodes); the pretrained
    policy is trained once per task with --bc.seed and aligned by every seed."""
    methods: tuple[str, ...] = METHODS
    """pretrained (BC only), rwr, dpo, dppo; none (`--methods` alone) learns and scores the
    reward only, without BC."""
    quick: bool = False
    """CPU preset: tiny UNet, fewer demonstrations, steps and episodes (about 42 minutes on 2 cores).
    It fills the fields left at their defaults: a flag given beside it wins."""
    demonstrations: int = 200
    """Expert demonstrations for BC; `violating_share` of them go against the preference."""
    violating_share: float = 0.5
    """Share of demonstrations that violate the preference."""
    policy: StatePolicyConfig = StatePolicyConfig(n_action_steps=2, noise_scale=0.0)
    """The policy: UNet preset; 2 actions executed per chunk and deterministic sampling, since
    the scripted experts are deterministic feedback controllers (X-MAGICAL runs at 8 Hz)."""
    bc: BCConfig = field(default_factory=lambda: BCConfig(
        steps=20_000, eval_every=2_000, progress=False,
        trainer=TrainerConfig(learning_rate=1e-4, batch_size=256)))
    """BC pretraining."""
    preference_episodes: int = 40
    """Episodes (mixed quality, 30% violating) whose clips are labelled."""
    labels: int = 500
    """Oracle labels on distinct clip pairs, asked in rounds as the loop asks them."""
    labels_per_round: int = 100
    """Queries per round: uniform first, then chosen by `selection` on the reward fitted so far."""
    selection: str = LoopConfig.selection
    """Query selection after the first round: uniform | disagreement | entropy."""
    clip_length: int = 50
    """Steps per labelled clip."""
    clips_per_episode: int = 8
    """Clips cut at random starts from each labelled episode (1 with whole-episode clips)."""
    episode_labels: int = 0
    """Further labels on pairs of whole labelled episodes, asked in their own rounds after the
    clip labels: they pin how much the preference costs against task progress, which labels on
    clips of `clip_length` steps leave loose (0: clip labels only)."""
    reward_net: RewardNetConfig = XMAGICAL_REWARD_NET
    """The state reward the loop learns (s' only)."""
    reward_training: RewardTrainingConfig = field(
        default_factory=lambda: RewardTrainingConfig(max_epochs=200, progress=False))
    """Fitting the reward ensemble, in every round and at the end (each seed seeds its own);
    `validation_fraction` 0 trains on every label until the training loss stops falling."""
    pessimism: float = 0.0
    """k of the pessimistic reward (ensemble mean − k·std) given to RWR and DPPO."""
    rwr: RWRConfig = field(default_factory=lambda: RWRConfig(rounds=8, episodes_per_round=32, progress=False))
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(steps=2_000, progress=False))
    dppo: DPPOConfig = field(default_factory=lambda: DPPOConfig(iterations=20, episodes_per_iteration=32, progress=False))
    eval_episodes: int = 20
    """Evaluation episodes per policy (seeds no training episode uses)."""
    held_out_episodes: int = 100
    """Held-out episodes whose clips score the reward (`reward_accuracy`, `reward_spearman`):
    qualities 0.3, 0.6, 0.9, 1.0 in turn, each keeping and breaking the preference in turn.
    Their four clips overlap, so a few dozen episodes leave the accuracy a few points loose."""
    expert_episodes: int = 20
    """Held-out expert episodes, half told to violate the preference, on which the reward's
    ordering of the two behaviours is scored (`reward_expert_accuracy`)."""
    workers: int = 2
    """Tasks run in parallel processes (1 thread each); 1 runs them in this process."""
    device: str = "auto"
    """Trainer device (auto: CUDA when available)."""
    out: Path = Path("runs/experiments/align_policy")
    """Directory for results.json, table.md and the plots."""

    def resolved(self, given: Collection[str] = ()) -> "AlignPolicyConfig":
        """With --quick, the CPU preset; flags given beside --quick (and those named in `given`,
        see `with_preset`) win over it."""
        if not self.quick:
            return self
        device = {"trainer": {"device": self.device}}
        return with_preset(replace(self, quick=False), {
            "demonstrations": 100, "policy": {"unet": "tiny"}, "labels": 300, "eval_episodes": 20,
            "bc": {"steps": 8_000, "eval_every": 2_000,
                   "trainer": {"learning_rate": 1e-3, "warmup_steps": 100, "batch_size": 128, "device": self.device}},
            "rwr": {"rounds": 3, "episodes_per_round": 16, "updates_per_round": 100, **device},
            "dpo": {"steps": 300, **device},
            "dppo": {"iterations": 3, "episodes_per_iteration": 16, **device},
        }, given)


def _policy_outcomes(task: str, episodes, reward_fn) -> dict[str, float]:
    return {**episode_outcomes(task, episodes), **rollout_returns(reward_fn, episodes)}


def _labelled_datasets(task: str, seed: int, config: AlignPolicyConfig, run: Path,
                       training: RewardTrainingConfig) -> list[PreferenceDataset]:
    """The loop's first stage: mixed episodes, stored whole with their clips in one dataset per
    clip length (`clip_length`-step clips; whole episodes too with `episode_labels`), then
    oracle labels asked round by round in each (a rerun resumes at the round it was in)."""
    stages = [(run / "labels", config.labels, False)]
    if config.episode_labels:
        stages.append((run / "episode_labels", config.episode_labels, True))
    datasets: list[PreferenceDataset] = []
    try:
        episodes = None
        for directory, n_labels, whole_episodes in stages:
            if not directory.exists():
                if episodes is None:
                    episodes, rng = _preference_episodes(task, seed, config)
                clips = ([Clip(e.id, 0, e.length) for e in episodes] if whole_episodes
                         else cut_clips(episodes, config.clip_length, config.clips_per_episode, rng))
                partial = directory.with_name(directory.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                with PreferenceDataset.create(partial, description=f"align-policy {directory.name}, {task}, seed {seed}") as dataset:
                    for episode in episodes:
                        dataset.add_trajectory(episode)
                    dataset.add_clips(clips)
                os.replace(partial, directory)
            datasets.append(PreferenceDataset.open(directory))
            ask_in_rounds(datasets[-1], TeacherGatherer(datasets[-1], dataset_teacher(datasets[-1], "oracle", seed)),
                          n_labels, config.labels_per_round, config.selection, config.reward_net, training, seed)
    except BaseException:
        for dataset in datasets:
            dataset.close()
        raise
    return datasets


def _preference_episodes(task: str, seed: int, config: AlignPolicyConfig):
    """(episodes of mixed quality, 30% of them told to violate; the generator that cuts their clips)."""
    rng = np.random.default_rng([seed, 1])
    n = config.preference_episodes
    episodes = scripted_episodes(task, EMBODIMENT[task], list(rng.choice(EPISODE_QUALITIES, n)),
                                 seed * 100_000 + 50_000, violations=list(rng.uniform(size=n) < 0.3),
                                 env_kwargs=ENV_KWARGS.get(task, {}))
    return episodes, rng


def run_task_seed(task: str, seed: int, config: AlignPolicyConfig) -> list[dict]:
    """Every method on one task and seed; returns one row per method."""
    torch.set_num_threads(1)
    ctx = distributed_context(config.device)
    run = config.out / task / f"seed{seed}"
    spec, embodiment, env_kwargs = task_spec(task), EMBODIMENT[task], ENV_KWARGS.get(task, {})
    env_id = spec.env_id(embodiment, "state")

    def make_env():
        return gymnasium.make(env_id, **env_kwargs)

    start = time.monotonic()
    if config.methods:
        demos = _demonstrations(task, config)
        pretrained = _pretrained(task, config, demos)
    bc_time = time.monotonic() - start

    training = replace(config.reward_training, seed=seed)
    with ExitStack() as stack:
        datasets = [stack.enter_context(d) for d in _labelled_datasets(task, seed, config, run, training)]
        ensemble, _ = fit_reward(datasets, config.reward_net, training)
        pool = clip_pool(datasets[0])
        reward_fn = standardized_on_pool(ensemble.predict, pool)
        tuned_reward = reward_fn if config.pessimism == 0 else standardized_on_pool(
            PessimisticReward(ensemble, config.pessimism), pool)
        pairs = [labelled_pairs(d) for d in datasets]
        labels = sum(len(d.labels()) for d in datasets)
    kinds = len(EPISODE_QUALITIES)  # every quality in turn, the whole cycle keeping then breaking
    held_out = scripted_episodes(task, embodiment, [EPISODE_QUALITIES[i % kinds] for i in range(config.held_out_episodes)],
                                 seed * 100_000 + 80_000, env_kwargs=env_kwargs,
                                 violations=[i // kinds % 2 == 1 for i in range(config.held_out_episodes)])
    reward_eval = evaluate_reward(ensemble, stack_segments(list(_clips(held_out, config.clip_length))), seed=seed)
    expert_accuracy = _expert_accuracy(ensemble, task, seed, config)

    rows = []
    reward_metrics = {"reward_accuracy": reward_eval.accuracy, "reward_spearman": reward_eval.spearman,
                      "reward_expert_accuracy": expert_accuracy}
    if not config.methods:
        rows.append({"task": task, "seed": seed, "method": "reward", "labels": labels, **reward_metrics})
    eval_seeds = [seed * 100_000 + 90_000 + i for i in range(config.eval_episodes)]

    def evaluate(method: str, policy, seconds: float, used: int, curve: list[dict] | None = None) -> None:
        episodes = run_episodes(make_env, eval_seeds, policy.config, acting_sampler(policy, seed))
        rows.append({"task": task, "seed": seed, "method": method, "labels": used, "wall_s": seconds,
                     **reward_metrics, **_policy_outcomes(task, episodes, reward_fn), "curve": curve or []})

    if "pretrained" in config.methods:
        evaluate("pretrained", pretrained, bc_time, 0)

    def on_round(_, policy, episodes) -> dict:
        return episode_outcomes(task, episodes)

    if "rwr" in config.methods:
        t0 = time.monotonic()
        policy, log = train_rwr(pretrained, tuned_reward, make_env, demos, run / "rwr", replace(config.rwr, seed=seed),
                                first_seed=seed * 100_000 + 60_000, on_round=on_round)
        evaluate("rwr", policy, time.monotonic() - t0, labels, log)
    if "dpo" in config.methods:
        t0 = time.monotonic()
        policy, log = train_dpo(pretrained, pairs, run / "dpo", replace(config.dpo, seed=seed))
        evaluate("dpo", policy, time.monotonic() - t0, labels, log)
    if "dppo" in config.methods:
        t0 = time.monotonic()
        policy, log = train_dppo(pretrained, tuned_reward, make_env, run / "dppo", replace(config.dppo, seed=seed),
                                 first_seed=seed * 100_000 + 70_000, on_iteration=on_round)
        evaluate("dppo", policy, time.monotonic() - t0, labels, log)
    return rows if ctx.is_main else []


def _demonstrations(task: str, config: AlignPolicyConfig):
    """The BC demonstrations of a task: experts, `violating_share` of them against the preference."""
    n = config.demonstrations
    violating = list(np.random.default_rng(config.bc.seed).permutation([i < round(config.violating_share * n) for i in range(n)]))
    return scripted_episodes(task, EMBODIMENT[task], [1.0] * n, config.bc.seed * 100_000, violations=violating,
                             env_kwargs=ENV_KWARGS.get(task, {}))


def _pretrained(task: str, config: AlignPolicyConfig, demos) -> DiffusionPolicy:
    """The pretrained policy every seed aligns: BC with the BC seed, trained once per task
    (a later seed, or a rerun, loads it from <out>/<task>/bc/policy)."""
    run = config.out / task / "bc"
    if (run / "policy" / "config.json").exists():
        return DiffusionPolicy.load(run / "policy")
    policy, _ = pretrain_state_policy(demos, run, config.bc, config.policy)
    return policy


def _expert_accuracy(ensemble, task: str, seed: int, config: AlignPolicyConfig) -> float:
    """The reward's accuracy on the choice the pretrained policy makes: every pair of one
    held-out expert episode that keeps the preference and one that breaks it (whole
    episodes), against the ground-truth order; nan if either behaviour is missing."""
    spec, n = task_spec(task), config.expert_episodes
    experts = scripted_episodes(task, EMBODIMENT[task], [1.0] * n, seed * 100_000 + 85_000,
                                violations=[i % 2 == 1 for i in range(n)], env_kwargs=ENV_KWARGS.get(task, {}))
    groups = [[e.segment(0, e.length) for e in experts if spec.violates(e) == breaks] for breaks in (False, True)]
    if not all(groups):
        return float("nan")
    return cross_accuracy(ensemble, stack_segments(groups[0]), stack_segments(groups[1]))


def _clips(episodes, length: int):
    """Four clips of `length` steps from each episode, at evenly spaced starts."""
    for episode in episodes:
        for start in np.linspace(0, len(episode.actions) - length, 4).astype(int):
            yield episode.segment(int(start), length)


def _run_task(args) -> list[dict]:
    task, config = args
    return [row for seed in config.seeds for row in run_task_seed(task, seed, config)]


def run_align_policy(config: AlignPolicyConfig) -> dict:
    """Runs every task (in parallel worker processes) and seed; writes the results."""
    config = config.resolved()
    for task in config.tasks:
        task_spec(task)
        if task not in EMBODIMENT:
            raise ValueError(f"tasks: {task!r} has no hidden preference to align with")
    unknown = set(config.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods: expected some of {METHODS}, found {sorted(unknown)}")
    if config.selection not in SELECTION_METHODS:
        raise ValueError(f"selection: expected one of {SELECTION_METHODS}, found {config.selection!r}")
    if config.held_out_episodes < 2:
        raise ValueError(f"held_out_episodes: expected >= 2 (clip pairs to score), found {config.held_out_episodes}")
    start = time.monotonic()
    jobs = [(task, config) for task in config.tasks]
    if config.workers > 1 and len(jobs) > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        with ProcessPoolExecutor(min(config.workers, len(jobs))) as pool:
            rows = [row for result in pool.map(_run_task, jobs) for row in result]
    else:
        rows = [row for job in jobs for row in _run_task(job)]
    if not distributed_context(config.device).is_main:
        return {}
    table = ["| task | method | success | violation rate | GT return | labels | wall s | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"] if config.methods else []
    for task in config.tasks:
        for method in config.methods:
            got = [r for r in rows if r["task"] == task and r["method"] == method]
            table.append(f"| {task} | {method} | {mean_std([r['success'] for r in got])} | "
                         f"{mean_std([r['violation_rate'] for r in got])} | {mean_std([r['gt_return'] for r in got])} | "
                         f"{got[0]['labels']} | {np.mean([r['wall_s'] for r in got]):.0f} | {len(got)} |")
    def reward_metric(task: str, key: str) -> str:
        per_seed = {r["seed"]: r[key] for r in rows if r["task"] == task}  # every method of a seed has the same
        return f"{mean_std(list(per_seed.values()))} ({' / '.join(f'{v:.3f}' for v in per_seed.values())})"

    reward_lines = [f"Reward learned by the loop on {task}: held-out accuracy {reward_metric(task, 'reward_accuracy')}, "
                    f"Spearman {reward_metric(task, 'reward_spearman')}, on expert episodes that keep vs break "
                    f"the preference {reward_metric(task, 'reward_expert_accuracy')}"
                    for task in config.tasks]
    table += ["", *reward_lines, "", f"Wall time: {time.monotonic() - start:.0f} s"]
    config.out.mkdir(parents=True, exist_ok=True)
    if config.methods:
        plot_alignment(rows, config, config.out / "align_policy.png")
        plot_overoptimization(rows, config, config.out / "learned_vs_true_return.png")
    return save_results(config.out, config, rows, table)


def plot_alignment(rows: list[dict], config: AlignPolicyConfig, path: Path) -> None:
    """Success, violation rate and ground-truth return per task and method."""
    metrics = ("success", "violation_rate", "gt_return")
    series = {m: {f"{r['task']}/{r['method']}": [x[m] for x in rows if x["task"] == r["task"] and x["method"] == r["method"]]
                  for r in rows} for m in metrics}
    plot_grouped_bars(list(config.tasks), series, path, title="aligning a pretrained diffusion policy", panels=metrics)


def plot_overoptimization(rows: list[dict], config: AlignPolicyConfig, path: Path) -> None:
    """Learned vs ground-truth return of the fine-tuning rollouts, per task and method."""
    runs = {f"{task} {method}": [[(c["learned_return"], c["gt_return"]) for c in r["curve"]]
                                 for r in rows if r["task"] == task and r["method"] == method]
            for task in config.tasks for method in ("rwr", "dppo") if method in config.methods}
    if runs:
        plot_learned_vs_true(runs, path, title="learned vs ground-truth return while fine-tuning")
