"""Reward and advantage learners for tabular MDPs with deterministic dynamics, from preferences
between segments (Knox et al., TMLR; and AAAI 2024, "Learning optimal advantage from preferences
and mistaking it for reward").

Domain-free: an MDP is given by arrays, `next_state (S, A) int` and reward features
`features (S, A, F)` with r_w(s, a) = w · φ(s, a) (0 in absorbing states), and preferences by
`TabularPreferences` (segment states and actions, targets). Three learners:

- `fit_partial_return_reward`: linear w under the partial-return model, score Σ_t w·φ_t;
- `fit_regret_reward`: linear w under the regret model, score −regret = Σ_t [w·φ_t + γ V̂(s_{t+1})
  − V̂(s_t)] (the general form, −Σ_t Â), with V̂*_w(s) the soft maximum (temperature 0.001, as in
  the paper) over a policy set Π of w·ψ^π(s), ψ^π the successor features (`successor_features`);
  numpy with an exact gradient, L-BFGS;
- `fit_advantage_table`: a table Â(s, a) under the partial-return model, score Σ_t Â(s_t, a_t);
  fit to regret preferences it approximates A*, to act on greedily (`greedy_policy`), not to
  optimize as a reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse
from scipy.special import expit, log_expit

SOFT_MAX_TEMPERATURE = 0.001
"""Temperature of the soft maximum over the policy set that estimates V* (Knox et al.)."""


@dataclass(frozen=True)
class TabularPreferences:
    """Labelled pairs of segments in a tabular MDP."""

    states: np.ndarray
    """(N, 2, L+1) int: s_0 .. s_L of the first and second segment."""
    actions: np.ndarray
    """(N, 2, L) int: a_0 .. a_{L−1}."""
    targets: np.ndarray
    """(N,) float in [0, 1]: 1 first preferred, 0 second preferred, 0.5 tie."""

    def __post_init__(self) -> None:
        states, actions = np.asarray(self.states), np.asarray(self.actions)
        targets = np.asarray(self.targets, dtype=np.float64)
        if states.ndim != 3 or states.shape[1] != 2 or states.dtype.kind not in "iu":
            raise ValueError(f"TabularPreferences.states: expected (N, 2, L+1) ints, found {states.shape} {states.dtype}")
        n, _, steps = states.shape
        if actions.shape != (n, 2, steps - 1) or actions.dtype.kind not in "iu":
            raise ValueError(f"TabularPreferences.actions: expected ({n}, 2, {steps - 1}) ints, "
                             f"found {actions.shape} {actions.dtype}")
        if targets.shape != (n,) or not ((targets >= 0) & (targets <= 1)).all():
            raise ValueError(f"TabularPreferences.targets: expected ({n},) values in [0, 1], found shape {targets.shape}")
        object.__setattr__(self, "states", states.astype(np.int64))
        object.__setattr__(self, "actions", actions.astype(np.int64))
        object.__setattr__(self, "targets", targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index) -> TabularPreferences:
        return TabularPreferences(self.states[index], self.actions[index], self.targets[index])


def segment_feature_sums(features: np.ndarray, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Σ_t φ(s_t, a_t): features (S, A, F), states (..., L+1), actions (..., L) -> (..., F)."""
    return features[states[..., :-1], actions].sum(-2)


def successor_features(
    next_state: np.ndarray, features: np.ndarray, policies: np.ndarray, gamma: float
) -> np.ndarray:
    """ψ^π(s) = E_π[Σ_t γ^t φ(s_t, a_t) | s_0 = s] for each policy, exactly.

    next_state (S, A), features (S, A, F), policies (P, S) int actions or (P, S, A) probabilities
    -> (P, S, F). Then V^π_w(s) = w · ψ^π(s) for any reward r_w = w · φ."""
    next_state = np.asarray(next_state)
    n_states, n_actions = next_state.shape
    policies = np.asarray(policies)
    if policies.ndim == 2 and policies.dtype.kind in "iu":
        policies = np.eye(n_actions)[policies]
    if policies.ndim != 3 or policies.shape[1:] != (n_states, n_actions):
        raise ValueError(f"successor_features.policies: expected (P, {n_states}) ints or "
                         f"(P, {n_states}, {n_actions}) probabilities, found {policies.shape}")
    if features.shape[:2] != (n_states, n_actions):
        raise ValueError(f"successor_features.features: expected ({n_states}, {n_actions}, F), found {features.shape}")
    n_policies = len(policies)
    transition = np.zeros((n_policies, n_states, n_states))
    p_idx = np.repeat(np.arange(n_policies), n_states * n_actions)
    s_idx = np.tile(np.repeat(np.arange(n_states), n_actions), n_policies)
    np.add.at(transition, (p_idx, s_idx, np.tile(next_state.reshape(-1), n_policies)), policies.reshape(-1))
    system = np.eye(n_states) - gamma * transition
    expected_features = np.einsum("psa,saf->psf", policies, features)
    return np.linalg.solve(system, expected_features)


def _fit_logistic(design, targets: np.ndarray, l2: float) -> np.ndarray:
    """argmin_θ mean BCE(sigmoid(design θ), targets) + l2 ||θ||²; design (N, D) dense or sparse."""
    n = len(targets)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = design @ theta
        loss = -(targets * log_expit(logits) + (1 - targets) * log_expit(-logits)).mean() + l2 * theta @ theta
        grad = design.T @ (expit(logits) - targets) / n + 2 * l2 * theta
        return float(loss), np.asarray(grad).reshape(-1)

    result = scipy.optimize.minimize(objective, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B",
                                     options={"maxiter": 2000, "gtol": 1e-9})
    return result.x


