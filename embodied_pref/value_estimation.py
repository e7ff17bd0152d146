"""State values V̂(s) for regret teachers on continuous domains, where V* has no closed form.

A domain supplies value targets at sampled states (e.g. the return of a strong policy rolled
out from each state: a Monte-Carlo estimate of V^π ≈ V*); `fit_value_function` regresses an
MLP on them. The fitted function carries `source`, a JSON description of where its targets
came from, which regret teachers write into every label's provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embodied_pref.reward_nets import scalar_mlp


@dataclass(frozen=True)
class ValueFitConfig:
    """Regression of V̂ on value targets."""

    hidden_sizes: tuple[int, ...] = (128, 128)
    """Widths of the MLP's hidden layers."""
    epochs: int = 400
    """Full passes over the targets."""
    batch_size: int = 256
    """States per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    validation_fraction: float = 0.2
    """Share of targets held out to report the fit's R²."""
    seed: int = 0
    """Seeds the split and the initialization."""


class ValueFunction(nn.Module):
    """V̂: observations (..., D) -> values (...), with the input and target scaling it was fit with.

    `source` (JSON-serializable) says how the targets were obtained; `validation_r2` how well
    the MLP fits held-out targets.
    """

    def __init__(self, obs_dim: int, hidden_sizes: tuple[int, ...], source: dict[str, Any]) -> None:
        super().__init__()
        self.net = scalar_mlp(obs_dim, hidden_sizes)
        self.obs_dim, self.hidden_sizes, self.source = obs_dim, tuple(hidden_sizes), dict(source)
        self.validation_r2 = float("nan")
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("value_mean", torch.zeros(()))
        self.register_buffer("value_std", torch.ones(()))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        scaled = self.net((obs - self.obs_mean) / self.obs_std).squeeze(-1)
        return scaled * self.value_std + self.value_mean

    @torch.no_grad()
    def predict(self, obs: np.ndarray) -> np.ndarray:
        """numpy (..., D) -> (...) float64."""
        tensor = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        return self.forward(tensor).numpy().astype(np.float64)

    def provenance(self) -> dict[str, Any]:
        return {**self.source, "fit": "mlp regression", "validation_r2": round(self.validation_r2, 4)}

    def save(self, path: str | Path) -> None:
        torch.save({"obs_dim": self.obs_dim, "hidden_sizes": list(self.hidden_sizes), "source": self.source,
                    "validation_r2": self.validation_r2, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "ValueFunction":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        value = cls(blob["obs_dim"], tuple(blob["hidden_sizes"]), blob["source"])
        value.load_state_dict(blob["state_dict"])
        value.validation_r2 = float(blob["validation_r2"])
        return value


def fit_value_function(
    observations: np.ndarray, targets: np.ndarray, source: dict[str, Any], config: ValueFitConfig = ValueFitConfig()
) -> ValueFunction:
    """Least-squares fit of V̂ to value targets.

    observations: (N, D) float; targets: (N,) float (e.g. Monte-Carlo returns from each state).
    """
    observations = np.asarray(observations, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    if observations.ndim != 2 or targets.shape != (len(observations),):
        raise ValueError(f"fit_value_function: expected observations (N, D) and targets (N,), "
                         f"found {observations.shape} and {targets.shape}")
    if len(targets) < 5 or not np.isfinite(targets).all():
        raise ValueError(f"fit_value_function: expected at least 5 finite targets, found {len(targets)} "
                         f"({int((~np.isfinite(targets)).sum())} not finite)")
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(targets), generator=generator).numpy()
    n_val = max(1, int(round(config.validation_fraction * len(targets))))
    val, train = order[:n_val], order[n_val:]
    torch.manual_seed(config.seed)
    value = ValueFunction(observations.shape[1], config.hidden_sizes, {**source, "samples": int(len(targets))})
    x, y = torch.from_numpy(observations), torch.from_numpy(targets)
    with torch.no_grad():
        value.obs_mean.copy_(x[train].mean(0))
        value.obs_std.copy_(x[train].std(0).clamp_min(1e-6))
        value.value_mean.copy_(y[train].mean())
        value.value_std.copy_(y[train].std().clamp_min(1e-6))
    optimizer = torch.optim.AdamW(value.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        for batch in torch.randperm(len(train), generator=generator).split(config.batch_size):
            index = torch.from_numpy(train)[batch]
            loss = ((value(x[index]) - y[index]) / value.value_std).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        residual = (value(x[val]) - y[val]).pow(2).sum()
        total = (y[val] - y[val].mean()).pow(2).sum().clamp_min(1e-12)
        value.validation_r2 = float(1 - residual / total)
    return value.eval()
