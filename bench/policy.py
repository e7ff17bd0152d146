"""Cost and quality of the diffusion policy's samplers: per-chunk inference latency of DDPM-100
vs DDIM-10 vs DDIM-4 (eager and with the UNet under torch.compile), BC training throughput
(forward + backward + AdamW step), and the BC success of one trained policy sampled each way
on X-MAGICAL avoid (Gripper, state, layout "jitter") next to the scripted expert on the same
seeds. Prints one table with ratios and whether the goal "DDIM-10 >= 8x faster than DDPM-100
at equal BC success within 5 points" holds with the measured numbers.

    .venv/bin/python bench/policy.py [--quick | --smoke] [--unet tiny] [--device cpu|cuda] [--bc-steps 6000]

Full size: tiny UNet, 100 demos, 6,000 BC steps × batch 128 at lr 1e-3, 50 latency calls
(about 15 minutes on one CPU thread); `--unet cpu --bc-steps 3000 --bc-batch 256 --lr 1e-4`
trains the larger UNet, over an hour on one thread.
--quick: tiny UNet, 20 demos, 300 BC steps, 20 latency calls (a few minutes on 2 CPU cores).
--smoke: every row in seconds (2 demos, 2 BC steps, 1 episode, torch.compile with its "eager"
backend, which traces the UNet but generates no code).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import gymnasium
import numpy as np
import torch

from embodied_pref.distributed import autocast
from embodied_pref.experiments.tasks import scripted_episodes, task_spec
from policies.diffusion.bc import BCConfig, pretrain
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import run_episodes
from policies.diffusion.training import TrainerConfig

TASK, EMBODIMENT, LAYOUT = "xmagical-avoid", "Gripper", "jitter"
STATE_DIM, ACTION_DIM = 17, 3
SAMPLERS = (("DDPM-100", "ddpm", None), ("DDIM-10", "ddim", 10), ("DDIM-4", "ddim", 4))
"""(label, sampler, steps): DDPM always runs all train_timesteps (100) steps."""
GOAL_SPEEDUP, GOAL_POINTS = 8.0, 5.0
PRESETS = {"unet": ("tiny", "tiny", "tiny"), "calls": (50, 20, 2), "train_steps": (20, 5, 1),
           "bc_demos": (100, 20, 2), "bc_steps": (6000, 300, 2), "bc_batch": (128, 64, 8), "lr": (1e-3, 1e-3, 1e-3),
           "episodes": (20, 20, 1), "compile_backend": ("inductor", "inductor", "eager")}
"""Per flag left out: (full, --quick, --smoke) value."""

Latency = tuple[float, float] | str
"""(p50, p95) seconds, or the reason it could not be measured (e.g. torch.compile failing)."""
Measured = float | str
"""A value, or the reason it could not be measured."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def failure(err: BaseException) -> str:
    """One table-safe line naming why a measurement failed."""
    lines = str(err).strip().splitlines()
    message = lines[0] if lines else ""
    return f"failed: {type(err).__name__}: {message}"[:160].replace("|", "/")


