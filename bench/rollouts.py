"""Rollout throughput: steps/s of episodes played over 1 vs 2 subprocess workers, each running
its own copy of the policy (PPO's policy through `PPOAgent.rollouts`, and uniformly random
actions through `vector_rollouts(..., in_workers=True)`), whether the episodes are the same for
the same seeds, and steps/s of the learned-reward wrapper
(`LearnedRewardVecEnv` paying the demo's reward ensemble, standardized) against the bare VecEnv
it wraps, in CPU time of this process: deferred as PPO runs it (each rollout of --rollout-steps
steps paid in one batched reward call at its end), and per step for comparison. The cores are
shared: the load average is printed beside the numbers.

    OMP_NUM_THREADS=1 .venv/bin/python bench/rollouts.py [--episodes 32] [--steps 1000] [--rollout-steps 256] [--smoke]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import time
from typing import Callable

import gymnasium
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv

from embodied_pref.data import Trajectory
from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.experiments.reward_quality import XMAGICAL_REWARD_NET
from embodied_pref.reward_nets import RewardEnsemble, StandardizedReward
from embodied_pref.rollout import ScheduledEpisodes, SeededRandomPolicy, vector_rollouts
from envs.xmagical import env_id
from policies.learned_reward import LearnedRewardVecEnv
from policies.ppo import PPOAgent, PPOConfig

STATE = env_id("Gripper", "state")  # the demo's env: 100-step episodes, 17-d states
PIXELS = env_id("Gripper", "pixels")  # the same task, each step also draws a 112x112 frame
WORKERS = (1, 2)
SMOKE = {"episodes": 2, "steps": 20, "rollout_steps": 8, "repeats": 1}
"""Sizes of --smoke: every path end to end; flags given beside it win."""


def _scheduled_env(name: str) -> gymnasium.Env:
    """The env for `vector_rollouts`, image observations flattened as a `Trajectory` keeps them."""
    env = gymnasium.make(name)
    if len(env.observation_space.shape) > 1:
        env = gymnasium.wrappers.FlattenObservation(env)
    return ScheduledEpisodes(env)


def _timed(play: Callable[[], list[Trajectory]], repeats: int) -> tuple[float, list[Trajectory]]:
    """(best steps/s of `repeats` calls, the episodes of the last), in wall-clock time."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        episodes = play()
        rates.append(sum(t.length for t in episodes) / (time.perf_counter() - start))
    return max(rates), episodes


def _same(a: list[Trajectory], b: list[Trajectory]) -> bool:
    return all(np.array_equal(x.observations, y.observations) and np.array_equal(x.actions, y.actions)
               and np.array_equal(x.rewards, y.rewards) for x, y in zip(a, b, strict=True))


def ppo_rates(episodes: int, repeats: int, seed: int) -> tuple[list[float], list[list[Trajectory]]]:
    """steps/s and episodes of `PPOAgent.rollouts` with each number of subprocess workers (one
    warm-up call first, so worker start-up is not counted); every agent has the same weights."""
    rates, played = [], []
    weights = None
    for workers in WORKERS:
        agent = PPOAgent(STATE, PPOConfig(n_envs=workers, vec_env="subproc", device="cpu", seed=0))
        try:
            weights = weights or agent.model.policy.state_dict()
            agent.model.policy.load_state_dict(weights)
            agent.rollouts(workers, seed + 10_000)
            rate, trajectories = _timed(lambda: agent.rollouts(episodes, seed), repeats)
        finally:
            agent.close()
        rates.append(rate)
        played.append(trajectories)
    return rates, played


def random_rates(name: str, episodes: int, repeats: int, seed: int) -> tuple[list[float], list[list[Trajectory]]]:
    """steps/s and episodes of uniformly random actions over each number of subprocess workers."""
    rates, played = [], []
    for workers in WORKERS:
        venv = SubprocVecEnv([functools.partial(_scheduled_env, name)] * workers)
        try:
            space = venv.action_space
            warm_up = [seed + 10_000 + i for i in range(workers)]
            vector_rollouts(venv, SeededRandomPolicy(space, warm_up), warm_up, in_workers=True)
            seeds = [seed + i for i in range(episodes)]
            rate, trajectories = _timed(
                lambda: vector_rollouts(venv, SeededRandomPolicy(space, seeds), seeds, in_workers=True), repeats)
        finally:
            venv.close()
        rates.append(rate)
        played.append(trajectories)
    return rates, played


def demo_reward(seed: int) -> StandardizedReward:
    """The demo's reward ensemble (r(s'), 3 x (256, 256)) with its input normalization and
    standardization fitted on random episodes, as `run_pbrl_loop` hands it to PPO (untrained:
    inference costs the same)."""
    env = gymnasium.make(STATE)
    seeds = [seed + i for i in range(4)]
    policy = SeededRandomPolicy(env.action_space, seeds)
    obs, acts, next_obs = [], [], []
    for i, s in enumerate(seeds):
        o, _ = env.reset(seed=s)
        for _ in range(50):
            a = policy(o[None], [i])[0].astype(np.float32)
            n, *_ = env.step(a)
            obs.append(o), acts.append(a), next_obs.append(n)
            o = n
    env.close()
    obs, acts, next_obs = (np.asarray(x, dtype=np.float32) for x in (obs, acts, next_obs))
    torch.manual_seed(seed)
    ensemble = RewardEnsemble(obs.shape[1], acts.shape[1], XMAGICAL_REWARD_NET)
    ensemble.fit_input_normalization(obs, acts, next_obs)
    return StandardizedReward(ensemble.predict, obs, acts, next_obs)


