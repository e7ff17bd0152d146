"""Our PbRL loop next to imitation 1.0.1's `PreferenceComparisons` on X-MAGICAL (Gripper, state):
the same env, the same oracle (the rational teacher: the clip with the higher ground-truth
return wins, ties count half), the same label budget, fragment length and PPO step count, one
training seed per run. Each system is run as its authors set it up: ours as `embodied-pref
demo` does (24 mixed-quality scripted episodes seed the clip pool, 4 rounds, a bootstrapped
ensemble, disagreement queries, the demo's PPO on the reward standardized over the pool);
imitation as its
preference-comparisons tutorial does (its agent's own rollouts with 5% exploration, 10% of the
labels before any agent training, a hyperbolic query schedule, BasicRewardNet with a running
input norm, the tutorial's PPO settings), its reward net given our net's input, r(s').

Both rewards are scored by our metrics on the same held-out clips (cut from mixed-quality
scripted episodes no run trained on); both policies act deterministically for the ground-truth
return and `eval_score` on the demo layout (one start state) and on the randomized layout.
Every (system, task, budget, seed) cell runs in its own subprocess, on one torch thread, so its
wall time and peak RSS are its own; results.json is rewritten after each cell and cells already in it are skipped,
so an interrupted run resumes.

    .venv/bin/python bench/pbrl_vs_imitation.py [--smoke] [--tasks sweep avoid] [--seeds 0 1 2 3 4]
        [--budgets 160 500] [--ppo-steps 131072] [--out runs/bench_pbrl_vs_imitation]

Writes <out>/results.json and <out>/table.md and prints the table. --smoke: tiny sizes through
every code path (a minute or two on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import gymnasium
import numpy as np

from embodied_pref.durable import write_atomic
from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.process_memory import peak_rss_bytes

SYSTEMS = ("ours", "imitation")
TASKS = {"sweep": "xmagical-sweep", "avoid": "xmagical-avoid"}
EMBODIMENT = "Gripper"
LAYOUTS = ("demo", "random")
ROUNDS = 4
SMOKE = {"tasks": ["sweep"], "seeds": [0], "budgets": [16], "ppo_steps": 4096}
"""Sizes of --smoke (with `SMOKE_CELL`): every code path of both systems; flags given beside it win."""
SMOKE_CELL = {"initial_episodes": 4, "held_out_episodes": 4, "eval_episodes": 1, "reward_epochs": 3}
"""Agent-training rounds of each system (imitation: its initial round + 3 iterations)."""


@dataclass(frozen=True)
class Cell:
    """One run of one system."""

    system: str
    """ours | imitation."""
    task: str
    """sweep | avoid (keys of TASKS)."""
    budget: int
    """Labels asked in all."""
    seed: int
    """Seeds the run's training (the held-out clips and evaluation episodes depend on it too,
    identically for both systems)."""
    ppo_steps: int
    """PPO environment steps in all."""
    clip_length: int = 50
    """Steps per clip (imitation's fragment_length)."""
    initial_episodes: int = 24
    """Ours: scripted episodes of mixed quality seeding the clip pool."""
    held_out_episodes: int = 16
    """Mixed-quality scripted episodes the held-out clips are cut from (8 clips each)."""
    eval_episodes: int = 10
    """Evaluation episodes per layout."""
    reward_epochs: int = 100
    """Ours: upper bound on reward-fitting epochs (early stopping decides)."""

    @property
    def key(self) -> str:
        return f"{self.system}/{self.task}/{self.budget}/{self.seed}"


def held_out_clips(cell: Cell):
    """8 clips from each of `held_out_episodes` mixed-quality episodes, seeds far from any
    episode a run trains on; the same for both systems."""
    from embodied_pref.experiments.tasks import scripted_clips
    from embodied_pref.experiments.xmagical_data import MIXED_QUALITIES

    qualities = [MIXED_QUALITIES[i % len(MIXED_QUALITIES)] for i in range(cell.held_out_episodes)]
    return scripted_clips(TASKS[cell.task], EMBODIMENT, qualities, cell.seed * 100_000 + 90_000, cell.clip_length, 8,
                          np.random.default_rng(cell.seed))


def score_reward(reward_fn: Callable, clips, seed: int, n_pairs: int = 2000) -> dict:
    """Held-out preference accuracy (P(first ≻ second) = σ(R1 − R2) of clip returns against
    the ground-truth order) and Spearman of learned vs true clip returns."""
    from embodied_pref.metrics import preference_accuracy, spearman
    from embodied_pref.query_selection import random_pairs

    obs, acts, next_obs = (t.reshape(-1, t.shape[-1]).numpy() for t in clips.tensors())
    learned = reward_fn(obs, acts, next_obs).reshape(len(clips), -1).sum(-1).astype(np.float64)
    gt = clips.gt_returns
    first, second = random_pairs(len(clips), n_pairs, np.random.default_rng(seed))
    targets = np.where(gt[first] > gt[second], 1.0, np.where(gt[first] < gt[second], 0.0, 0.5))
    prob = 1.0 / (1.0 + np.exp(-np.clip(learned[first] - learned[second], -50, 50)))
    return {"accuracy": preference_accuracy(prob, targets).accuracy, "spearman": spearman(learned, gt)}


def evaluate_actor(act: Callable | None, cell: Cell) -> dict:
    """Deterministic episodes on each layout: mean GT return, `eval_score` and (avoid) the
    share violating the hidden preference. `act` None: the uniform random policy."""
    from embodied_pref.experiments.tasks import task_spec
    from embodied_pref.rollout import rollout

    spec = task_spec(TASKS[cell.task])
    result = {}
    for layout in LAYOUTS:
        env = gymnasium.make(spec.env_id(EMBODIMENT, "state"), layout=layout)
        env.action_space.seed(cell.seed)
        policy = act if act is not None else (lambda obs: env.action_space.sample())
        try:
            # Seeds no training episode uses; the same for both systems.
            episodes = [rollout(env, policy, 2_000_000 + i) for i in range(cell.eval_episodes)]
        finally:
            env.close()
        result[layout] = {
            "return": float(np.mean([e.rewards.sum() for e in episodes])),
            "score": float(np.mean([e.metadata["eval_score"] for e in episodes])),
            "violation_rate": float(np.mean([spec.violates(e) for e in episodes])),
        }
    return result


def run_ours(cell: Cell, run_dir: Path) -> tuple[Callable, Callable, int]:
    """The demo's loop with the demo's PPO and reward-fitting settings; returns (reward_fn,
    act, PPO steps taken)."""
    from embodied_pref.experiments.reward_quality import XMAGICAL_REWARD_NET
    from embodied_pref.experiments.tasks import scripted_episodes, task_spec
    from embodied_pref.experiments.xmagical_data import MIXED_QUALITIES
    from embodied_pref.gathering import TeacherGatherer, scaled_teacher
    from embodied_pref.experiments.demo import DemoConfig
    from embodied_pref.loop import run_pbrl_loop
    from embodied_pref.reward_nets import RewardEnsemble
    from embodied_pref.store import PreferenceDataset
    from policies.ppo import PPOAgent

    spec = task_spec(TASKS[cell.task])
    qualities = [MIXED_QUALITIES[i % len(MIXED_QUALITIES)] for i in range(cell.initial_episodes)]
    initial = scripted_episodes(TASKS[cell.task], EMBODIMENT, qualities, cell.seed * 100_000)
    teacher = scaled_teacher("oracle", initial, cell.clip_length, cell.seed)
    dataset = PreferenceDataset.create(run_dir / "dataset", description=f"bench {cell.key}")
    demo = DemoConfig()
    agent = PPOAgent(spec.env_id(EMBODIMENT, "state"), replace(demo.ppo, seed=cell.seed))
    loop = replace(demo.loop, iterations=ROUNDS, labels_per_iteration=math.ceil(cell.budget / ROUNDS),
                   clip_length=cell.clip_length, policy_steps_per_iteration=cell.ppo_steps // ROUNDS, seed=cell.seed)
    training = replace(demo.reward_training, max_epochs=cell.reward_epochs, seed=cell.seed)
    run_pbrl_loop(dataset, agent, TeacherGatherer(dataset, teacher), run_dir, lambda: initial, loop,
                  XMAGICAL_REWARD_NET, training, eval_episodes=1)
    labels = len(dataset.labels())
    dataset.close()
    if labels != cell.budget:
        raise RuntimeError(f"{cell.key}: the loop asked {labels} labels, expected the budget {cell.budget} "
                           f"(use a budget divisible by {ROUNDS})")
    ensemble = RewardEnsemble.load(run_dir / "reward.pt")
    return ensemble.predict, lambda obs: agent.act(obs, deterministic=True), agent.model.num_timesteps


def run_imitation(cell: Cell) -> tuple[Callable, Callable, int]:
    """imitation's tutorial set-up with our oracle and sizes; returns (reward_fn, act, PPO steps)."""
    from imitation.algorithms import preference_comparisons as pc
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util.networks import RunningNorm
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import set_random_seed

    from embodied_pref.experiments.tasks import task_spec

    set_random_seed(cell.seed)  # the reward net is initialized before PPO seeds torch
    rng = np.random.default_rng(cell.seed)
    venv = make_vec_env(task_spec(TASKS[cell.task]).env_id(EMBODIMENT, "state"), n_envs=4, seed=cell.seed)
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space, use_state=False, use_action=False,
                                use_next_state=True, normalize_input_layer=RunningNorm)
    agent = PPO("MlpPolicy", venv, seed=cell.seed, n_steps=2048 // venv.num_envs, batch_size=64, ent_coef=0.01,
                learning_rate=2e-3, clip_range=0.1, gae_lambda=0.95, gamma=0.97, n_epochs=10, verbose=0)
    trainer = pc.AgentTrainer(agent, reward_net, venv, rng, exploration_frac=0.05)
    comparisons = pc.PreferenceComparisons(
        trainer, reward_net, num_iterations=ROUNDS - 1,
        fragmenter=pc.RandomFragmenter(rng=rng, warning_threshold=0),
        # temperature 0: the rational oracle (the higher return wins, ties 0.5), as ours.
        preference_gatherer=pc.SyntheticGatherer(temperature=0, rng=rng),
        reward_trainer=pc.BasicRewardTrainer(pc.PreferenceModel(reward_net), pc.CrossEntropyRewardLoss(),
                                             epochs=3, rng=rng),
        fragment_length=cell.clip_length, transition_oversampling=1, initial_comparison_frac=0.1,
        initial_epoch_multiplier=4, query_schedule="hyperbolic")
    # It trains the agent in each of its num_iterations + 1 rounds for total_timesteps //
    # num_iterations steps: ask for the share that makes the rounds add up to ppo_steps.
    comparisons.train(total_timesteps=cell.ppo_steps * (ROUNDS - 1) // ROUNDS, total_comparisons=cell.budget)

    def reward_fn(obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        return reward_net.predict(obs, acts, next_obs, np.zeros(len(obs), dtype=bool))

    return reward_fn, lambda obs: agent.predict(obs, deterministic=True)[0], agent.num_timesteps


def run_cell(cell: Cell) -> dict:
    """Train one system, then score its reward and policy (training time only in `wall_s`)."""
    clips = held_out_clips(cell)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pbrl_vs_imitation_") as tmp:
        reward_fn, act, steps = run_ours(cell, Path(tmp)) if cell.system == "ours" else run_imitation(cell)
        wall = time.perf_counter() - start
        result = {"cell": asdict(cell), "wall_s": wall, "ppo_steps_taken": int(steps),
                  **score_reward(reward_fn, clips, cell.seed), "policy": evaluate_actor(act, cell)}
    result["peak_rss_mb"] = peak_rss_bytes() / 2**20
    return result


def run_in_subprocess(cell: Cell) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--cell", json.dumps(asdict(cell))],
                               capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"{cell.key} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def random_baseline(task: str, seed: int, eval_episodes: int) -> dict:
    cell = Cell("random", task, 0, seed, 0, eval_episodes=eval_episodes)
    return evaluate_actor(None, cell)


def mean_sd(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def ratio(ours: list[float], theirs: list[float], floor: float = 0.0) -> str:
    """mean(ours − floor) / mean(theirs − floor)."""
    a, b = np.mean(ours) - floor, np.mean(theirs) - floor
    return f"{a / b:.2f}" if b and np.isfinite(a / b) else "—"


Column = tuple[str, Callable[[dict], float] | None, Callable[[dict], float] | None, int]
"""(name, value of a result, its floor in a baseline, digits): ratios of returns compare gains
over the random policy, since the returns are negative."""
COLUMNS: tuple[Column, ...] = (
    ("held-out acc", lambda r: r["accuracy"], None, 3),
    ("Spearman", lambda r: r["spearman"], None, 3),
    *((f"{what} ({layout} layout)", lambda r, k=key, l=layout: r["policy"][l][k],
       (lambda b, l=layout: b[l]["return"]) if key == "return" else None, 2)
      for layout in LAYOUTS for what, key in (("return", "return"), ("score", "score"))),
    ("violations (demo / random)", None, None, 2),
    ("wall s", lambda r: r["wall_s"], None, 0),
    ("peak RSS MB", lambda r: r["peak_rss_mb"], None, 0),
)


def table(results: dict, baselines: dict) -> str:
    """One row per (task, budget, system) with mean ± sd over seeds, a ratio row ours/imitation
    (returns: ratio of the gains over the random policy), and the random policy's row."""
    head = "| task | labels | system | seeds | " + " | ".join(column[0] for column in COLUMNS) + " |"
    lines = [head, "|" + "---|" * 4 + "---:|" * len(COLUMNS)]
    groups = sorted({(r["cell"]["task"], r["cell"]["budget"]) for r in results.values()})
    for task, budget in groups:
        by_system = {s: [r for r in results.values() if r["cell"]["task"] == task and r["cell"]["budget"] == budget
                         and r["cell"]["system"] == s] for s in SYSTEMS}
        for system, rows in by_system.items():
            if not rows:
                continue
            cells = []
            for _, get, _, digits in COLUMNS:
                if get is None:
                    cells.append(" / ".join(f"{np.mean([r['policy'][l]['violation_rate'] for r in rows]):.2f}"
                                            for l in LAYOUTS))
                else:
                    cells.append(mean_sd([get(r) for r in rows], digits))
            seeds = ",".join(str(r["cell"]["seed"]) for r in sorted(rows, key=lambda r: r["cell"]["seed"]))
            lines.append(f"| {task} | {budget} | {system} | {seeds} | " + " | ".join(cells) + " |")
        if all(by_system.values()):
            cells = [("—" if get is None else
                      ratio([get(r) for r in by_system["ours"]], [get(r) for r in by_system["imitation"]],
                            0.0 if floor is None else floor(baselines[task])))
                     for _, get, floor, _ in COLUMNS]
            lines.append(f"| {task} | {budget} | ours / imitation | | " + " | ".join(cells) + " |")
    for task, by_layout in sorted(baselines.items()):
        cells = ["—", "—"]
        for layout in LAYOUTS:
            cells += [f"{by_layout[layout]['return']:.2f}", f"{by_layout[layout]['score']:.2f}"]
        cells += [" / ".join(f"{by_layout[l]['violation_rate']:.2f}" for l in LAYOUTS), "—", "—"]
        lines.append(f"| {task} | — | random policy | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--budgets", nargs="+", type=int, default=[160, 500])
    parser.add_argument("--ppo-steps", type=int, default=131_072)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench_pbrl_vs_imitation"))
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parse_with_smoke(parser, SMOKE, help="tiny sizes: sweep, seed 0, 16 labels, 4096 PPO steps, "
                            "short fits and evaluations")
    if args.cell:
        import torch

        # One thread, as `embodied-pref` runs (its networks are small and the simulator shares
        # the cores); both systems alike. With torch's default of one per core, a run's numbers
        # differ (sums reduce in another order) and a busy machine slows it several times over.
        torch.set_num_threads(1)
        print(json.dumps(run_cell(Cell(**json.loads(args.cell)))))
        return

    overrides: dict = {}
    if args.smoke:
        overrides = SMOKE_CELL
        if args.out == parser.get_default("out"):
            args.out = Path(tempfile.mkdtemp(prefix="bench_pbrl_vs_imitation_smoke_"))
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.exists() else {"cells": {}, "random": {}}
    results, baselines = saved["cells"], saved["random"]

    def save() -> None:
        write_atomic(results_path, json.dumps({"cells": results, "random": baselines}, indent=1).encode())

    for task in args.tasks:
        if task not in baselines:
            baselines[task] = random_baseline(task, 0, overrides.get("eval_episodes", Cell.eval_episodes))
            save()
        for budget in args.budgets:
            for seed in args.seeds:
                for system in args.systems:
                    cell = replace(Cell(system, task, budget, seed, args.ppo_steps), **overrides)
                    if cell.key in results and results[cell.key]["cell"] == asdict(cell):
                        continue
                    print(f"[bench] {cell.key}: {cell.ppo_steps} PPO steps", flush=True)
                    results[cell.key] = run_in_subprocess(cell)
                    r = results[cell.key]
                    print(f"[bench] {cell.key}: acc {r['accuracy']:.3f}, Spearman {r['spearman']:.3f}, "
                          f"return demo {r['policy']['demo']['return']:.2f} / random layout "
                          f"{r['policy']['random']['return']:.2f}, {r['wall_s']:.0f}s, {r['peak_rss_mb']:.0f} MB",
                          flush=True)
                    save()
    text = table(results, baselines)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    print(f"[bench] {results_path}, {args.out / 'table.md'}")


if __name__ == "__main__":
    main()
