"""Latency of a deployed diffusion policy per action chunk at batch 1 on one CPU thread:
`DiffusionPolicy.sample_chunk` (eager PyTorch, diffusers' DDIMScheduler) vs the export's
runtime (`DeployedPolicy.sample_chunk`: DDIM in numpy) on its eager, TorchScript and
onnxruntime backends, with the largest action difference from eager for the same noise.

A state-only policy with Franka-like sizes: state 10 (end-effector position, 6-D rotation,
gripper width), action 7 (end-effector translation, axis-angle rotation, gripper). Untrained
weights: latency does not depend on training. Prints one table with ratios vs eager and
whether the goal holds: every export at most eager's latency, DDIM-10 p95 under 20 ms on the
cpu preset.

    .venv/bin/python bench/deploy.py [--unet cpu] [--steps 10] [--calls 200] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from embodied_pref.experiments.presets import parse_with_smoke
from policies.deploy.export import export_policy
from policies.deploy.runtime import BACKENDS, DeployedPolicy
from policies.diffusion.configuration import UNET_PRESETS, DiffusionPolicyConfig
from policies.diffusion.policy import DiffusionPolicy

STATE_DIM, ACTION_DIM = 10, 7
GOAL_P95_MS, GOAL_UNET, GOAL_STEPS = 20.0, "cpu", 10
SMOKE = {"unet": "tiny", "calls": 3, "warmup": 1}
"""Sizes of --smoke: every row in seconds; flags given beside it win."""
BACKEND_LABELS = {"eager": "runtime, eager PyTorch networks", "torchscript": "runtime, TorchScript",
                  "onnxruntime": "runtime, onnxruntime"}


def policy_with_statistics(config: DiffusionPolicyConfig, seed: int) -> DiffusionPolicy:
    """An untrained policy whose normalizer maps plausible robot ranges (not the identity)."""
    torch.manual_seed(seed)
    policy = DiffusionPolicy(config).eval()
    rng = np.random.default_rng(seed)
    policy.normalizer.fit("state", rng.normal(0.3, 0.2, (1000, STATE_DIM)), "gaussian")
    policy.normalizer.set_limits("action", -np.full(ACTION_DIM, 0.05), np.full(ACTION_DIM, 0.05))
    return policy


def percentiles_ms(fns: dict[str, Callable[[], object]], calls: int, warmup: int) -> dict[str, tuple[float, float]]:
    """{name: (p50, p95) ms}: `warmup` untimed calls each, then `calls` rounds timing every
    function in turn, so that a background load slows all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (float(np.percentile(t, 50)), float(np.percentile(t, 95))) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", choices=sorted(UNET_PRESETS), default=GOAL_UNET, help="UNet preset")
    parser.add_argument("--steps", type=int, default=GOAL_STEPS, help="DDIM steps per chunk")
    parser.add_argument("--calls", type=int, default=200, help="timed chunks per sampler")
    parser.add_argument("--warmup", type=int, default=10, help="untimed chunks per sampler first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and onnxruntime")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_with_smoke(parser, SMOKE)
    torch.set_num_threads(args.threads)
    config = DiffusionPolicyConfig(state_dim=STATE_DIM, action_dim=ACTION_DIM, unet=args.unet, inference_steps=args.steps)
    policy = policy_with_statistics(config, args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        print("exporting ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        export = export_policy(policy, Path(tmp) / "export")
        export_s = time.perf_counter() - start
        deployed = {backend: DeployedPolicy.load(export, backend, args.steps, threads=args.threads, seed=args.seed)
                    for backend in BACKENDS}

    rng = np.random.default_rng(args.seed)
    history = {"state": rng.normal(0.3, 0.2, (config.n_obs_steps, STATE_DIM)).astype(np.float32)}
    obs = {"state": torch.from_numpy(history["state"])[None]}
    generator = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(1, config.horizon, ACTION_DIM, generator=torch.Generator().manual_seed(args.seed))
    reference = policy.sample_chunk(obs, torch.Generator().manual_seed(args.seed), steps=args.steps)[0].numpy()
    differences = {name: float(np.abs(runtime.sample_chunk(history, noise[0].numpy()) - reference).max())
                   for name, runtime in deployed.items()}

    print(f"timing {args.calls} chunks per sampler ...", file=sys.stderr, flush=True)
    fns: dict[str, Callable[[], object]] = {"eager": lambda: policy.sample_chunk(obs, generator, steps=args.steps)}
    fns.update({f"runtime {name}": (lambda runtime=runtime: runtime.sample_chunk(history)) for name, runtime in deployed.items()})
    latency = percentiles_ms(fns, args.calls, args.warmup)

    print(f"machine: torch {torch.__version__}, {args.threads} thread(s); export took {export_s:.1f} s")
    print(f"| action chunk, unet {args.unet!r}, DDIM-{args.steps}, batch 1, state {STATE_DIM} / action {ACTION_DIM} "
          f"(H={config.horizon}) | p50 ms | p95 ms | p50 / p95 vs eager | max abs action diff vs eager |")
    print("|---|---:|---:|---:|---:|")
    base = latency["eager"]
    print(f"| DiffusionPolicy.sample_chunk, eager PyTorch | {base[0]:.2f} | {base[1]:.2f} | 1.00× / 1.00× | reference |")
    for name in BACKENDS:
        p50, p95 = latency[f"runtime {name}"]
        print(f"| {BACKEND_LABELS[name]} | {p50:.2f} | {p95:.2f} | {base[0] / p50:.2f}× / {base[1] / p95:.2f}× faster "
              f"| {differences[name]:.1e} |")

    exports = [latency[f"runtime {name}"] for name in ("torchscript", "onnxruntime")]
    faster, best_p95 = all(p50 <= base[0] for p50, _ in exports), min(p95 for _, p95 in exports)
    goal = f"goal: exports ≤ eager p50 latency and DDIM-{GOAL_STEPS} p95 < {GOAL_P95_MS:g} ms on the {GOAL_UNET} preset"
    measured = f"exports ≤ eager: {'yes' if faster else 'no'}, best export p95 {best_p95:.2f} ms"
    if (args.unet, args.steps) != (GOAL_UNET, GOAL_STEPS):
        print(f"{goal}: not checked at unet {args.unet!r}, DDIM-{args.steps} ({measured})")
    else:
        print(f"{goal}: {'holds' if faster and best_p95 < GOAL_P95_MS else 'does not hold'} — {measured}")

if __name__ == "__main__":
    main()
