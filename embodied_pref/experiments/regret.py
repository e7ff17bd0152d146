"""Regret vs partial return on the delivery domain (Knox et al., TMLR; AAAI 2024).

On the papers' shared random MDPs, label segment pairs drawn from the shared pair files with a
partial-return or a regret teacher, fit three learners and score the policies they give by the
papers' scaled return (optimal 1, uniformly random 0):
- partial_return: linear reward under the partial-return model, then its optimal policy;
- regret: linear reward under the regret model (V̂* from successor features of a policy set),
  then its optimal policy;
- advantage_greedy: a table Â fit with the partial-return model, acted on greedily;
- advantage_as_reward: the same Â mistaken for a reward: its optimal policy.
Paired Wilcoxon signed-rank tests (over MDPs and seeds) compare learners at each budget.

The work is many small linear solves: run it with one BLAS thread (OMP_NUM_THREADS=1), which
is several times faster than two threads contending. The full run (50 MDPs × 3 seeds, four
budgets) takes about a quarter of an hour on one core; `quick` well under a minute.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.stats
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from embodied_pref.distributed import is_main_process
from embodied_pref.experiments.presets import with_preset
from embodied_pref.experiments.results import save_results
from embodied_pref.plots import plot_curves
from embodied_pref.tabular_learners import (
    SOFT_MAX_TEMPERATURE,
    TabularPreferences,
    fit_advantage_table,
    fit_partial_return_reward,
    fit_regret_reward,
    greedy_policy,
    successor_features,
)
from embodied_pref.teachers import preference_targets
from envs.gridworld import (
    SHARED_MDP_IDS,
    DeliveryMDP,
    load_segment_pairs,
    load_shared_mdp,
    policy_evaluation,
    random_reward_weights,
    return_scale,
    solve_optimal,
    uniform_policy,
)

TEACHERS = ("partial_return", "regret")
LEARNERS = ("partial_return", "regret", "advantage_greedy", "advantage_as_reward")
COMPARISONS = (("regret", "partial_return"), ("advantage_greedy", "advantage_as_reward"),
               ("advantage_greedy", "regret"))
"""Learner pairs tested against each other (Wilcoxon signed-rank, two-sided)."""
NEAR_OPTIMAL = 0.9
"""A policy is near-optimal when its scaled return exceeds this."""


@dataclass(frozen=True)
class RegretExperimentConfig:
    """MDPs, label budgets, teachers and learner settings of the regret experiment."""

    budgets: tuple[int, ...] = (300, 1000, 3000, 10000)
    """Numbers of labelled pairs; each budget's pairs extend the previous one's (same draw)."""
    n_mdps: int = 50
    """How many of the 50 shared MDPs (ids 100, 101, ...) to run."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Repetitions per MDP: each draws its own pairs, policy set and restarts."""
    teachers: tuple[str, ...] = TEACHERS
    """Preference models that label the pairs: partial_return and/or regret."""
    teacher_temperature: float = 0.0
    """0: noiseless labels (equal scores give a tie, 0.5); T > 0: sampled with sigmoid(Δscore / T)."""
    policy_set_size: int = 100
    """Random reward weights whose optimal policies, with the uniform policy, form the regret learner's
    policy set (duplicates dropped); half drawn like the MDPs' weights, half standard normal."""
    soft_max_temperature: float = SOFT_MAX_TEMPERATURE
    """Temperature of the soft maximum over the policy set that estimates V* (paper: 0.001)."""
    l2: float = 1e-6
    """L2 penalty on the learned weights and advantage table (mean loss + l2 ||θ||²)."""
    regret_restarts: int = 3
    """Random restarts of the regret learner's optimizer, besides the one from 0."""
    quick: bool = False
    """Preset for a smoke run of under a minute: n_mdps 8, budgets (300, 3000), seeds (0,), for
    those left at their defaults (a flag given beside it wins)."""
    data_dir: Path | None = None
    """Directory of the shared MDPs; default: shared/data/delivery_mdps beside the repository."""
    out: Path = Path("runs/experiments/regret")
    """Directory for results.json, table.md and regret.png."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.teachers) - set(TEACHERS))
        if unknown or not self.teachers:
            raise ValueError(f"RegretExperimentConfig.teachers: expected some of {TEACHERS}, found {self.teachers}")
        if not self.budgets or min(self.budgets) < 1 or list(self.budgets) != sorted(set(self.budgets)):
            raise ValueError(f"RegretExperimentConfig.budgets: expected increasing positive counts, found {self.budgets}")
        if not 1 <= self.n_mdps <= len(SHARED_MDP_IDS):
            raise ValueError(f"RegretExperimentConfig.n_mdps: expected 1..{len(SHARED_MDP_IDS)}, found {self.n_mdps}")
        if not self.seeds:
            raise ValueError("RegretExperimentConfig.seeds: expected at least one seed")
        for name in ("teacher_temperature", "l2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"RegretExperimentConfig.{name}: expected >= 0, found {getattr(self, name)}")
        if not self.soft_max_temperature > 0 or self.policy_set_size < 1 or self.regret_restarts < 0:
            raise ValueError("RegretExperimentConfig: expected soft_max_temperature > 0, policy_set_size >= 1, "
                             f"regret_restarts >= 0; found {self.soft_max_temperature}, {self.policy_set_size}, "
                             f"{self.regret_restarts}")

    def resolved(self, given: Collection[str] = ()) -> RegretExperimentConfig:
        """The settings actually run: the quick preset applied when `quick` is set, under the
        flags given beside it (and those named in `given`, see `with_preset`)."""
        if not self.quick:
            return self
        return with_preset(replace(self, quick=False), {"n_mdps": 8, "budgets": (300, 3000), "seeds": (0,)}, given)


def policy_set(mdp: DeliveryMDP, size: int, rng: np.random.Generator) -> np.ndarray:
    """Optimal policies of `size` random reward weights and the uniform policy, without
    duplicates: (P, S, A) probabilities."""
    n_features = mdp.features.shape[-1]
    weights = np.concatenate([random_reward_weights(rng, size - size // 2), rng.normal(size=(size // 2, n_features))])
    optimal = {tuple(solve_optimal(mdp.next_state, mdp.features @ w, mdp.gamma, mdp.absorbing).policy)
               for w in weights}
    one_hot = np.eye(mdp.n_actions)[np.array(sorted(optimal))]
    return np.concatenate([one_hot, uniform_policy(mdp.n_states, mdp.n_actions)[None]])


def segment_scores(mdp: DeliveryMDP, advantage: np.ndarray, states: np.ndarray, actions: np.ndarray) -> dict:
    """Each teacher's score of segments (higher is better): states (..., L+1), actions (..., L) -> (...)."""
    steps = states[..., :-1]
    return {"partial_return": mdp.reward[steps, actions].sum(-1), "regret": advantage[steps, actions].sum(-1)}


