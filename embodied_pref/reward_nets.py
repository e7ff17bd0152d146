"""Reward networks: an MLP over state / state-action / next state, and an ensemble of them.

Every network keeps the input normalization it was fitted with (buffers), so a checkpoint is
self-contained. The numpy entry point `RewardEnsemble.predict` is the `RewardFn` the PbRL
loop hands to policies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from embodied_pref.data import Trajectory


class RewardFn(Protocol):
    """A batched reward: (obs (B, D), acts (B, A), next_obs (B, D)) -> (B,) float32."""

    def __call__(
        self, obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class RewardNetConfig:
    """Shape of each ensemble member."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers."""
    use_state: bool = True
    """Feed s_t."""
    use_action: bool = True
    """Feed a_t."""
    use_next_state: bool = False
    """Feed s_{t+1} (domains whose reward depends on the state reached)."""
    ensemble_size: int = 3
    """Members K; their disagreement drives active query selection."""
    potential: bool = False
    """Add a learned potential: r(s, a, s') + Φ(s') − Φ(s). Summed over a segment this is
    Σr + Φ(s_L) − Φ(s_0), the negated deterministic regret with Φ standing for V* (the regret
    preference model as a learner, Knox et al.)."""

    def __post_init__(self) -> None:
        if not (self.use_state or self.use_action or self.use_next_state):
            raise ValueError("RewardNetConfig: at least one of use_state/use_action/use_next_state")
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size: expected >= 1, found {self.ensemble_size}")
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes: expected positive widths, found {self.hidden_sizes}")


def trajectory_rewards(reward_fn: RewardFn, trajectory: Trajectory) -> np.ndarray:
    """The reward `reward_fn` gives each step of a trajectory: (T,)."""
    obs = trajectory.observations
    return reward_fn(obs[:-1], trajectory.actions, obs[1:])


def _inputs(config: RewardNetConfig, obs, acts, next_obs):
    parts = []
    if config.use_state:
        parts.append(obs)
    if config.use_action:
        parts.append(acts)
    if config.use_next_state:
        parts.append(next_obs)
    return torch.cat(parts, dim=-1)


def scalar_mlp(width_in: int, hidden_sizes: tuple[int, ...]) -> nn.Sequential:
    """(..., width_in) -> (..., 1): LeakyReLU hidden layers of the given widths."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [nn.Linear(width_in, width), nn.LeakyReLU()]
        width_in = width
    layers.append(nn.Linear(width_in, 1))
    return nn.Sequential(*layers)


class RewardMLP(nn.Module):
    """One member: normalized inputs -> MLP -> scalar reward per step (plus the potential
    difference Φ(s') − Φ(s) when `config.potential`).

    obs (..., D), acts (..., A), next_obs (..., D) -> reward (...)
    """

    def __init__(self, obs_dim: int, act_dim: int, config: RewardNetConfig) -> None:
        super().__init__()
        self.config = config
        input_dim = obs_dim * (config.use_state + config.use_next_state) + act_dim * config.use_action
        self.net = scalar_mlp(input_dim, config.hidden_sizes)
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        if config.potential:
            self.potential = scalar_mlp(obs_dim, config.hidden_sizes)
            self.register_buffer("obs_mean", torch.zeros(obs_dim))
            self.register_buffer("obs_std", torch.ones(obs_dim))

    def forward(self, obs: torch.Tensor, acts: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        x = _inputs(self.config, obs, acts, next_obs)
        reward = self.net((x - self.input_mean) / self.input_std).squeeze(-1)
        if self.config.potential:
            reward = reward + self.potential_of(next_obs) - self.potential_of(obs)
        return reward

    def potential_of(self, obs: torch.Tensor) -> torch.Tensor:
        """Φ(s): (..., D) -> (...)."""
        return self.potential((obs - self.obs_mean) / self.obs_std).squeeze(-1)


class RewardEnsemble(nn.Module):
    """K independently initialized `RewardMLP`s.

    forward: obs (..., D), acts (..., A), next_obs (..., D) -> rewards (K, ...)
    """

    def __init__(self, obs_dim: int, act_dim: int, config: RewardNetConfig = RewardNetConfig()) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        self.members = nn.ModuleList(
            RewardMLP(obs_dim, act_dim, config) for _ in range(config.ensemble_size)
        )

    def forward(self, obs: torch.Tensor, acts: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(obs, acts, next_obs) for member in self.members])

    @torch.no_grad()
    def fit_input_normalization(
        self, obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray
    ) -> None:
        """Standardize inputs with statistics of the given samples (N, ·)."""
        x = _inputs(
            self.config, *(torch.as_tensor(a, dtype=torch.float32) for a in (obs, acts, next_obs))
        )
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        states = torch.as_tensor(obs, dtype=torch.float32)
        for member in self.members:
            member.input_mean.copy_(mean)
            member.input_std.copy_(std)
            if self.config.potential:
                member.obs_mean.copy_(states.mean(0))
                member.obs_std.copy_(states.std(0).clamp_min(1e-6))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def predict(self, obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """Ensemble-mean reward, numpy in and out: (B, D), (B, A), (B, D) -> (B,) float32."""
        # Arrays read from a dataset are read-only; torch wants writable memory (copied only then).
        tensors = [torch.as_tensor(np.require(a, np.float32, ["W"]), device=self.device) for a in (obs, acts, next_obs)]
        return self(*tensors).mean(0).cpu().numpy().astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Checkpoint with everything needed to rebuild the ensemble."""
        torch.save(
            {
                "obs_dim": self.obs_dim,
                "act_dim": self.act_dim,
                "config": asdict(self.config),
                "state_dict": self.state_dict(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "RewardEnsemble":
        blob = torch.load(path, map_location=device, weights_only=True)
        config = blob["config"]
        config["hidden_sizes"] = tuple(config["hidden_sizes"])
        ensemble = cls(blob["obs_dim"], blob["act_dim"], RewardNetConfig(**config))
        ensemble.load_state_dict(blob["state_dict"])
        return ensemble.to(device)


class StandardizedReward:
    """A `RewardFn` shifted and scaled to zero mean, unit variance over a reference set of
    transitions. The statistics are fixed, so the RL reward does not drift; applying the same
    transform to the ground truth gives a like-for-like baseline."""

    def __init__(self, reward_fn: RewardFn, obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray) -> None:
        self.reward_fn = reward_fn
        rewards = reward_fn(obs, acts, next_obs)
        self.mean, self.std = float(rewards.mean()), float(rewards.std()) + 1e-8

    def __call__(self, obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        return ((self.reward_fn(obs, acts, next_obs) - self.mean) / self.std).astype(np.float32)


class PessimisticReward:
    """A `RewardFn` that discounts what the ensemble disagrees on: mean − k·std over members.

    A policy optimized against it gains little from states where the members differ, which is
    where a learned reward is most easily gamed.
    """

    def __init__(self, ensemble: RewardEnsemble, k: float = 1.0) -> None:
        if k < 0:
            raise ValueError(f"k: expected >= 0, found {k}")
        self.ensemble, self.k = ensemble, k

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, acts: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        tensors = [torch.as_tensor(a, dtype=torch.float32, device=self.ensemble.device) for a in (obs, acts, next_obs)]
        members = self.ensemble(*tensors)
        spread = members.std(0) if len(members) > 1 else torch.zeros_like(members[0])
        return (members.mean(0) - self.k * spread).cpu().numpy().astype(np.float32)
