"""Cost of RAPL's OT reward: batched Sinkhorn vs POT's batched solver (`ot.solve_batch`, torch
backend) and POT solving the same problems one at a time, and reward inference (encoder +
Sinkhorn against a reference) vs the bare encoder forward pass. Prints a table with ratios.

`ot.solve_batch` runs at its fastest honest settings: its plain-kernel method where that gives
our plan to `ACCURACY` (else its log-domain one), no gradient bookkeeping, and our stopping
tolerance (POT checks it every 10 iterations). Further rows cap both solvers at the fewest
iterations whose plans are still within `ACCURACY` of the converged one, and repeat both
comparisons in float32.

    .venv/bin/python bench/ot.py [--pairs 64 --size 50 --videos 4 --frames 45 --image-size 112] [--smoke]
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

from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder
from embodied_pref.rapl.ot_reward import OTRewardConfig, ot_step_rewards
from embodied_pref.rapl.sinkhorn import SinkhornConfig, cosine_cost, sinkhorn_plan

ACCURACY = 1e-5
"""Largest max abs plan difference for two solvers to count as giving the same plan."""
FLOAT32_TOLERANCE = 1e-6
"""Stopping tolerance of the float32 rows (float32 rounding alone leaves about 1e-7)."""
SMOKE = {"pairs": 2, "size": 5, "videos": 1, "frames": 2, "image_size": 32, "repeats": 1, "ot_rounds": 1}
"""Sizes of --smoke: every step end to end in seconds; flags given beside it win."""


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


def best_seconds(fns: dict[str, Callable[[], object]], rounds: int, calls: int = 1) -> dict[str, float]:
    """Fastest timed call of each function: `rounds` rounds, each timing `calls` consecutive calls
    of every function in turn (after one warm-up call), so that a background load slows all alike
    and each is timed warm, as in a loop of its own."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--tolerance", type=float, default=1e-9, help="stopping tolerance in float64")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each encoder row")
    parser.add_argument("--ot-rounds", type=int, default=5, help="rounds of 10 timed calls of each Sinkhorn row")
    args = parse_with_smoke(parser, SMOKE)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ot = import_pot()

    # Sinkhorn: 64 cosine-cost problems between 50-frame embedding sequences.
    x = torch.randn(args.pairs, args.size, 32, dtype=torch.float64)
    y = torch.randn(args.pairs, args.size, 32, dtype=torch.float64)
    cost = cosine_cost(x, y)
    cost32 = cost.float()
    eps, tol = args.epsilon, args.tolerance
    config = SinkhornConfig(epsilon=eps, max_iterations=1000, tolerance=tol)
    config32 = SinkhornConfig(epsilon=eps, max_iterations=1000, tolerance=FLOAT32_TOLERANCE)
    plan = sinkhorn_plan(cost, config)
    uniform = np.full(args.size, 1.0 / args.size)
    costs = cost.numpy()

    def pot_plan(c: torch.Tensor, tolerance: float, max_iter: int = 1000) -> torch.Tensor:
        return ot.solve_batch(c, reg=eps, method=method, max_iter=max_iter, tol=tolerance, grad="detach").plan

    def ours_capped(c: torch.Tensor, iterations: int) -> torch.Tensor:
        return sinkhorn_plan(c, SinkhornConfig(epsilon=eps, max_iterations=iterations, tolerance=0.0))

    def fewest_iterations(c: torch.Tensor) -> int:
        """The fewest iterations after which both solvers' plans are within ACCURACY of `plan`."""
        return next(i for i in range(1, 1000)
                    if max(max_diff(pot_plan(c, 0.0, i), plan), max_diff(ours_capped(c, i), plan)) <= ACCURACY)

    method = "sinkhorn"
    pot_converged = pot_plan(cost, tol)
    if not max_diff(pot_converged, plan) <= ACCURACY:
        method = "log_sinkhorn"
        pot_converged = pot_plan(cost, tol)
    capped, capped32 = fewest_iterations(cost), fewest_iterations(cost32)
    ms = {name: s * 1e3 for name, s in best_seconds({
        "ours": lambda: sinkhorn_plan(cost, config),
        "pot": lambda: pot_plan(cost, tol),
        "ours_capped": lambda: ours_capped(cost, capped),
        "pot_capped": lambda: pot_plan(cost, 0.0, capped),
        "ours32": lambda: sinkhorn_plan(cost32, config32),
        "pot32": lambda: pot_plan(cost32, FLOAT32_TOLERANCE),
        "ours32_capped": lambda: ours_capped(cost32, capped32),
        "pot32_capped": lambda: pot_plan(cost32, 0.0, capped32),
        "pot_defaults": lambda: ot.solve_batch(cost, reg=eps),
        "one_by_one": lambda: [ot.sinkhorn(uniform, uniform, c, reg=eps, numItermax=1000, stopThr=tol) for c in costs],
    }, args.ot_rounds, calls=10).items()}
    one_by_one = np.stack([ot.sinkhorn(uniform, uniform, c, reg=eps, numItermax=1000, stopThr=tol) for c in costs])

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
    fps = {name: n_frames / s for name, s in best_seconds({"encode": encode, "reward": reward}, args.repeats).items()}

    pot = f'ot.solve_batch(method="{method}", grad="detach"'

    def versus(label: str, key: str) -> str:
        return (f"| {label}: POT {pot}) / sinkhorn_plan (ms) | {ms['pot' + key]:.2f} / {ms['ours' + key]:.3f} | "
                f"{ms['pot' + key] / ms['ours' + key]:.1f}× faster |")

    print(f"| benchmark ({args.pairs} pairs of {args.size}×{args.size}, cosine cost, ε={eps}; "
          f"{args.videos}×{args.frames} frames of {args.image_size}², 1 thread) | value | ratio |")
    print("|---|---:|---:|")
    print(f"| POT ot.sinkhorn, one pair at a time, stopThr={tol:g} (ms) | {ms['one_by_one']:.2f} | |")
    print(f'| POT ot.solve_batch defaults (method="auto" → log_sinkhorn, tol=1e-5) (ms) | {ms["pot_defaults"]:.2f} | |')
    print(f"| POT {pot}, tol={tol:g}) (ms) | {ms['pot']:.2f} | 1.00 |")
    print(f"| sinkhorn_plan, tolerance={tol:g} (ms) | {ms['ours']:.3f} | **{ms['pot'] / ms['ours']:.1f}× faster "
          f"than ot.solve_batch** ({ms['one_by_one'] / ms['ours']:.0f}× than ot.sinkhorn) |")
    print(f"| max abs plan difference vs ot.solve_batch / vs ot.sinkhorn | {max_diff(plan, pot_converged):.1e} "
          f"/ {max_diff(plan, one_by_one):.1e} | |")
    print(versus(f"float64, both capped at {capped} iteration(s), the fewest within {ACCURACY:g}", "_capped"))
    print(versus(f"float32, tol={FLOAT32_TOLERANCE:g}", "32"))
    print(versus(f"float32, both capped at {capped32} iteration(s), the fewest within {ACCURACY:g}", "32_capped"))
    print(f"| max abs difference of the float32 plan vs the float64 plan | "
          f"{max_diff(sinkhorn_plan(cost32, config32), plan):.1e} | |")
    print(f"| bare encoder forward (frames/s) | {fps['encode']:,.1f} | 1.00 |")
    print(f"| OT reward inference, encoder + Sinkhorn (frames/s) | {fps['reward']:,.1f} | {fps['reward'] / fps['encode']:.3f} |")


if __name__ == "__main__":
    main()