def _scaled(mdp: DeliveryMDP, scale, policy: np.ndarray) -> float:
    values = policy_evaluation(mdp.next_state, mdp.reward, mdp.gamma, policy, mdp.absorbing)
    return scale(float(values[mdp.start_states].mean()))


def _planned(mdp: DeliveryMDP, reward: np.ndarray) -> np.ndarray:
    return solve_optimal(mdp.next_state, reward, mdp.gamma, mdp.absorbing).policy


def run_mdp(mdp_id: int, config: RegretExperimentConfig, seed: int) -> list[dict]:
    """Every (budget, teacher, learner) on one shared MDP: a list of result rows."""
    mdp = load_shared_mdp(mdp_id, config.data_dir)
    starts, actions = load_segment_pairs(mdp_id, config.data_dir)
    optimal = solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing)
    scale = return_scale(mdp.next_state, mdp.reward, mdp.gamma, mdp.start_states, mdp.absorbing)
    rng = np.random.default_rng([seed, mdp_id])
    psi = successor_features(mdp.next_state, mdp.features, policy_set(mdp, config.policy_set_size, rng), mdp.gamma)

    order = rng.permutation(len(starts))[: config.budgets[-1]]
    if len(order) < config.budgets[-1]:
        raise ValueError(f"MDP_{mdp_id}: {len(starts)} shared segment pairs, fewer than the budget {config.budgets[-1]}")
    pair_actions = actions[order]
    pair_states = mdp.segment_states(starts[order], pair_actions)
    scores = segment_scores(mdp, optimal.advantage, pair_states, pair_actions)
    rows = []
    for teacher in config.teachers:
        targets = preference_targets(scores[teacher][:, 0], scores[teacher][:, 1], config.teacher_temperature,
                                     rng=np.random.default_rng([seed, mdp_id, 1]))
        for budget in config.budgets:
            prefs = TabularPreferences(pair_states[:budget], pair_actions[:budget], targets[:budget])
            w_pr = fit_partial_return_reward(mdp.features, prefs, config.l2)
            w_regret = fit_regret_reward(mdp.features, psi, prefs, mdp.gamma, config.soft_max_temperature,
                                         config.l2, config.regret_restarts, seed)
            advantage = fit_advantage_table(mdp.n_states, mdp.n_actions, prefs, config.l2)
            policies = {
                "partial_return": _planned(mdp, mdp.features @ w_pr),
                "regret": _planned(mdp, mdp.features @ w_regret),
                "advantage_greedy": greedy_policy(advantage),
                "advantage_as_reward": _planned(mdp, advantage),
            }
            for learner, policy in policies.items():
                value = _scaled(mdp, scale, policy)
                rows.append({"mdp_id": mdp_id, "seed": seed, "teacher": teacher, "budget": budget,
                             "learner": learner, "scaled_return": value, "near_optimal": bool(value > NEAR_OPTIMAL),
                             "ties": int((targets[:budget] == 0.5).sum())})
    return rows


