"""Environment throughput: steps/s with random actions and frames/s of `render()` for every
registered env of ours, and the X-MAGICAL and Crafter wrappers against raw x-magical and raw
crafter in the same process.

    .venv/bin/python bench/env_throughput.py [--steps 1000] [--filter XMagical] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

import envs.legacy_gym  # noqa: F401,I001  (before crafter, which imports gym 0.26)
import crafter
import envs.crafter
import envs.franka  # noqa: F401  (registers the ids)
import envs.xmagical
from envs.xmagical.sweep_to_top import EPISODE_STEPS, FPS, PHYS_ITER, PHYS_STEPS
from xmagical.benchmarks import EMBODIMENT_TO_CLASS, Embodiment
from xmagical.benchmarks import sweep_to_top as xm_sweep
from embodied_pref.experiments.presets import parse_with_smoke

SMOKE = {"steps": 5, "frames": 1}
"""Sizes of --smoke: every step end to end in seconds; flags given beside it win."""

def our_env_ids(pattern: str) -> list[str]:
    return sorted(i for i in gymnasium.registry if i.startswith("embodied_pref/") and pattern in i)

def gym_rates(env_id: str, steps: int, frames: int) -> tuple[float, float]:
    """(steps/s, frames/s) of a gymnasium env under uniformly random actions."""
    env = gymnasium.make(env_id, render_mode="rgb_array")
    env.action_space.seed(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    step_rate = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(frames):
        env.render()
    frame_rate = frames / (time.perf_counter() - start)
    env.close()
    return step_rate, frame_rate

def raw_xmagical_rate(embodiment: str, steps: int, res: int) -> float:
    """steps/s of x-magical's own SweepToTop (old gym API, draws a res×res frame every step)."""
    env = xm_sweep.SweepToTopEnv(
        robot_cls=EMBODIMENT_TO_CLASS[Embodiment(embodiment)], use_state=True, use_dense_reward=True,
        res_hw=(res, res), fps=FPS, phys_steps=PHYS_STEPS, phys_iter=PHYS_ITER,
        max_episode_steps=EPISODE_STEPS[embodiment],
    )
    rng = np.random.default_rng(0)
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        _, _, done, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        if done:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate

def crafter_rates(observation: str, steps: int, seed: int = 0) -> tuple[float, float]:
    """(ours steps/s, raw crafter.Env steps/s) under the same random actions from the same
    seed, stepped alternately so that both see the same machine load; resets are not timed."""
    actions = np.random.default_rng(seed).integers(0, len(envs.crafter.ACTIONS), size=steps)
    ours = gymnasium.make(envs.crafter.env_id("achieve", observation))
    raw = crafter.Env(seed=seed, length=envs.crafter.EPISODE_STEPS)
    ours.reset(seed=seed)
    raw.reset()
    ours_time = raw_time = 0.0
    for action in actions:
        start = time.perf_counter()
        _, _, terminated, truncated, _ = ours.step(np.array([action]))
        ours_time += time.perf_counter() - start
        start = time.perf_counter()
        _, _, done, _ = raw.step(int(action))
        raw_time += time.perf_counter() - start
        if terminated or truncated:
            ours.reset()
        if done:
            raw.reset()
    return steps / ours_time, steps / raw_time

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--filter", default="", help="only env ids containing this text")
    args = parse_with_smoke(parser, SMOKE)

    print("| env | steps/s | render() frames/s |")
    print("|---|---:|---:|")
    for env_id in our_env_ids(args.filter):
        steps, frames = gym_rates(env_id, args.steps, args.frames)
        print(f"| {env_id} | {steps:,.0f} | {frames:,.0f} |")

    print("\n| SweepToTop, state | ours steps/s | raw x-magical 384² steps/s | raw 1² steps/s | ours / raw 384² | ours / raw 1² |")
    print("|---|---:|---:|---:|---:|---:|")
    for embodiment in EPISODE_STEPS:
        ours, _ = gym_rates(envs.xmagical.env_id(embodiment, "state"), args.steps, 1)
        raw_default = raw_xmagical_rate(embodiment, args.steps, 384)
        raw_tiny = raw_xmagical_rate(embodiment, args.steps, 1)
        print(f"| {embodiment} | {ours:,.0f} | {raw_default:,.0f} | {raw_tiny:,.0f} | "
              f"{ours / raw_default:.2f} | {ours / raw_tiny:.2f} |")

    print("\n| Crafter | ours steps/s | raw crafter.Env steps/s | ours / raw |")
    print("|---|---:|---:|---:|")
    for observation in envs.crafter.OBSERVATIONS:
        ours, raw = crafter_rates(observation, args.steps)
        print(f"| {observation} | {ours:,.0f} | {raw:,.0f} | {ours / raw:.2f} |")

if __name__ == "__main__":
    main()
