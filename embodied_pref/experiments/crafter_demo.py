"""The demo on Crafter (`demo --task crafter-achieve|crafter-thrift`): the PbRL loop with a
synthetic teacher on Crafter's state observations, then PPO on the learned reward against a
uniformly random policy by the Crafter score and each achievement's success rate."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import gymnasium
import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.evaluation import evaluate_reward
from embodied_pref.experiments import tasks
from embodied_pref.experiments.demo import Actor, DemoConfig, open_run, or_dash
from embodied_pref.experiments.tasks import task_spec
from embodied_pref.gathering import TeacherGatherer, scaled_teacher
from embodied_pref.loop import IterationRecord, run_pbrl_loop
from embodied_pref.reward_nets import RewardEnsemble, RewardFn, RewardNetConfig
from embodied_pref.rollout import rollout
from envs import crafter
from policies.ppo import PPOAgent

CRAFTER_REWARD_NET = RewardNetConfig(hidden_sizes=(64, 64), use_state=False, use_action=False, use_next_state=True)
"""Crafter's ground truth is an event of a step (an achievement unlocked, health lost, a table
placed), which the state s_{t+1} records (`newly_unlocked`, `achieved`, `inventory_change`);
narrower than the default, since the state also carries much the reward should ignore."""
CRAFTER_QUALITIES = (0.0, 0.5, 0.8, 1.0)
"""Scripted-player qualities of the Crafter demo's first episodes, cycled."""
CRAFTER_TASKS = ("crafter-achieve", "crafter-thrift")


def crafter_outcomes(task: str, episodes: list[Trajectory]) -> dict:
    """Crafter score, per-achievement success rates (%), mean ground-truth return, episode
    length and violation rate of `episodes` (each carrying `achievements` in its metadata)."""
    rates = crafter.success_rates([e.metadata["achievements"] for e in episodes])
    return {"score": crafter.crafter_score(rates), "success_rates": rates,
            "gt_return": float(np.mean([e.rewards.sum() for e in episodes])),
            "length": float(np.mean([e.length for e in episodes])),
            "violation_rate": float(np.mean([task_spec(task).violates(e) for e in episodes]))}


