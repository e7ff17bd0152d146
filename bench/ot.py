"""Cost of RAPL's OT reward: batched log-domain Sinkhorn vs POT solving the same problems one
at a time, and reward inference (encoder + Sinkhorn against a reference) vs the bare encoder
forward pass. Prints a table with ratios.

    .venv/bin/python bench/ot.py [--pairs 64 --size 50 --videos 4 --frames 45 --image-size 112]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from types import ModuleType
from typing import Callable

import numpy as np
import torch

from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder
from embodied_pref.rapl.ot_reward import OTRewardConfig, ot_step_rewards
from embodied_pref.rapl.sinkhorn import SinkhornConfig, cosine_cost, sinkhorn_plan


def import_pot() -> ModuleType:
    """POT's `ot` package: this script is also called ot.py, and its folder is first on sys.path."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]
    sys.modules.pop("ot", None)
    try:
        return importlib.import_module("ot")
    finally:
        sys.path[:] = saved


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--tolerance", type=float, default=1e-9)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ot = import_pot()

    # Sinkhorn: 64 cosine-cost problems between 50-frame embedding sequences.
    x = torch.randn(args.pairs, args.size, 32, dtype=torch.float64)
    y = torch.randn(args.pairs, args.size, 32, dtype=torch.float64)
    cost = cosine_cost(x, y)
    config = SinkhornConfig(epsilon=args.epsilon, max_iterations=1000, tolerance=args.tolerance)
    uniform = np.full(args.size, 1.0 / args.size)
    costs = cost.numpy()

    def pot() -> np.ndarray:
        return np.stack([ot.sinkhorn(uniform, uniform, c, reg=args.epsilon, numItermax=1000, stopThr=args.tolerance) for c in costs])

    ours_s = best_seconds(lambda: sinkhorn_plan(cost, config), args.repeats)
    pot_s = best_seconds(pot, args.repeats)
    max_diff = float(np.abs(sinkhorn_plan(cost, config).numpy() - pot()).max())

    # Reward inference: frames -> encoder -> OT against a reference, vs the encoder alone.
    encoder = FrameEncoder(EncoderConfig(image_size=args.image_size)).eval()
    frames = torch.randint(0, 256, (args.videos, args.frames, args.image_size, args.image_size, 3), dtype=torch.uint8)
    with torch.no_grad():
        reference = encoder(frames[0])
    reward_config = OTRewardConfig(sinkhorn=SinkhornConfig(epsilon=1.0))

    @torch.no_grad()
    def encode() -> torch.Tensor:
        return encoder(frames)

    @torch.no_grad()
    def reward() -> torch.Tensor:
        return ot_step_rewards(encoder(frames), reference, reward_config)

    n_frames = args.videos * args.frames
    encode_fps = n_frames / best_seconds(encode, args.repeats)
    reward_fps = n_frames / best_seconds(reward, args.repeats)

    print(f"| benchmark ({args.pairs} pairs of {args.size}×{args.size}, ε={args.epsilon}; "
          f"{args.videos}×{args.frames} frames of {args.image_size}², 1 thread) | value | ratio |")
    print("|---|---:|---:|")
    print(f"| POT ot.sinkhorn, one pair at a time (ms) | {pot_s * 1e3:.2f} | 1.00 |")
    print(f"| batched log-domain sinkhorn_plan (ms) | {ours_s * 1e3:.2f} | {pot_s / ours_s:.1f}× faster |")
    print(f"| max abs plan difference vs POT | {max_diff:.1e} | |")
    print(f"| bare encoder forward (frames/s) | {encode_fps:,.1f} | 1.00 |")
    print(f"| OT reward inference, encoder + Sinkhorn (frames/s) | {reward_fps:,.1f} | {reward_fps / encode_fps:.3f} |")


if __name__ == "__main__":
    main()