def fit_partial_return_reward(features: np.ndarray, preferences: TabularPreferences, l2: float = 1e-6) -> np.ndarray:
    """Reward weights w (F,) of the partial-return model: P(a ≻ b) = sigmoid(w · (Φ_a − Φ_b)),
    Φ the segment's summed features; features (S, A, F)."""
    sums = segment_feature_sums(features, preferences.states, preferences.actions)
    return _fit_logistic(sums[:, 0] - sums[:, 1], preferences.targets, l2)


def soft_max_values(
    psi: np.ndarray, weights: np.ndarray, temperature: float = SOFT_MAX_TEMPERATURE
) -> tuple[np.ndarray, np.ndarray]:
    """V̂*(s) = Σ_π softmax_π(V^π(s) / T) V^π(s) with V^π(s) = w · ψ^π(s), and its gradient in w.

    psi (P, S, F), weights (F,) -> values (S,), jacobian (S, F) = dV̂*(s)/dw."""
    values = psi @ weights  # (P, S)
    logits = (values - values.max(0)) / temperature
    probs = np.exp(logits)
    probs /= probs.sum(0)
    estimate = (probs * values).sum(0)
    # d/dV_π of Σ p V = p_π (1 + (V_π − V̂) / T)
    jacobian = np.einsum("ps,psf->sf", probs * (1 + (values - estimate) / temperature), psi)
    return estimate, jacobian


def regret_design(
    features: np.ndarray, preferences: TabularPreferences, gamma: float
) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
    """The regret model's logit as a linear map of w and V̂: logit = X w + C V̂, with
    X = Σ_t φ(first) − Σ_t φ(second) (N, F) and C (N, S) holding γ at s_{t+1} and −1 at s_t of the
    first segment, the opposite for the second; so that logit = −regret(first) + regret(second)."""
    n_states = features.shape[0]
    sums = segment_feature_sums(features, preferences.states, preferences.actions)
    n, _, steps = preferences.states.shape
    sign = np.array([1.0, -1.0])[None, :, None]
    coefficients = np.zeros((n, 2, steps))
    coefficients[..., :-1] -= 1.0
    coefficients[..., 1:] += gamma
    rows = np.broadcast_to(np.arange(n)[:, None, None], preferences.states.shape)
    entries = (rows.reshape(-1), preferences.states.reshape(-1))
    incidence = scipy.sparse.csr_matrix(((sign * coefficients).reshape(-1), entries), shape=(n, n_states))
    return sums[:, 0] - sums[:, 1], incidence


def regret_loss(
    weights: np.ndarray, psi: np.ndarray, design: tuple[np.ndarray, scipy.sparse.csr_matrix],
    targets: np.ndarray, temperature: float = SOFT_MAX_TEMPERATURE, l2: float = 0.0,
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of the regret model (`RegretModel` with T = 1) + l2 ||w||², and its gradient (F,).

    Segment scores are −regret = Σ_t [w·φ(s_t, a_t) + γ V̂(s_{t+1}) − V̂(s_t)], V̂ from `soft_max_values`."""
    summed, incidence = design
    values, jacobian = soft_max_values(psi, weights, temperature)
    logits = summed @ weights + incidence @ values
    loss = -(targets * log_expit(logits) + (1 - targets) * log_expit(-logits)).mean() + l2 * weights @ weights
    residual = (expit(logits) - targets) / len(targets)
    grad = summed.T @ residual + jacobian.T @ (incidence.T @ residual) + 2 * l2 * weights
    return float(loss), grad


def fit_regret_reward(
    features: np.ndarray,
    psi: np.ndarray,
    preferences: TabularPreferences,
    gamma: float,
    temperature: float = SOFT_MAX_TEMPERATURE,
    l2: float = 1e-6,
    restarts: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Reward weights w (F,) of the regret model, P(a ≻ b) = sigmoid(regret_b − regret_a), with
    V̂*_w the soft maximum over the policy set whose successor features are psi (P, S, F).

    The loss is not convex in w: L-BFGS runs from w = 0 and from `restarts` random directions;
    the lowest loss wins."""
    design = regret_design(features, preferences, gamma)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        return regret_loss(w, psi, design, preferences.targets, temperature, l2)

    rng = np.random.default_rng(seed)
    used = np.abs(features).reshape(-1, features.shape[-1]).max(0) > 0  # a feature never seen keeps weight 0
    starts = [np.zeros(features.shape[-1])] + [rng.normal(size=features.shape[-1]) * used for _ in range(restarts)]
    best = None
    for start in starts:
        result = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                                         options={"maxiter": 500, "gtol": 1e-9})
        if best is None or result.fun < best.fun:
            best = result
    return best.x


def fit_advantage_table(n_states: int, n_actions: int, preferences: TabularPreferences, l2: float = 1e-6) -> np.ndarray:
    """Â (S, A) of the partial-return model over a table: P(a ≻ b) = sigmoid(Σ_t Â(s^a_t, a^a_t)
    − Σ_t Â(s^b_t, a^b_t)). Pairs never seen stay 0 (the L2 penalty)."""
    n, _, length = preferences.actions.shape
    cells = preferences.states[..., :-1] * n_actions + preferences.actions  # (N, 2, L)
    rows = np.repeat(np.arange(n), 2 * length)
    signs = np.repeat(np.array([1.0, -1.0]), length)
    design = scipy.sparse.csr_matrix((np.tile(signs, n), (rows, cells.reshape(-1))), shape=(n, n_states * n_actions))
    return _fit_logistic(design, preferences.targets, l2).reshape(n_states, n_actions)


def greedy_policy(table: np.ndarray) -> np.ndarray:
    """argmax_a table(s, a): (S, A) -> (S,) int (the lowest index among ties)."""
    return np.asarray(table).argmax(1)
