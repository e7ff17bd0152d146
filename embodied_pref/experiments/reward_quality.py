"""Reward quality vs label budget: oracle labels on uniformly drawn pairs of training clips,
scored on held-out clips by preference accuracy and Spearman correlation with ground truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embodied_pref.data import OUTCOME_TARGETS
from embodied_pref.evaluation import RewardEvaluation, evaluate_reward
from embodied_pref.experiments.results import mean_std, save_results
from embodied_pref.experiments.xmagical_data import mixed_quality_pools
from embodied_pref.query_selection import select_pairs
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig, train_reward
from embodied_pref.segments import PreferencePairs, SegmentBatch
from embodied_pref.teachers import SyntheticTeacher, make_teacher

# The X-MAGICAL dense reward depends on the state reached, so the reward sees s_{t+1}.
XMAGICAL_REWARD_NET = RewardNetConfig(use_state=False, use_action=False, use_next_state=True)


@dataclass(frozen=True)
class RewardQualityConfig:
    """Budgets × seeds of the reward-quality experiment."""

    embodiment: str = "Gripper"
    """X-MAGICAL SweepToTop embodiment."""
    budgets: tuple[int, ...] = (100, 500)
    """Numbers of oracle labels."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Independent repetitions (episodes, pairs, initialization)."""
    train_episodes: int = 60
    """Episodes whose clips may be labelled."""
    test_episodes: int = 30
    """Held-out episodes for evaluation."""
    clip_length: int = 50
    """Steps per clip."""
    test_pairs: int = 2000
    """Held-out pairs for preference accuracy."""
    teacher: str = "oracle"
    """B-Pref teacher that labels the training pairs."""
    out: Path = Path("runs/experiments/reward_quality")
    """Directory for results.json and table.md."""


def teacher_pairs(
    pool: SegmentBatch, first: np.ndarray, second: np.ndarray, teacher: SyntheticTeacher
) -> PreferencePairs:
    """The pairs (pool[first[i]], pool[second[i]]) labelled by `teacher`; skipped pairs dropped."""
    outcomes = teacher.label(pool.gt_rewards[first], pool.gt_rewards[second])
    keep = np.array([o in OUTCOME_TARGETS for o in outcomes])
    targets = np.array([OUTCOME_TARGETS.get(o, np.nan) for o in outcomes], dtype=np.float32)
    return PreferencePairs(pool[first[keep]], pool[second[keep]], targets[keep])


def fit_and_evaluate(
    pairs: PreferencePairs,
    test: SegmentBatch,
    seed: int,
    reward_config: RewardNetConfig = XMAGICAL_REWARD_NET,
    max_epochs: int = RewardTrainingConfig.max_epochs,
) -> tuple[RewardEnsemble, RewardEvaluation]:
    """A fresh ensemble fit to `pairs`, scored on the held-out clips `test`."""
    ensemble = RewardEnsemble(test.observations.shape[-1], test.actions.shape[-1], reward_config)
    train_reward(ensemble, pairs, RewardTrainingConfig(seed=seed, progress=False, max_epochs=max_epochs))
    return ensemble, evaluate_reward(ensemble, test, seed=seed)


def run_reward_quality(config: RewardQualityConfig) -> dict:
    """Runs every (seed, budget); writes results.json and table.md to `config.out`."""
    rows = []
    for seed in tqdm(config.seeds, desc="seeds"):
        pools = mixed_quality_pools(config.embodiment, seed, config.train_episodes,
                                    config.test_episodes, config.clip_length)
        for budget in config.budgets:
            teacher = make_teacher(config.teacher, seed=seed)
            selected = select_pairs(pools.train, budget, np.random.default_rng([seed, budget]))
            pairs = teacher_pairs(pools.train, selected.first, selected.second, teacher)
            _, evaluation = fit_and_evaluate(pairs, pools.test, seed)
            rows.append({"seed": seed, "budget": budget, **asdict(evaluation)})
    table = ["| labels | held-out accuracy (mean ± std) | Spearman (mean ± std) | seeds |",
             "|---:|---:|---:|---:|"]
    for budget in config.budgets:
        at_budget = [r for r in rows if r["budget"] == budget]
        table.append(f"| {budget} | {mean_std([r['accuracy'] for r in at_budget])} | "
                     f"{mean_std([r['spearman'] for r in at_budget])} | {len(config.seeds)} |")
    return save_results(config.out, config, rows, table)
