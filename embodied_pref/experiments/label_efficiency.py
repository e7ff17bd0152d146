"""Label efficiency of query selection: held-out reward quality as labels accumulate, for
uniform vs active (ensemble-disagreement) selection from the same clip pool."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embodied_pref.distributed import is_main_process
from embodied_pref.experiments.results import mean_std, save_results
from embodied_pref.experiments.reward_quality import fit_and_evaluate, teacher_pairs
from embodied_pref.experiments.xmagical_data import mixed_quality_pools
from embodied_pref.plots import plot_curves
from embodied_pref.query_selection import select_pairs
from embodied_pref.teachers import make_teacher


@dataclass(frozen=True)
class LabelEfficiencyConfig:
    """Label budgets, selection methods and seeds compared."""

    embodiment: str = "Gripper"
    """X-MAGICAL SweepToTop embodiment."""
    budgets: tuple[int, ...] = (20, 40, 80, 160, 320)
    """Cumulative numbers of asked pairs (each asked once) at which the reward is refit and
    evaluated; the first batch is uniform."""
    methods: tuple[str, ...] = ("uniform", "disagreement")
    """Query selection methods compared."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Independent repetitions."""
    train_episodes: int = 60
    test_episodes: int = 30
    clip_length: int = 50
    teacher: str = "oracle"
    """B-Pref teacher that labels the pairs."""
    out: Path = Path("runs/experiments/label_efficiency")
    """Directory for results.json, table.md and plots."""


def run_label_efficiency(config: LabelEfficiencyConfig) -> dict:
    """Writes results.json, table.md and label_efficiency.png to `config.out`."""
    rows = []
    for seed in tqdm(config.seeds, desc="seeds"):
        pools = mixed_quality_pools(config.embodiment, seed, config.train_episodes,
                                    config.test_episodes, config.clip_length)
        for method in config.methods:
            rng = np.random.default_rng([seed, 7])
            teacher = make_teacher(config.teacher, seed=seed)
            selected = select_pairs(pools.train, config.budgets[0], rng)
            asked = list(zip(selected.first, selected.second))
            pairs = teacher_pairs(pools.train, selected.first, selected.second, teacher)
            ensemble, evaluation = fit_and_evaluate(pairs, pools.test, seed)
            rows.append({"seed": seed, "method": method, "budget": config.budgets[0], **asdict(evaluation)})
            for budget in config.budgets[1:]:
                selected = select_pairs(pools.train, budget - len(asked), rng, method, ensemble, exclude=asked)
                asked += zip(selected.first, selected.second)
                new = teacher_pairs(pools.train, selected.first, selected.second, teacher)
                pairs = pairs.concatenate(new)
                ensemble, evaluation = fit_and_evaluate(pairs, pools.test, seed)
                rows.append({"seed": seed, "method": method, "budget": budget, **asdict(evaluation)})

    curves = {
        metric: {
            method: [
                [r[metric] for r in rows if r["method"] == method and r["budget"] == b]
                for b in config.budgets
            ]
            for method in config.methods
        }
        for metric in ("accuracy", "spearman")
    }
    if is_main_process():
        config.out.mkdir(parents=True, exist_ok=True)
        plot_curves(
            config.budgets, curves, config.out / "label_efficiency.png",
            title=f"X-MAGICAL SweepToTop-{config.embodiment}: held-out reward quality",
            xlabel="labels",
        )
    table = ["| labels | " + " | ".join(f"{m} accuracy | {m} Spearman" for m in config.methods) + " |",
             "|---:|" + "---:|" * (2 * len(config.methods))]
    for i, budget in enumerate(config.budgets):
        cells = [mean_std(curves[metric][method][i]) for method in config.methods for metric in ("accuracy", "spearman")]
        table.append(f"| {budget} | " + " | ".join(cells) + " |")
    return save_results(config.out, config, rows, table)
