"""Cost of paying PPO a learned reward: vectorized X-MAGICAL stepping with the learned
reward wrapper vs the same envs bare, in one process. Prints a table with ratios.

    .venv/bin/python bench/reward_pipeline.py [--steps 4000] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import envs.legacy_gym  # noqa: F401,I001  (before stable_baselines3, which imports gym 0.26)
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env

from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig, StandardizedReward
from envs.xmagical import env_id
from policies.learned_reward import LearnedRewardVecEnv

SMOKE = {"steps": 8}
"""Sizes of --smoke: every step end to end in seconds; flags given beside it win."""


def steps_per_second(venv, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    venv.reset()
    start = time.perf_counter()
    for _ in range(steps // venv.num_envs):
        venv.step(rng.uniform(-1, 1, (venv.num_envs, *venv.action_space.shape)).astype(np.float32))
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--n-envs", type=int, default=4)
    args = parse_with_smoke(parser, SMOKE)
    torch.set_num_threads(1)
    eid = env_id("Gripper", "state")
    ensemble = RewardEnsemble(17, 3, RewardNetConfig())
    reference = np.random.default_rng(0).normal(size=(256, 17)).astype(np.float32)
    reward = StandardizedReward(ensemble.predict, reference, np.zeros((256, 3), np.float32), reference)
    rows = [
        ("bare VecEnv (ground-truth reward)", steps_per_second(make_vec_env(eid, n_envs=args.n_envs, seed=0), args.steps)),
        ("LearnedRewardVecEnv, reward_fn=None", steps_per_second(LearnedRewardVecEnv(make_vec_env(eid, n_envs=args.n_envs, seed=0)), args.steps)),
        ("LearnedRewardVecEnv, 3×256² ensemble", steps_per_second(LearnedRewardVecEnv(make_vec_env(eid, n_envs=args.n_envs, seed=0), reward), args.steps)),
    ]
    base = rows[0][1]
    print(f"| pipeline ({args.n_envs} envs, {args.steps} steps) | steps/s | ratio vs bare |")
    print("|---|---:|---:|")
    for name, sps in rows:
        print(f"| {name} | {sps:,.0f} | {sps / base:.2f} |")


if __name__ == "__main__":
    main()
