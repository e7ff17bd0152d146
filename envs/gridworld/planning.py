"""Exact planning on a deterministic tabular MDP given as arrays.

Every function takes the MDP as `next_state (S, A) int` (the state each action leads to),
`reward (S, A) float`, `gamma` and optionally `absorbing (S,) bool` (states that loop with
reward 0 whatever the table says). Policies are `(S,) int` actions or `(S, A)` probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OptimalSolution:
    """V*, Q*, A* and a greedy optimal policy."""

    values: np.ndarray
    """(S,) V*(s)."""
    q: np.ndarray
    """(S, A) Q*(s, a) = r(s, a) + γ V*(s')."""
    advantage: np.ndarray
    """(S, A) A*(s, a) = Q*(s, a) − V*(s) <= 0; 0 for optimal actions."""
    policy: np.ndarray
    """(S,) int: an optimal action (the lowest index among ties)."""


def _check(next_state: np.ndarray, reward: np.ndarray, gamma: float,
           absorbing: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    next_state = np.asarray(next_state)
    reward = np.array(reward, dtype=np.float64)
    if next_state.ndim != 2 or reward.shape != next_state.shape:
        raise ValueError(f"expected next_state and reward of one shape (S, A), found {next_state.shape} "
                         f"and {reward.shape}")
    if next_state.min() < 0 or next_state.max() >= len(next_state):
        raise ValueError(f"next_state: expected states in [0, {len(next_state)}), found "
                         f"[{next_state.min()}, {next_state.max()}]")
    if not 0 <= gamma < 1:
        raise ValueError(f"gamma: expected 0 <= gamma < 1, found {gamma}")
    if absorbing is not None:
        absorbing = np.asarray(absorbing, dtype=bool)
        if absorbing.shape != (len(next_state),):
            raise ValueError(f"absorbing: expected shape ({len(next_state)},), found {absorbing.shape}")
        next_state = next_state.copy()
        next_state[absorbing] = np.flatnonzero(absorbing)[:, None]
        reward[absorbing] = 0.0
    return next_state, reward


def _solution(next_state: np.ndarray, reward: np.ndarray, gamma: float, values: np.ndarray) -> OptimalSolution:
    q = reward + gamma * values[next_state]
    best = q.max(1)
    return OptimalSolution(best, q, np.minimum(q - best[:, None], 0.0), q.argmax(1))


def value_iteration(
    next_state: np.ndarray,
    reward: np.ndarray,
    gamma: float,
    absorbing: np.ndarray | None = None,
    tol: float = 1e-10,
    max_sweeps: int = 1_000_000,
) -> OptimalSolution:
    """Bellman optimality sweeps V <- max_a r + γ V(s') until no value moves by more than `tol`.

    With γ near 1 this takes thousands of sweeps; `solve_optimal` reaches the same fixed point
    exactly in a few linear solves."""
    next_state, reward = _check(next_state, reward, gamma, absorbing)
    values = np.zeros(len(next_state))
    for _ in range(max_sweeps):
        new = (reward + gamma * values[next_state]).max(1)
        change = np.abs(new - values).max()
        values = new
        if change <= tol:
            break
    else:
        raise RuntimeError(f"value_iteration: no convergence to {tol} in {max_sweeps} sweeps")
    return _solution(next_state, reward, gamma, values)


def policy_matrix(policy: np.ndarray, n_states: int, n_actions: int) -> np.ndarray:
    """(S,) actions or (S, A) probabilities -> (S, A) probabilities."""
    policy = np.asarray(policy)
    if policy.shape == (n_states,) and policy.dtype.kind in "iu":
        if policy.min() < 0 or policy.max() >= n_actions:
            raise ValueError(f"policy: expected actions in [0, {n_actions}), found [{policy.min()}, {policy.max()}]")
        return np.eye(n_actions)[policy]
    if policy.shape != (n_states, n_actions):
        raise ValueError(f"policy: expected ({n_states},) ints or ({n_states}, {n_actions}) probabilities, "
                         f"found {policy.shape} {policy.dtype}")
    if not np.allclose(policy.sum(1), 1.0) or (policy < 0).any():
        raise ValueError("policy: expected each row of probabilities to be >= 0 and sum to 1")
    return policy.astype(np.float64)


def transition_matrix(next_state: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """P_π (S, S) of a policy's probabilities (S, A) under deterministic dynamics (S, A)."""
    n = len(next_state)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.repeat(np.arange(n), next_state.shape[1]), next_state.reshape(-1)), probs.reshape(-1))
    return matrix


def policy_evaluation(
    next_state: np.ndarray,
    reward: np.ndarray,
    gamma: float,
    policy: np.ndarray,
    absorbing: np.ndarray | None = None,
) -> np.ndarray:
    """V^π (S,), exactly: solves (I − γ P_π) V = r_π."""
    next_state, reward = _check(next_state, reward, gamma, absorbing)
    probs = policy_matrix(policy, *next_state.shape)
    system = np.eye(len(next_state)) - gamma * transition_matrix(next_state, probs)
    return np.linalg.solve(system, (probs * reward).sum(1))


def solve_optimal(
    next_state: np.ndarray,
    reward: np.ndarray,
    gamma: float,
    absorbing: np.ndarray | None = None,
    max_iterations: int = 10_000,
) -> OptimalSolution:
    """V*, Q*, A* by policy iteration with exact evaluation: the fixed point of value iteration,
    to rounding error, in a few linear solves."""
    next_state, reward = _check(next_state, reward, gamma, absorbing)
    rows = np.arange(len(next_state))
    policy = reward.argmax(1)
    for _ in range(max_iterations):
        values = policy_evaluation(next_state, reward, gamma, policy)
        q = reward + gamma * values[next_state]
        slack = 1e-12 * max(1.0, np.abs(q).max())
        better = q.max(1) > q[rows, policy] + slack
        if not better.any():
            return _solution(next_state, reward, gamma, values)
        policy = np.where(better, q.argmax(1), policy)
    raise RuntimeError(f"solve_optimal: policy iteration did not settle in {max_iterations} iterations")


def uniform_policy(n_states: int, n_actions: int) -> np.ndarray:
    """(S, A) equal probabilities."""
    return np.full((n_states, n_actions), 1.0 / n_actions)


@dataclass(frozen=True)
class ReturnScale:
    """Maps a mean return over start states to the papers' scaled return (optimal 1, random 0)."""

    random: float
    """Mean V^uniform over the start states."""
    optimal: float
    """Mean V* over the start states."""

    def __call__(self, mean_return: float) -> float:
        span = self.optimal - self.random
        return (mean_return - self.random) / span if span > 0 else math.nan


def return_scale(
    next_state: np.ndarray,
    reward: np.ndarray,
    gamma: float,
    start_states: np.ndarray,
    absorbing: np.ndarray | None = None,
) -> ReturnScale:
    """Mean optimal and uniformly random returns over `start_states` (K,)."""
    optimal = solve_optimal(next_state, reward, gamma, absorbing).values
    random = policy_evaluation(next_state, reward, gamma, uniform_policy(*np.shape(next_state)), absorbing)
    return ReturnScale(float(random[start_states].mean()), float(optimal[start_states].mean()))


def scaled_return(
    next_state: np.ndarray,
    reward: np.ndarray,
    gamma: float,
    policy: np.ndarray,
    start_states: np.ndarray,
    absorbing: np.ndarray | None = None,
    scale: ReturnScale | None = None,
) -> float:
    """Scaled return of `policy` under `reward`: (mean V^π − mean V^random) / (mean V* − mean V^random)
    over `start_states`; pass `scale` to reuse the two baselines."""
    scale = scale or return_scale(next_state, reward, gamma, start_states, absorbing)
    values = policy_evaluation(next_state, reward, gamma, policy, absorbing)
    return scale(float(values[start_states].mean()))