def crafter_episodes(task: str, act: Actor | None, episodes: int, seed: int) -> list[Trajectory]:
    """`episodes` Crafter episodes (seeds seed, seed+1, …) of `act`, sampling its actions (a
    deterministic policy walks into the same wall for the rest of an episode), or of the
    uniformly random policy for None; each episode's final achievement counts in its metadata."""
    env = gymnasium.make(crafter.env_id(task.removeprefix("crafter-"), "state"))
    env.action_space.seed(seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        return env.action_space.sample() if act is None else act.act(obs, deterministic=False)

    try:
        result = []
        for i in range(episodes):
            episode = rollout(env, policy, seed + i)
            counts = dict(env.unwrapped.game._player.achievements)
            result.append(replace(episode, metadata={**episode.metadata, "achievements": counts}))
        return result
    finally:
        env.close()


class EpisodesOfAClip:
    """An agent whose `rollouts` give only episodes of at least `min_steps` steps (a Crafter
    player can die before a clip's length): it draws further seeds, at most `tries` times
    `n` episodes in all, so it may return fewer than `n`. The loop's per-round evaluation
    sees these episodes too, so it favours the ones that survive; the final evaluation does not."""

    def __init__(self, agent: PPOAgent, min_steps: int, tries: int = 4) -> None:
        self.agent, self.min_steps, self.tries = agent, min_steps, tries
        self.checkpoint_name = agent.checkpoint_name

    def train(self, reward_fn: RewardFn | None, steps: int) -> None:
        self.agent.train(reward_fn, steps)

    def rollouts(self, n: int, seed: int) -> list[Trajectory]:
        kept: list[Trajectory] = []
        for attempt in range(self.tries):
            kept += [t for t in self.agent.rollouts(n, seed + attempt * n) if t.length >= self.min_steps]
            if len(kept) >= n:
                break
        return kept[:n]

    def save(self, path: Path) -> None:
        self.agent.save(path)

    def load(self, path: Path) -> None:
        self.agent.load(path)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.agent.act(obs, deterministic)


def run_crafter_demo(config: DemoConfig) -> dict:
    """The PbRL loop on a Crafter task: scripted episodes of mixed quality (half of them
    violating the preference) seed the clip pool, a synthetic teacher labels, PPO trains on
    the learned reward; the reward is scored on clips of as many held-out scripted episodes,
    PPO and a uniformly random policy by the Crafter score."""
    if config.preference_model != "partial-return" or config.policy != "ppo":
        raise ValueError(f"--task {config.task}: expected --preference-model partial-return and --policy ppo")
    start = time.monotonic()
    run_dir, dataset = open_run(config, f"demo on {config.task}")
    spec = task_spec(config.task)
    state_env = spec.env_id("Player", "state")
    print(f"[demo] run directory: {run_dir}")
    qualities = [CRAFTER_QUALITIES[i % len(CRAFTER_QUALITIES)] for i in range(config.initial_episodes)]
    initial = [e for e in tasks.scripted_episodes(config.task, "Player", qualities, config.seed * 100_000,
                                                   violations=[i % 2 == 1 for i in range(len(qualities))], progress=True)
               if e.length >= config.loop.clip_length]
    teacher = scaled_teacher(config.teacher, initial, config.loop.clip_length, config.seed)
    agent = EpisodesOfAClip(PPOAgent(state_env, config.ppo, log_dir=run_dir / "tensorboard"), config.loop.clip_length)

    def report(record: IterationRecord) -> None:
        print(f"[demo] iteration {record.iteration}: {record.labels} labels, reward val acc "
              f"{record.reward_validation_accuracy:.3f}, policy GT return {record.policy_gt_return:.2f}, "
              f"achievements {or_dash(record.policy_success)}, violation rate {or_dash(record.policy_violation_rate)} "
              f"({time.monotonic() - start:.0f}s)")

    records = run_pbrl_loop(dataset, agent, TeacherGatherer(dataset, teacher), run_dir, lambda: initial, config.loop,
                            CRAFTER_REWARD_NET, replace(config.reward_training, seed=config.seed),
                            on_iteration=report, violates=spec.violates)
    ensemble = RewardEnsemble.load(run_dir / "reward.pt")
    held_out = tasks.scripted_clips(config.task, "Player", qualities, config.seed * 100_000 + 90_000,
                                    config.loop.clip_length, 8, np.random.default_rng(config.seed),
                                    violations=[i % 2 == 1 for i in range(len(qualities))])
    reward_eval = evaluate_reward(ensemble, held_out, seed=config.seed)
    print(f"[demo] evaluating PPO and a random policy on {config.eval_episodes} episodes each "
          f"({time.monotonic() - start:.0f}s)")
    learned = crafter_outcomes(config.task, crafter_episodes(config.task, agent, config.eval_episodes, 2_000_000))
    random = crafter_outcomes(config.task, crafter_episodes(config.task, None, config.eval_episodes, 2_000_000))
    total_steps = config.loop.iterations * config.loop.policy_steps_per_iteration
    policy_name = f"PPO on learned reward ({total_steps} steps)"
    rows = [("labels used", f"{records[-1].labels}"),
            ("held-out preference accuracy (ground-truth partial return)", f"{reward_eval.accuracy:.3f}"),
            ("Spearman(learned, ground truth), held-out clips", f"{reward_eval.spearman:.3f}")]
    for name, outcome in ((policy_name, learned), ("random policy", random)):
        rows.append((f"Crafter score: {name}", f"{outcome['score']:.2f} (GT return {outcome['gt_return']:.2f}, "
                     f"length {outcome['length']:.0f}, violation rate {outcome['violation_rate']:.2f})"))
    table = "| quantity | value |\n|---|---:|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    achievements = (f"| achievement | {policy_name} (%) | random policy (%) |\n|---|---:|---:|\n" + "\n".join(
        f"| {name} | {learned['success_rates'][name]:.0f} | {random['success_rates'][name]:.0f} |"
        for name in crafter.ACHIEVEMENTS))
    elapsed = time.monotonic() - start
    (run_dir / "report.md").write_text(
        f"# embodied-pref demo: {config.task} (state), teacher `{teacher.name}`\n\n{table}\n\n"
        f"Success rates over {config.eval_episodes} evaluation episodes:\n\n{achievements}\n\n"
        f"Wall time: {elapsed:.0f} s. Config:\n\n```json\n{json.dumps(asdict(config), indent=2, default=str)}\n```\n")
    print(table)
    print(achievements)
    print(f"[demo] report: {run_dir / 'report.md'} ({elapsed:.0f}s)")
    dataset.close()
    return {"records": [asdict(r) for r in records], "reward": asdict(reward_eval), "learned": learned, "random": random}
