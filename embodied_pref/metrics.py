"""Reward-quality metrics: preference accuracy, rank/linear correlation, and EPIC distance."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.stats

from embodied_pref.reward_nets import RewardFn


@dataclass(frozen=True)
class PreferenceAccuracy:
    """How well predicted preferences match labels; ties are reported apart from accuracy."""

    accuracy: float
    """Fraction of decisive targets (0 or 1) predicted right; a probability of exactly 0.5
    counts half. nan when there is no decisive target."""
    n_decisive: int
    """Number of targets equal to 0 or 1."""
    n_ties: int
    """Number of targets equal to 0.5."""
    tie_mae: float
    """Mean |prob − 0.5| over the tie targets; nan when there is none."""


def preference_accuracy(prob_first: np.ndarray, targets: np.ndarray) -> PreferenceAccuracy:
    """Accuracy of P(first ≻ second) against labels.

    prob_first: (N,) predicted probability that the first segment is preferred;
    targets: (N,) with 1 (first preferred), 0 (second preferred) or 0.5 (tie).
    """
    prob_first = np.asarray(prob_first, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if prob_first.shape != targets.shape:
        raise ValueError(
            f"preference_accuracy: prob_first {prob_first.shape} and targets {targets.shape} "
            "must have the same length"
        )
    ties = targets == 0.5
    decisive = (targets == 0.0) | (targets == 1.0)
    if not np.all(ties | decisive):
        bad = np.unique(targets[~(ties | decisive)])[:5]
        raise ValueError(f"preference_accuracy.targets: expected 0, 0.5 or 1, found {bad.tolist()}")

    p, t = prob_first[decisive], targets[decisive]
    credit = np.where(p == 0.5, 0.5, ((p > 0.5) == (t == 1.0)).astype(np.float64))
    accuracy = float(credit.mean()) if credit.size else math.nan
    tie_mae = float(np.abs(prob_first[ties] - 0.5).mean()) if ties.any() else math.nan
    return PreferenceAccuracy(accuracy, int(decisive.sum()), int(ties.sum()), tie_mae)


def _correlation(kind: str, x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{kind}: x {x.shape} and y {y.shape} must have the same length")
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return math.nan
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = scipy.stats.pearsonr if kind == "pearson" else scipy.stats.spearmanr
        return float(test(x, y)[0])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of (N,) and (N,); nan when either is constant, non-finite or N < 2."""
    return _correlation("pearson", x, y)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of (N,) and (N,); nan when either is constant, non-finite or N < 2."""
    return _correlation("spearman", x, y)


def _mean_reward_from(
    reward: RewardFn,
    states: np.ndarray,
    sample_acts: np.ndarray,
    sample_next: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """E_j[R(s, A_j, S'_j)] for each s: states (U, D), samples (n, A), (n, D) -> (U,)."""
    n = len(sample_acts)
    per_call = max(1, batch_size // n)
    means = np.empty(len(states))
    for start in range(0, len(states), per_call):
        block = states[start : start + per_call]
        b = len(block)
        obs = np.repeat(block, n, axis=0)
        acts = np.tile(sample_acts, (b, 1))
        next_obs = np.tile(sample_next, (b, 1))
        rewards = _call(reward, obs, acts, next_obs)
        means[start : start + b] = rewards.reshape(b, n).mean(1)
    return means


def _call(reward: RewardFn, obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    out = np.asarray(reward(obs, acts, next_obs), dtype=np.float64)
    if out.shape != (len(obs),):
        raise ValueError(
            f"epic_distance: reward function {getattr(reward, '__name__', reward)!r} returned "
            f"shape {out.shape}, expected ({len(obs)},)"
        )
    return out


def _canonicalize(
    reward: RewardFn,
    transitions: tuple[np.ndarray, np.ndarray, np.ndarray],
    sample_states: np.ndarray,
    sample_acts: np.ndarray,
    sample_next: np.ndarray,
    gamma: float,
    batch_size: int,
) -> np.ndarray:
    """C(R)(s,a,s') = R(s,a,s') + γE[R(s',A,S')] − E[R(s,A,S')] − γE[R(S,A,S')] -> (N,)."""
    obs, acts, next_obs = transitions
    raw = np.concatenate(
        [
            _call(reward, obs[i : i + batch_size], acts[i : i + batch_size], next_obs[i : i + batch_size])
            for i in range(0, len(obs), batch_size)
        ]
    )
    # One expectation per distinct state: s' of one step is often s of the next.
    all_states = np.concatenate([obs, next_obs, sample_states])
    unique, inverse = np.unique(all_states, axis=0, return_inverse=True)
    means = _mean_reward_from(reward, unique, sample_acts, sample_next, batch_size)[inverse.reshape(-1)]
    n = len(obs)
    mean_from_obs, mean_from_next, mean_from_samples = means[:n], means[n : 2 * n], means[2 * n :]
    return raw + gamma * mean_from_next - mean_from_obs - gamma * mean_from_samples.mean()


def epic_distance(
    reward_a: RewardFn,
    reward_b: RewardFn,
    *,
    transitions: tuple[np.ndarray, np.ndarray, np.ndarray],
    state_samples: np.ndarray,
    action_samples: np.ndarray,
    gamma: float,
    n_mean_samples: int = 1024,
    seed: int = 0,
    batch_size: int = 65536,
) -> float:
    """EPIC pseudometric (Gleave et al. 2021) between two reward functions, in [0, 1].

    Both rewards are canonicalized with sample-based expectations and compared with the
    Pearson distance sqrt((1 − ρ) / 2) over `transitions`. 0 means equal up to positive scaling
    and potential shaping; 1 means opposite; independent rewards are near sqrt(1/2) ≈ 0.71.

    reward_a, reward_b: (obs (B, D), acts (B, A), next_obs (B, D)) -> (B,).
    transitions: (obs (N, D), acts (N, A), next_obs (N, D)), the coverage distribution.
    state_samples: (M, D) draws of S and S'; action_samples: (K, A) draws of A.
    n_mean_samples: pairs (A, S') drawn, with replacement and independently, for each
        expectation; the same draws serve both rewards and every state, so potential shaping
        cancels exactly rather than up to sampling noise.
    seed: seeds those draws. batch_size: most rows passed to a reward function in one call.
    Returns nan when a canonicalized reward is constant over `transitions`.
    """
    obs, acts, next_obs = (np.asarray(x) for x in transitions)
    state_samples, action_samples = np.asarray(state_samples), np.asarray(action_samples)
    if not (obs.ndim == next_obs.ndim == acts.ndim == 2 and len(obs) == len(acts) == len(next_obs)):
        raise ValueError(
            "epic_distance.transitions: expected (obs (N, D), acts (N, A), next_obs (N, D)), found "
            f"{obs.shape}, {acts.shape}, {next_obs.shape}"
        )
    if state_samples.ndim != 2 or state_samples.shape[1] != obs.shape[1]:
        raise ValueError(
            f"epic_distance.state_samples: expected (M, {obs.shape[1]}), found {state_samples.shape}"
        )
    if action_samples.ndim != 2 or action_samples.shape[1] != acts.shape[1]:
        raise ValueError(
            f"epic_distance.action_samples: expected (K, {acts.shape[1]}), found {action_samples.shape}"
        )
    if not 0 <= gamma <= 1 or n_mean_samples < 1 or batch_size < 1:
        raise ValueError(
            f"epic_distance: expected 0 <= gamma <= 1, n_mean_samples >= 1, batch_size >= 1; found "
            f"gamma={gamma}, n_mean_samples={n_mean_samples}, batch_size={batch_size}"
        )

    rng = np.random.default_rng(seed)
    sample_states = state_samples[rng.integers(len(state_samples), size=n_mean_samples)]
    sample_next = state_samples[rng.integers(len(state_samples), size=n_mean_samples)]
    sample_acts = action_samples[rng.integers(len(action_samples), size=n_mean_samples)]
    canonical = [
        _canonicalize(r, (obs, acts, next_obs), sample_states, sample_acts, sample_next, gamma, batch_size)
        for r in (reward_a, reward_b)
    ]
    rho = pearson(*canonical)
    return math.sqrt((1.0 - min(1.0, max(-1.0, rho))) / 2.0) if math.isfinite(rho) else math.nan
