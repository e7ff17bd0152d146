"""Crafter's score (Hafner, 2021): the geometric mean of the achievements' success rates,
exp(mean_i log(1 + p_i)) − 1 with p_i in percent over the 22 achievements. Reported: random
1.6, PPO 4.6, human experts 50.5."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from envs.crafter.game import ACHIEVEMENTS


def success_rates(episodes: Sequence[Mapping[str, int]]) -> dict[str, float]:
    """Percent of episodes in which each achievement was unlocked; `episodes` holds each
    episode's final achievement counts (crafter's `info["achievements"]`)."""
    if not episodes:
        raise ValueError("episodes: expected at least one episode's achievements, found none")
    for i, counts in enumerate(episodes):
        missing = sorted(set(ACHIEVEMENTS) - set(counts))
        if missing:
            raise ValueError(f"episodes[{i}]: expected a count for every achievement, missing {missing}")
    return {name: 100.0 * float(np.mean([counts[name] > 0 for counts in episodes])) for name in ACHIEVEMENTS}


def crafter_score(rates: Mapping[str, float]) -> float:
    """exp(mean(log(1 + p))) − 1 over the 22 achievements' success rates p in percent."""
    missing = sorted(set(ACHIEVEMENTS) - set(rates))
    if missing:
        raise ValueError(f"rates: expected a success rate for every achievement, missing {missing}")
    percent = np.array([rates[name] for name in ACHIEVEMENTS], dtype=np.float64)
    if ((percent < 0) | (percent > 100)).any():
        raise ValueError(f"rates: expected percentages in [0, 100], found {percent.min()}..{percent.max()}")
    return float(np.exp(np.mean(np.log1p(percent))) - 1.0)