def _select(rows: list[dict], teacher: str, budget: int, learner: str) -> np.ndarray:
    picked = sorted((r["mdp_id"], r["seed"], r["scaled_return"]) for r in rows
                    if r["teacher"] == teacher and r["budget"] == budget and r["learner"] == learner)
    return np.array([v for *_, v in picked])


def wilcoxon(first: np.ndarray, second: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples; nan when every difference is 0."""
    if len(first) == 0 or np.allclose(first, second, rtol=0, atol=1e-12):
        return math.nan
    return float(scipy.stats.wilcoxon(first, second).pvalue)


def summarize(rows: list[dict], config: RegretExperimentConfig) -> tuple[list[dict], list[dict], list[str]]:
    """Per (teacher, budget, learner) means, per comparison p-values, and the markdown table."""
    summary, tests = [], []
    for teacher in config.teachers:
        for budget in config.budgets:
            for learner in LEARNERS:
                values = _select(rows, teacher, budget, learner)
                summary.append({"teacher": teacher, "budget": budget, "learner": learner, "n": len(values),
                                "mean_scaled_return": float(values.mean()),
                                "near_optimal_share": float((values > NEAR_OPTIMAL).mean())})
            for a, b in COMPARISONS:
                first, second = _select(rows, teacher, budget, a), _select(rows, teacher, budget, b)
                tests.append({"teacher": teacher, "budget": budget, "first": a, "second": b,
                              "mean_difference": float((first - second).mean()), "p_value": wilcoxon(first, second)})

    def cell(teacher: str, budget: int, learner: str) -> str:
        entry = next(s for s in summary if (s["teacher"], s["budget"], s["learner"]) == (teacher, budget, learner))
        return f"{entry['mean_scaled_return']:.3f} ({entry['near_optimal_share']:.2f})"

    n = len(config.seeds) * config.n_mdps
    table = [f"Mean scaled return (share of near-optimal policies, scaled return > {NEAR_OPTIMAL}) over "
             f"{config.n_mdps} shared MDPs × {len(config.seeds)} seed(s) = {n} runs per cell.", "",
             "| teacher | labels | " + " | ".join(LEARNERS) + " |", "|---|---:|" + "---:|" * len(LEARNERS)]
    for teacher in config.teachers:
        for budget in config.budgets:
            table.append(f"| {teacher} | {budget} | " + " | ".join(cell(teacher, budget, x) for x in LEARNERS) + " |")
    table += ["", "Wilcoxon signed-rank tests (two-sided, paired over runs) of scaled return: "
              "mean difference first − second, p-value.", "",
              "| teacher | labels | " + " | ".join(f"{a} vs {b}" for a, b in COMPARISONS) + " |",
              "|---|---:|" + "---:|" * len(COMPARISONS)]
    for teacher in config.teachers:
        for budget in config.budgets:
            cells = [f"{t['mean_difference']:+.3f}, p = {t['p_value']:.3g}" for t in tests
                     if (t["teacher"], t["budget"]) == (teacher, budget)]
            table.append(f"| {teacher} | {budget} | " + " | ".join(cells) + " |")
    return summary, tests, table


def run_regret_experiment(config: RegretExperimentConfig) -> dict:
    """Runs every MDP and seed; writes results.json, table.md and regret.png to `config.out`."""
    config = config.resolved()
    rows = []
    jobs = [(mdp_id, seed) for mdp_id in SHARED_MDP_IDS[: config.n_mdps] for seed in config.seeds]
    # The solves are small: BLAS threads would only contend with each other.
    with threadpool_limits(1):
        for mdp_id, seed in tqdm(jobs, desc="MDPs"):
            rows.extend(run_mdp(mdp_id, config, seed))
    summary, tests, table = summarize(rows, config)

    curves = {}
    for teacher in config.teachers:
        curves[f"scaled return, {teacher} teacher"] = {
            learner: [_select(rows, teacher, b, learner).tolist() for b in config.budgets] for learner in LEARNERS}
        curves[f"near-optimal share, {teacher} teacher"] = {
            learner: [(_select(rows, teacher, b, learner) > NEAR_OPTIMAL).astype(float).tolist()
                      for b in config.budgets] for learner in LEARNERS}
    if is_main_process():
        config.out.mkdir(parents=True, exist_ok=True)
        plot_curves(config.budgets, curves, config.out / "regret.png",
                    title="Delivery domain (Knox et al.'s MDPs): policies from learned rewards and advantages",
                    xlabel="labelled pairs")
    return save_results(config.out, config, rows, table, summary=summary, tests=tests)
