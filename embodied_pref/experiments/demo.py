"""The end-to-end demo: the PbRL loop on X-MAGICAL SweepToTop (state), synthetic teacher,
PPO on the learned reward, compared with PPO on the ground truth and a random policy (its
Crafter form is `crafter_demo`)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import gymnasium
import numpy as np

from embodied_pref.evaluation import evaluate_reward, predicted_returns
from embodied_pref.experiments.continuous_regret import (
    ADVANTAGE_NET,
    ExpertValueConfig,
    expert_value_function,
    regret_pairs,
)
from embodied_pref.experiments.reward_quality import XMAGICAL_REWARD_NET
from embodied_pref.experiments.xmagical_data import MIXED_QUALITIES, mixed_quality_clips, scripted_episodes
from embodied_pref.gathering import TeacherGatherer, scaled_teacher
from embodied_pref.loop import IterationRecord, LoopConfig, run_pbrl_loop, standardized_on_pool
from embodied_pref.metrics import epic_distance, preference_accuracy
from embodied_pref.plots import plot_curves, plot_scatter
from embodied_pref.query_selection import random_pairs
from embodied_pref.regret_teacher import RegretTeacher
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.reward_training import RewardTrainingConfig, preference_probabilities
from embodied_pref.rollout import rollout
from embodied_pref.segments import SegmentBatch, clip_pool
from embodied_pref.store import PreferenceDataset
from envs.xmagical import env_id, state_reward
from embodied_pref.experiments.tasks import task_spec
from policies.diffusion.agent import DiffusionAgent, DiffusionAgentConfig
from policies.diffusion.bc import BCConfig, StatePolicyConfig, pretrain_state_policy
from policies.diffusion.rwr import RWRConfig
from policies.diffusion.training import TrainerConfig
from policies.greedy_advantage import GreedyAdvantageAgent
from policies.ppo import PPOAgent, PPOConfig


@dataclass(frozen=True)
class DiffusionDemoConfig:
    """The diffusion policy of `demo --policy diffusion`."""

    demonstrations: int = 30
    """BC demonstrations, of the qualities below cycled (a mediocre start the loop improves on)."""
    qualities: tuple[float, ...] = (0.6, 0.8, 1.0)
    """Scripted-demonstrator qualities of the demonstrations."""
    policy: StatePolicyConfig = StatePolicyConfig(unet="tiny")
    """The policy: UNet preset, executed actions per chunk, noise scale."""
    bc: BCConfig = field(default_factory=lambda: BCConfig(
        steps=2_000, eval_every=1_000, progress=False,
        trainer=TrainerConfig(learning_rate=1e-3, warmup_steps=100, batch_size=64)))
    """BC pretraining."""
    agent: DiffusionAgentConfig = field(default_factory=lambda: DiffusionAgentConfig(
        rwr=RWRConfig(episodes_per_round=16, updates_per_round=100, progress=False)))
    """Fine-tuning in each round: rwr (advantage-weighted with --preference-model regret) or dppo."""
    steps_per_iteration: int = 3_200
    """Rollout steps of fine-tuning per round (replaces --loop.policy-steps-per-iteration)."""


@dataclass(frozen=True)
class DemoConfig:
    """The demo run; the defaults take about 5 minutes on two CPU cores."""

    name: str = "demo"
    """Run name: outputs go to <runs-dir>/<name>/."""
    task: str = "xmagical-sweep"
    """xmagical-sweep (SweepToTop), or crafter-achieve / crafter-thrift (Crafter, state
    observations, embodiment Player; partial-return preferences and PPO only, compared with a
    random policy, no ground-truth PPO baseline)."""
    runs_dir: Path = Path("runs")
    """Parent directory of runs."""
    embodiment: str = "Gripper"
    """X-MAGICAL SweepToTop embodiment."""
    teacher: str = "oracle"
    """B-Pref teacher for --preference-model partial-return: oracle, stoch, mistake, skip, equal, myopic."""
    preference_model: str = "partial-return"
    """partial-return: a B-Pref teacher labels, a reward r(s') is learned and PPO trains on it.
    regret: a regret teacher labels (V* estimated by the scripted expert's Monte-Carlo returns),
    an advantage Â(s, a) is learned and the policy acts greedily on it."""
    initial_episodes: int = 24
    """Scripted episodes of mixed quality seeding the clip pool."""
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(iterations=4, labels_per_iteration=40, policy_steps_per_iteration=32_768)
    )
    value: ExpertValueConfig = ExpertValueConfig()
    """V̂ of the regret teacher (--preference-model regret only)."""
    policy: str = "ppo"
    """ppo: PPO on the learned reward (greedy on Â with --preference-model regret). diffusion:
    a diffusion policy pretrained by BC, fine-tuned every round by reward-weighted regression
    (advantage-weighted on Â with --preference-model regret) or DPPO (--diffusion.agent.algorithm)."""
    diffusion: DiffusionDemoConfig = DiffusionDemoConfig()
    """The diffusion policy (--policy diffusion only)."""
    ppo: PPOConfig = PPOConfig(normalize_reward=True)
    """PPO settings, for the agent on the learned reward and the ground-truth baseline alike.
    normalize_reward: the pool-standardized reward (unit std per step) gives discounted returns
    of std ~40 on SweepToTop; scaled to unit return std, no seed of 0-2 ends at the random
    policy's return any more (bench/pbrl_vs_imitation.py)."""
    reward_training: RewardTrainingConfig = RewardTrainingConfig(max_epochs=100, progress=False)
    """Reward ensemble fitting in every round (its seed is replaced by --seed)."""
    eval_episodes: int = 10
    """Ground-truth evaluation episodes per policy."""
    resume: bool = False
    """Continue an interrupted run of the same name instead of refusing to overwrite it."""
    seed: int = 0
    """Seeds episodes, the teacher, the loop and reward fitting."""


class Actor(Protocol):
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray: ...


def evaluate_policy(agent_or_none: Actor | DiffusionAgent | None, embodiment: str, episodes: int, seed: int
                    ) -> tuple[float, float]:
    """Mean ground-truth return and mean final eval score; `None` is the uniform random policy."""
    if isinstance(agent_or_none, DiffusionAgent):
        episodes_ = agent_or_none.rollouts(episodes, seed)
        return float(np.mean([t.rewards.sum() for t in episodes_])), float(np.mean([t.metadata["eval_score"] for t in episodes_]))
    env = gymnasium.make(env_id(embodiment, "state"))
    env.action_space.seed(seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        if agent_or_none is None:
            return env.action_space.sample()
        return agent_or_none.act(obs, deterministic=True)

    try:
        episodes_ = [rollout(env, policy, seed + i) for i in range(episodes)]
        returns = [float(t.rewards.sum()) for t in episodes_]
        scores = [float(t.metadata["eval_score"]) for t in episodes_]
        return float(np.mean(returns)), float(np.mean(scores))
    finally:
        env.close()


def held_out_epic(ensemble: RewardEnsemble, clips: SegmentBatch, seed: int, n: int = 500) -> float:
    """EPIC distance between the learned and the true reward on `n` held-out transitions;
    the same transitions' states and actions serve as the coverage distribution."""
    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).numpy() for t in clips.tensors())
    pick = np.random.default_rng(seed).choice(len(obs), size=min(n, len(obs)), replace=False)
    return epic_distance(
        ensemble.predict, lambda o, a, next_o: state_reward(next_o),
        transitions=(obs[pick], acts[pick], next_obs[pick]),
        state_samples=obs[pick], action_samples=acts[pick], gamma=0.99, n_mean_samples=128, seed=seed,
    )


PREFERENCE_MODELS = ("partial-return", "regret")
POLICIES = ("ppo", "diffusion")


def pretrained_diffusion_agent(config: DemoConfig, run_dir: Path, advantage: bool) -> DiffusionAgent:
    """A diffusion policy BC-pretrained on scripted demonstrations (cached in run_dir/bc)."""
    d = config.diffusion
    qualities = [d.qualities[i % len(d.qualities)] for i in range(d.demonstrations)]
    demos = scripted_episodes(config.embodiment, qualities, config.seed * 100_000 + 70_000)
    state_env = env_id(config.embodiment, "state")
    print(f"[demo] BC pretraining of the diffusion policy on {len(demos)} demonstrations")
    pretrained, _ = pretrain_state_policy(demos, run_dir / "bc", replace(d.bc, seed=config.seed), d.policy)
    agent_config = d.agent
    if advantage:
        agent_config = replace(agent_config, rwr=replace(agent_config.rwr, score="advantage"))
    return DiffusionAgent(state_env, pretrained, demos, run_dir / "finetune", agent_config)


def held_out_clips(config: DemoConfig) -> SegmentBatch:
    """The clips the demo scores its learned reward on: 8 from each of 16 mixed-quality
    episodes whose seeds no labelled episode uses."""
    return mixed_quality_clips(config.embodiment, 16, config.seed * 100_000 + 90_000, config.loop.clip_length, 8,
                               np.random.default_rng(config.seed))


class RunRefused(RuntimeError):
    """The demo will not start as asked; the message says why and what to pass instead."""


def open_run(config: DemoConfig, description: str) -> tuple[Path, PreferenceDataset]:
    """The run directory and its dataset: created, or reopened with --resume."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RunRefused("the demo runs the PbRL loop, whose dataset one process writes: run it without torchrun "
                           f"(WORLD_SIZE is {os.environ['WORLD_SIZE']})")
    run_dir = config.runs_dir / config.name
    dataset_dir = run_dir / "dataset"
    if dataset_dir.exists() and not config.resume:
        raise RunRefused(f"{run_dir}: exists; pass --resume to continue it or choose another --name")
    dataset = (PreferenceDataset.open(dataset_dir) if dataset_dir.exists()
               else PreferenceDataset.create(dataset_dir, description=description))
    return run_dir, dataset


def run_demo(config: DemoConfig) -> dict:
    if config.task != "xmagical-sweep":
        raise ValueError(f"--task: expected xmagical-sweep (Crafter tasks run through run_crafter_demo), "
                         f"found {config.task!r}")
    if config.preference_model not in PREFERENCE_MODELS:
        raise ValueError(f"--preference-model: expected one of {PREFERENCE_MODELS}, found {config.preference_model!r}")
    if config.policy not in POLICIES:
        raise ValueError(f"--policy: expected one of {POLICIES}, found {config.policy!r}")
    start = time.monotonic()
    run_dir, dataset = open_run(config, f"demo on SweepToTop-{config.embodiment}")
    state_env = env_id(config.embodiment, "state")
    print(f"[demo] run directory: {run_dir}")

    qualities = [MIXED_QUALITIES[i % len(MIXED_QUALITIES)] for i in range(config.initial_episodes)]
    initial = scripted_episodes(config.embodiment, qualities, config.seed * 100_000, progress=True)

    def report(record: IterationRecord) -> None:
        print(f"[demo] iteration {record.iteration}: {record.labels} labels, reward val acc "
              f"{record.reward_validation_accuracy:.3f}, policy GT return {record.policy_gt_return:.2f}, "
              f"success {or_dash(record.policy_success)}, violation rate {or_dash(record.policy_violation_rate)} "
              f"({time.monotonic() - start:.0f}s)")

    if config.preference_model == "regret":
        print(f"[demo] estimating V* by expert Monte-Carlo returns for the regret teacher ({time.monotonic() - start:.0f}s)")
        value = expert_value_function(config.embodiment, config.value, config.seed, progress=True)
        teacher = RegretTeacher(value, seed=config.seed)
        agent = GreedyAdvantageAgent(state_env, run_dir / "reward.pt")
        learner = ADVANTAGE_NET
    else:
        teacher = scaled_teacher(config.teacher, initial, config.loop.clip_length, config.seed)
        agent = PPOAgent(state_env, config.ppo, log_dir=run_dir / "tensorboard")
        learner = XMAGICAL_REWARD_NET
    loop_config = config.loop
    if config.policy == "diffusion":
        agent = pretrained_diffusion_agent(config, run_dir, advantage=config.preference_model == "regret")
        loop_config = replace(loop_config, policy_steps_per_iteration=config.diffusion.steps_per_iteration)
    records = run_pbrl_loop(
        dataset, agent, TeacherGatherer(dataset, teacher), run_dir, lambda: initial, loop_config,
        learner, replace(config.reward_training, seed=config.seed), on_iteration=report,
        violates=task_spec("xmagical-sweep").violates,
    )

    ensemble = RewardEnsemble.load(run_dir / "reward.pt")
    held_out = held_out_clips(config)
    reward_eval = evaluate_reward(ensemble, held_out, seed=config.seed)
    epic = held_out_epic(ensemble, held_out, config.seed)
    extra_rows = []
    if config.preference_model == "regret":
        pairs = regret_pairs(held_out, *random_pairs(len(held_out), 2000, np.random.default_rng(config.seed)), teacher)
        prob = preference_probabilities(ensemble, pairs.first, pairs.second).mean(0)
        extra_rows.append(("held-out accuracy against the regret teacher",
                           f"{preference_accuracy(prob, pairs.targets).accuracy:.3f}"))
    print(f"[demo] training PPO on the ground-truth reward for comparison ({time.monotonic() - start:.0f}s)")
    total_steps = config.loop.iterations * config.loop.policy_steps_per_iteration
    gt_agent = PPOAgent(state_env, config.ppo)
    # Same standardization as the learned reward gets, so only the reward's content differs.
    with_truth = standardized_on_pool(lambda obs, acts, next_obs: state_reward(next_obs), clip_pool(dataset))
    gt_agent.train(with_truth, total_steps)

    learned_return, learned_score = evaluate_policy(agent, config.embodiment, config.eval_episodes, 2_000_000)
    gt_return, gt_score = evaluate_policy(gt_agent, config.embodiment, config.eval_episodes, 2_000_000)
    random_return, random_score = evaluate_policy(None, config.embodiment, config.eval_episodes, 2_000_000)

    if config.policy == "diffusion":
        policy_name = (f"diffusion policy, {config.diffusion.agent.algorithm}"
                       f"{' (advantage-weighted on Â)' if config.preference_model == 'regret' else ''} on the learned reward")
    elif config.preference_model == "regret":
        policy_name = "greedy on learned advantage"
    else:
        policy_name = f"PPO on learned reward ({total_steps} steps)"
    rows = [
        ("labels used", f"{records[-1].labels}"),
        *extra_rows,
        ("held-out preference accuracy (ground-truth partial return)", f"{reward_eval.accuracy:.3f}"),
        ("Spearman(learned, ground truth), held-out clips", f"{reward_eval.spearman:.3f}"),
        ("EPIC distance(learned, ground truth), held-out transitions", f"{epic:.3f}"),
        (f"GT return: {policy_name}", f"{learned_return:.2f} (score {learned_score:.2f})"),
        (f"GT return: PPO on ground-truth reward, same standardization ({total_steps} steps)", f"{gt_return:.2f} (score {gt_score:.2f})"),
        ("GT return: random policy", f"{random_return:.2f} (score {random_score:.2f})"),
    ]
    table = "| quantity | value |\n|---|---:|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    rounds = ("| round | labels | reward val acc | policy GT return | success | violation rate |\n"
              "|---:|---:|---:|---:|---:|---:|\n" + "\n".join(
                  f"| {r.iteration} | {r.labels} | {r.reward_validation_accuracy:.3f} | {r.policy_gt_return:.2f} | "
                  f"{or_dash(r.policy_success)} | {or_dash(r.policy_violation_rate)} |" for r in records))
    plot_curves(
        [r.labels for r in records],
        {"reward validation accuracy": {"learned reward": [[r.reward_validation_accuracy] for r in records]},
         "policy GT return": {policy_name: [[r.policy_gt_return] for r in records]}},
        run_dir / "learning_curves.png", title="PbRL loop", xlabel="labels",
    )
    plot_scatter(held_out.gt_returns, predicted_returns(ensemble, held_out), run_dir / "returns_scatter.png",
                 title=f"held-out clips (Spearman {reward_eval.spearman:.3f})")
    elapsed = time.monotonic() - start
    (run_dir / "report.md").write_text(
        f"# embodied-pref demo: SweepToTop-{config.embodiment} (state), preference model "
        f"`{config.preference_model}`, teacher `{teacher.name}`\n\n"
        f"{table}\n\nPer round (4 evaluation episodes; SweepToTop has no hidden "
        f"preference, so no episode violates one):\n\n{rounds}\n\n![learning curves](learning_curves.png)\n\n![learned vs true](returns_scatter.png)\n\n"
        f"Wall time: {elapsed:.0f} s. Config:\n\n```json\n{json.dumps(asdict(config), indent=2, default=str)}\n```\n"
    )
    print(table)
    print(rounds)
    print(f"[demo] report: {run_dir / 'report.md'} ({elapsed:.0f}s)")
    dataset.close()
    return {"records": [asdict(r) for r in records], "reward": asdict(reward_eval), "epic": epic,
            "learned_return": learned_return, "gt_return": gt_return, "random_return": random_return}


def or_dash(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