def machine_facts(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    facts = f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU {cpu}"
    if device.type == "cuda":
        facts += f", GPU {torch.cuda.get_device_name(device)}"
    return facts


def chunk_latencies(policy: DiffusionPolicy, sampler: str, steps: int | None, calls: int, warmup: int,
                    device: torch.device) -> tuple[float, float]:
    """p50 and p95 seconds of `sample_chunk` at batch 1, after `warmup` untimed calls."""
    obs = {"state": torch.randn(1, policy.config.n_obs_steps, STATE_DIM, generator=torch.Generator().manual_seed(0)).to(device)}
    generator = torch.Generator().manual_seed(0)
    for _ in range(warmup):
        policy.sample_chunk(obs, generator, sampler, steps)
    sync(device)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.sample_chunk(obs, generator, sampler, steps)
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def measure_latency(config: DiffusionPolicyConfig, calls: int, compile_unet: bool, device: torch.device,
                    backend: str) -> dict[tuple[str, bool], Latency]:
    """{(sampler label, compiled): (p50, p95) seconds, or why it failed}."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).to(device).eval()
    results: dict[tuple[str, bool], Latency] = {}
    for label, sampler, steps in SAMPLERS:
        results[label, False] = chunk_latencies(policy, sampler, steps, calls, 2, device)
    if compile_unet:
        eager = policy.unet
        try:
            policy.unet = torch.compile(eager, backend=backend)
            policy.sample_chunk({"state": torch.zeros(1, config.n_obs_steps, STATE_DIM, device=device)}, None, "ddim", 1)
        except Exception as err:  # compile errors surface at the first call; report them in the table
            reason = failure(err)
            results.update({(label, True): reason for label, _, _ in SAMPLERS})
        else:
            for label, sampler, steps in SAMPLERS:
                try:
                    results[label, True] = chunk_latencies(policy, sampler, steps, calls, 2, device)
                except Exception as err:
                    results[label, True] = failure(err)
        finally:
            policy.unet = eager
            torch._dynamo.reset()
    return results


def measure_training(config: DiffusionPolicyConfig, batch_sizes: tuple[int, ...], steps: int, compile_unet: bool,
                     device: torch.device, backend: str) -> dict[tuple[int, bool], Measured]:
    """{(batch size, compiled): samples/s, or why it failed}: BC loss forward, backward and
    an AdamW step on random windows (bfloat16 autocast on CUDA, as the trainers run)."""
    results: dict[tuple[int, bool], Measured] = {}
    for compiled in (False, True) if compile_unet else (False,):
        torch.manual_seed(0)
        policy = DiffusionPolicy(config).to(device).train()
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6)
        generator = torch.Generator(device=device).manual_seed(0)  # bc_loss draws its noise on the actions' device
        if compiled:
            policy.unet = torch.compile(policy.unet, dynamic=True, backend=backend)  # one graph for every batch size
        for batch in batch_sizes:
            obs = {"state": torch.randn(batch, config.n_obs_steps, STATE_DIM, device=device)}
            actions = torch.rand(batch, config.horizon, ACTION_DIM, device=device) * 2 - 1

            def step() -> None:
                with autocast(device, True):
                    loss = policy.bc_loss(obs, actions, generator=generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            try:
                for _ in range(2):
                    step()
                sync(device)
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                sync(device)
                results[batch, compiled] = batch * steps / (time.perf_counter() - start)
            except Exception as err:
                results[batch, compiled] = failure(err)
        if compiled:
            torch._dynamo.reset()
    return results


def chunk_sampler(policy: DiffusionPolicy, sampler: str, steps: int | None, seed: int
                  ) -> Callable[[dict[str, torch.Tensor], np.ndarray], np.ndarray]:
    """run_episodes' sampler: the executed actions (B, Ta, Da) of chunks sampled with `sampler`."""
    generator = torch.Generator().manual_seed(seed)

    def sample(obs: dict[str, torch.Tensor], envs: np.ndarray) -> np.ndarray:
        obs = {k: v.to(policy.device) for k, v in obs.items()}
        return policy.executed_actions(policy.sample_chunk(obs, generator, sampler, steps)).cpu().numpy()

    return sample


def measure_success(config: DiffusionPolicyConfig, args: argparse.Namespace) -> tuple[dict[str, Measured], float, str]:
    """({sampler label: mean eval_score, or why it failed}, expert's mean eval_score, how it was trained)."""
    env_id = task_spec(TASK).env_id(EMBODIMENT, "state")
    seeds = list(range(args.eval_seed, args.eval_seed + args.episodes))
    expert = scripted_episodes(TASK, EMBODIMENT, [1.0] * args.episodes, args.eval_seed, env_kwargs={"layout": LAYOUT})
    expert_score = float(np.mean([e.metadata["eval_score"] for e in expert]))
    demos = scripted_episodes(TASK, EMBODIMENT, [1.0] * args.bc_demos, args.demo_seed, env_kwargs={"layout": LAYOUT})
    bc = BCConfig(steps=args.bc_steps, eval_every=args.bc_steps, progress=not args.smoke, seed=args.seed,
                  trainer=TrainerConfig(learning_rate=args.lr, batch_size=args.bc_batch, device=str(args.device),
                                        warmup_steps=min(TrainerConfig().warmup_steps, args.bc_steps // 10)))
    trained = f"{args.bc_demos} demos, {args.bc_steps} steps × batch {args.bc_batch}, lr {args.lr:g}"
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            policy, report = pretrain(config, demos, Path(run_dir), bc)
    except Exception as err:
        return {label: failure(err) for label, _, _ in SAMPLERS}, expert_score, trained
    trained += f", {time.perf_counter() - start:.0f} s, val_loss {report.history[-1].get('val_loss', float('nan')):.3f}"
    scores: dict[str, Measured] = {}
    for label, sampler, steps in SAMPLERS:
        episodes = run_episodes(lambda: gymnasium.make(env_id, layout=LAYOUT), seeds, config,
                                chunk_sampler(policy, sampler, steps, args.seed))
        scores[label] = float(np.mean([e.metadata["eval_score"] for e in episodes]))
    return scores, expert_score, trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny UNet, 20 demos, 300 BC steps, 20 latency calls")
    size.add_argument("--smoke", action="store_true", help="every row in seconds: 2 demos, 2 BC steps, 1 episode")
    parser.add_argument("--unet", choices=("tiny", "cpu", "low-dim"), default=None, help="UNet preset (default tiny)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--calls", type=int, default=None, help="timed sample_chunk calls per sampler (default 50; 20 with --quick)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed BC updates per batch size (default 20; 5 with --quick)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--compile-backend", default=None, help='torch.compile backend (default "inductor"; "eager" with --smoke)')
    parser.add_argument("--bc-demos", type=int, default=None, help="expert demonstrations for BC (default 100; 20 with --quick)")
    parser.add_argument("--bc-steps", type=int, default=None, help="BC optimizer steps (default 6000; 300 with --quick)")
    parser.add_argument("--bc-batch", type=int, default=None, help="BC batch size (default 128; 64 with --quick)")
    parser.add_argument("--lr", type=float, default=None, help="BC learning rate (default 1e-3)")
    parser.add_argument("--episodes", type=int, default=None, help="evaluation episodes per sampler (default 20)")
    parser.add_argument("--eval-seed", type=int, default=1000, help="first evaluation seed (expert and policy)")
    parser.add_argument("--demo-seed", type=int, default=0, help="first demonstration seed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    preset = 2 if args.smoke else 1 if args.quick else 0
    for name, values in PRESETS.items():
        if getattr(args, name) is None:
            setattr(args, name, values[preset])
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    args.device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    config = DiffusionPolicyConfig(state_dim=STATE_DIM, action_dim=ACTION_DIM, unet=args.unet)
    compile_unet = not args.no_compile

    print("timing chunk sampling ...", file=sys.stderr, flush=True)
    latency = measure_latency(config, args.calls, compile_unet, args.device, args.compile_backend)
    print("timing BC updates ...", file=sys.stderr, flush=True)
    training = measure_training(config, (64, 256), args.train_steps, compile_unet, args.device, args.compile_backend)
    print(f"training BC on {args.bc_demos} demos, then {args.episodes} episodes per sampler ...", file=sys.stderr, flush=True)
    success, expert, trained = measure_success(config, args)

    print(f"machine: {machine_facts(args.device)}, device {args.device}")
    print(f"| diffusion policy, unet {args.unet!r} (H={config.horizon}, To={config.n_obs_steps}, Ta={config.n_action_steps}), "
          f"{args.device} | value | ratio |")
    print("|---|---:|---:|")
    base = latency["DDPM-100", False]
    compiled_name = "torch.compile" + ("" if args.compile_backend == "inductor" else f" ({args.compile_backend} backend)")
    for compiled in (False, True) if compile_unet else (False,):
        for label, _, _ in SAMPLERS:
            name = f"chunk latency at batch 1, {label}, {compiled_name if compiled else 'eager'} (ms p50 / p95; {args.calls} calls)"
            result = latency[label, compiled]
            if isinstance(result, str):
                print(f"| {name} | {result} | |")
            else:
                print(f"| {name} | {result[0] * 1e3:,.1f} / {result[1] * 1e3:,.1f} | "
                      f"{base[0] / result[0]:.1f}× / {base[1] / result[1]:.1f}× faster |")
    for compiled in (False, True) if compile_unet else (False,):
        for batch in (64, 256):
            name = f"BC training, batch {batch}, {compiled_name if compiled else 'eager'} (samples/s; fwd+bwd+AdamW)"
            result, reference = training[batch, compiled], training[64, False]
            if isinstance(result, str):
                print(f"| {name} | {result} | |")
            else:
                ratio = "" if isinstance(reference, str) else f"{result / reference:.2f} vs batch 64 eager"
                print(f"| {name} | {result:,.0f} | {ratio} |")
    print(f"| BC policy: {trained} | | |")
    print(f"| scripted expert, mean eval_score ({args.episodes} episodes, seeds {args.eval_seed}…{args.eval_seed + args.episodes - 1}) "
          f"| {expert:.3f} | 1.00 |")
    for label, _, _ in SAMPLERS:
        name = f"BC success, {label} (mean eval_score, same seeds)"
        result = success[label]
        if isinstance(result, str):
            print(f"| {name} | {result} | |")
        else:
            ratio = f"{result / expert:.2f} of expert" if expert > 0 else ""
            print(f"| {name} | {result:.3f} | {ratio} |")

    goal = f"goal: DDIM-10 ≥ {GOAL_SPEEDUP:g}× faster than DDPM-100 at equal BC success within {GOAL_POINTS:g} points"
    fast, slow = latency["DDIM-10", False], latency["DDPM-100", False]
    ddim, ddpm = success["DDIM-10"], success["DDPM-100"]
    if isinstance(ddim, str) or isinstance(ddpm, str):
        print(f"{goal}: not checked (BC {ddpm if isinstance(ddpm, str) else ddim})")
        return
    speedup, points = slow[0] / fast[0], abs(ddim - ddpm) * 100
    holds = speedup >= GOAL_SPEEDUP and points <= GOAL_POINTS
    print(f"{goal}: {'holds' if holds else 'does not hold'} — eager p50 speed-up {speedup:.1f}×, "
          f"BC success {ddim:.3f} (DDIM-10) vs {ddpm:.3f} (DDPM-100), {points:.1f} points apart "
          f"({args.episodes} episodes each; expert {expert:.3f})"
          + ("; the BC policy is far below the expert, so equal success says little" if max(ddim, ddpm) < 0.5 * expert else ""))


if __name__ == "__main__":
    main()
