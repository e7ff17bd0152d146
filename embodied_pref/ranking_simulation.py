"""Synthetic judges of agents with known skills, and how fast TrueSkill finds their ranking.

``NoisyJudge`` answers a comparison like a person with Thurstone or Bradley-Terry noise about
the agents' skills; ``ranking_curves`` measures Kendall τ between the ratings' scores and the
skills against the number of comparisons, for the active pair choice (``choose_pairs``) and
for uniformly random pairs; ``comparisons_to_reach`` reads a curve off it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trueskill
from scipy.stats import kendalltau

from embodied_pref.agent_ranking import (
    Comparison,
    PairChoice,
    choose_pairs,
    ranking_env,
    score,
    update,
)

NOISE_MODELS = ("thurstone", "bradley_terry")


@dataclass(frozen=True)
class NoisyJudge:
    """A synthetic person who compares agents of known skill with noise.

    They see the skill difference plus noise, ``d = s_a − s_b + ε``, answer a draw when
    ``|d| < draw_margin`` and otherwise the agent ``d`` favours. Thurstone: each episode's
    perceived quality has Gaussian noise of std ``noise``, so ε ~ N(0, 2·noise²);
    Bradley-Terry: ε is logistic with scale ``noise`` (P(a ≻ b) = sigmoid((s_a − s_b)/noise)
    without draws).
    """

    skills: Mapping[str, float]
    """True skill per agent."""
    noise: float = 1.0
    """Noise scale (same units as the skills)."""
    model: str = "thurstone"
    """``thurstone`` or ``bradley_terry``."""
    draw_margin: float = 0.0
    """Perceived differences smaller than this are answered as a draw."""

    def __post_init__(self) -> None:
        if self.model not in NOISE_MODELS:
            raise ValueError(f"field 'model': expected one of {NOISE_MODELS}, found {self.model!r}")
        if not self.noise > 0:
            raise ValueError(f"field 'noise': expected a positive float, found {self.noise!r}")
        if not self.draw_margin >= 0:
            raise ValueError(f"field 'draw_margin': expected a float >= 0, found {self.draw_margin!r}")

    def compare(self, agent_a: str, agent_b: str, rng: np.random.Generator) -> str:
        """``"a"``, ``"b"`` or ``"draw"``."""
        if self.model == "thurstone":
            eps = rng.normal(0.0, math.sqrt(2.0) * self.noise)
        else:
            eps = rng.logistic(0.0, self.noise)
        difference = self.skills[agent_a] - self.skills[agent_b] + eps
        if abs(difference) < self.draw_margin:
            return "draw"
        return "a" if difference > 0 else "b"


PAIR_CHOICES = ("active", "uniform")


def ranking_tau(ratings: Mapping[str, trueskill.Rating], skills: Mapping[str, float]) -> float:
    """Kendall τ between the μ − 3σ scores and the true skills (agents never rated count at
    the prior; 0 while all scores are equal)."""
    agents = sorted(skills)
    prior = ranking_env().create_rating()
    estimated = [score(ratings.get(a, prior)) for a in agents]
    tau = float(kendalltau(estimated, [skills[a] for a in agents]).statistic)
    return 0.0 if math.isnan(tau) else tau


def simulate_ranking(judge: NoisyJudge, checkpoints: Sequence[int], choice: str,
                     rng: np.random.Generator, *, n_seeds: int = 10,
                     buffer_size: int = 1) -> np.ndarray:
    """Kendall τ of the leaderboard after each of ``checkpoints`` comparisons (increasing).

    Every agent played seeds ``0..n_seeds-1``. ``active``: pairs from ``choose_pairs`` (the
    buffer of the best ``buffer_size`` pairs is refilled from the current ratings when it
    runs dry; 1 recomputes after every answer, as BASALT's server nearly did by refilling in
    the background on every request); ``uniform``: a uniformly drawn pair of agents and seed.
    Returns (len(checkpoints),) float.
    """
    if choice not in PAIR_CHOICES:
        raise ValueError(f"field 'choice': expected one of {PAIR_CHOICES}, found {choice!r}")
    env = ranking_env()
    agents = sorted(judge.skills)
    seeds = {a: range(n_seeds) for a in agents}
    ratings: dict[str, trueskill.Rating] = {}
    buffer: list[PairChoice] = []
    done = 0
    taus = []
    for target in checkpoints:
        while done < target:
            if choice == "active":
                if not buffer:
                    buffer = choose_pairs(ratings, seeds, rng, top_k=buffer_size, env=env)
                pair = buffer.pop(0)
                agent_a, agent_b, seed = pair.agent_a, pair.agent_b, pair.seed
            else:
                i, j = rng.choice(len(agents), 2, replace=False)
                agent_a, agent_b, seed = agents[i], agents[j], int(rng.integers(n_seeds))
            outcome = judge.compare(agent_a, agent_b, rng)
            update(ratings, Comparison("sim", agent_a, agent_b, seed, outcome), env)
            done += 1
        taus.append(ranking_tau(ratings, judge.skills))
    return np.array(taus)


def ranking_curves(judge: NoisyJudge, checkpoints: Sequence[int], seeds: Sequence[int], *,
                   n_seeds: int = 10, buffer_size: int = 1) -> dict[str, np.ndarray]:
    """Kendall τ vs number of comparisons for each pair choice: ``{choice: (len(seeds),
    len(checkpoints))}``, one row per random seed (both choices see the same seeds)."""
    return {
        choice: np.stack([
            simulate_ranking(judge, checkpoints, choice, np.random.default_rng(seed),
                             n_seeds=n_seeds, buffer_size=buffer_size)
            for seed in seeds
        ])
        for choice in PAIR_CHOICES
    }


def comparisons_to_reach(checkpoints: Sequence[int], taus: np.ndarray, threshold: float) -> float:
    """Comparisons needed for τ to reach ``threshold`` and stay there: per run (row of
    ``taus``, (runs, len(checkpoints))) the first checkpoint from which every later τ is at
    least ``threshold``, averaged over runs; inf if a run ends below it."""
    needed = []
    for row in np.atleast_2d(taus):
        below = np.flatnonzero(row < threshold)
        if not below.size:
            needed.append(checkpoints[0])
        elif below[-1] + 1 < len(checkpoints):
            needed.append(checkpoints[below[-1] + 1])
        else:
            return math.inf
    return float(np.mean(needed))


def plot_ranking_curves(checkpoints: Sequence[int], curves: Mapping[str, np.ndarray],
                        path: str | Path, threshold: float = 0.8) -> Path:
    """A PNG of Kendall τ vs comparisons: per pair choice the mean over runs with a ±1 std
    band, and in the legend the comparisons it needs to stay at τ ≥ ``threshold``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, taus in curves.items():
        taus = np.atleast_2d(taus)
        mean, std = taus.mean(axis=0), taus.std(axis=0)
        needed = comparisons_to_reach(checkpoints, taus, threshold)
        ax.plot(checkpoints, mean, label=f"{name} (τ ≥ {threshold} from {needed:.0f})")
        ax.fill_between(checkpoints, mean - std, mean + std, alpha=0.2)
    ax.axhline(threshold, color="grey", linestyle=":")
    ax.set_xlabel("comparisons")
    ax.set_ylabel("Kendall τ (μ − 3σ vs true skill)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