def vec_env_rate(venv: VecEnv, actions: np.ndarray, rollout_steps: int) -> float:
    """Env steps (all envs counted) per CPU-second of this process, of `venv` on the given
    actions (T, n_envs, A); a deferred `LearnedRewardVecEnv` is paid its recorded steps in one
    call every `rollout_steps` steps and after the last, as PPO's rollouts pay it. A DummyVecEnv
    and its reward run on this process's one thread, and CPU time stays fair while other
    processes share the cores."""
    deferred = isinstance(venv, LearnedRewardVecEnv) and venv.deferred
    venv.reset()
    start = time.process_time()
    for step, step_actions in enumerate(actions, 1):
        venv.step(step_actions)
        if deferred and (step % rollout_steps == 0 or step == len(actions)):
            venv.deferred_rewards()
    return actions.shape[0] * actions.shape[1] / (time.process_time() - start)


def wrapper_rates(n_envs: int, steps: int, rollout_steps: int, repeats: int, seed: int) -> dict[str, float]:
    """Best steps per CPU-second of a bare DummyVecEnv of `n_envs` envs and of
    `LearnedRewardVecEnv` over it paying a constant (the wrapper's own cost) or `demo_reward`,
    deferred to the end of each `rollout_steps`-step rollout as PPO runs it, and `demo_reward`
    per step; measured in turn `repeats` times."""
    venv = make_vec_env(STATE, n_envs=n_envs, seed=seed)
    reward = demo_reward(seed)
    envs = {"bare VecEnv": venv,
            "wrapper, constant reward": LearnedRewardVecEnv(venv, lambda o, a, n: np.zeros(len(o), np.float32),
                                                            deferred=True),
            "wrapper, demo reward": LearnedRewardVecEnv(venv, reward, deferred=True),
            "wrapper, demo reward, per step": LearnedRewardVecEnv(venv, reward)}
    space = venv.action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high, (steps, n_envs, *space.shape)).astype(np.float32)
    rates: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(repeats):
        for name, env in envs.items():
            rates[name].append(vec_env_rate(env, actions, rollout_steps))
    venv.close()
    return {name: max(r) for name, r in rates.items()}


def reward_call_us(seed: int, batch: int, calls: int) -> float:
    """CPU microseconds of one `demo_reward` call on a batch of `batch` transitions."""
    reward = demo_reward(seed)
    obs = np.random.default_rng(seed).normal(size=(batch, 17)).astype(np.float32)
    acts = np.zeros((batch, 3), np.float32)
    reward(obs, acts, obs)
    start = time.process_time()
    for _ in range(calls):
        reward(obs, acts, obs)
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 8 episodes timed 0.2-0.3 s a call, too short: the 2-vs-1 ratio moved from 1.3x to 1.8x between runs.
    parser.add_argument("--episodes", type=int, default=32, help="episodes per timed rollout call (100 steps each)")
    parser.add_argument("--steps", type=int, default=1000, help="VecEnv steps per timing of the reward wrapper")
    parser.add_argument("--rollout-steps", type=int, default=PPOConfig().n_steps,
                        help="VecEnv steps per PPO rollout, paid in one deferred reward call (default: PPOConfig's n_steps)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each row, the best kept")
    parser.add_argument("--n-envs", type=int, default=PPOConfig().n_envs,
                        help="envs of the VecEnv under the reward wrapper (default: PPOConfig's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_with_smoke(parser, SMOKE)
    torch.set_num_threads(1)
    # Workers fork from a server that has imported these once, instead of importing them each.
    multiprocessing.set_forkserver_preload(["torch", "stable_baselines3", "policies.ppo", "envs.xmagical"])
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"torch threads {torch.get_num_threads()}; {os.cpu_count()} cores")

    print(f"\n| rollouts of {args.episodes} episodes | 1 worker (steps/s) | 2 workers (steps/s) | ratio "
          "| same episodes | mean return |")
    print("|---|---:|---:|---:|---|---:|")
    rows = [("PPO policy, state obs", lambda: ppo_rates(args.episodes, args.repeats, args.seed)),
            ("random actions, state obs", lambda: random_rates(STATE, args.episodes, args.repeats, args.seed)),
            ("random actions, pixel obs", lambda: random_rates(PIXELS, args.episodes, args.repeats, args.seed))]
    for label, measure in rows:
        (one, two), (first, second) = measure()
        mean_return = np.mean([t.rewards.sum() for t in first])
        print(f"| {label} | {one:,.0f} | {two:,.0f} | {two / one:.2f}× | {'yes' if _same(first, second) else 'failed: they differ'} "
              f"| {mean_return:.2f} |")

    n_envs = args.n_envs
    rates = wrapper_rates(n_envs, args.steps, args.rollout_steps, args.repeats, args.seed)
    bare = rates["bare VecEnv"]
    print(f"\n| {n_envs} dummy envs, {args.steps} steps; deferred rewards paid per {args.rollout_steps}-step rollout "
          "| steps per CPU-second | ratio vs bare |")
    print("|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / bare:.2f}× |")
    rollout_batch = n_envs * args.rollout_steps
    print(f"\none demo reward call on {n_envs} transitions: {reward_call_us(args.seed, n_envs, args.steps):.0f} us "
          f"of CPU; on a rollout's {rollout_batch}: "
          f"{reward_call_us(args.seed, rollout_batch, max(1, args.steps // args.rollout_steps)):.0f} us; "
          f"one VecEnv step of {n_envs} envs: {1e6 * n_envs / bare:.0f} us")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
