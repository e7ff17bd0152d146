"""The normalizer that lives with a policy and is saved with it: actions map their limits to
[-1, 1] (so that `clip_sample` keeps sampled actions inside them), state vectors are
standardized by mean/std or mapped by their limits."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MODES = ("limits", "gaussian")
_EPS = 1e-6


class Normalizer(nn.Module):
    """Per-feature affine maps `normalized = (x - offset) / scale`, one per named field.

    Parameters are buffers, so they travel in the policy's state dict and checkpoint.
    """

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        for name, dim in dims.items():
            self.register_buffer(f"{name}_offset", torch.zeros(dim))
            self.register_buffer(f"{name}_scale", torch.ones(dim))

    def fit(self, name: str, values: np.ndarray, mode: str) -> None:
        """Fit field `name` to samples `values`: (N, D)."""
        if mode not in MODES:
            raise ValueError(f"normalizer mode: expected one of {MODES}, found {mode!r}")
        values = np.asarray(values, dtype=np.float64).reshape(-1, getattr(self, f"{name}_offset").numel())
        if not np.isfinite(values).all():
            raise ValueError(f"normalizer field {name!r}: values contain NaN or inf")
        if mode == "limits":
            low, high = values.min(0), values.max(0)
            offset, scale = (high + low) / 2, (high - low) / 2
        else:
            offset, scale = values.mean(0), values.std(0)
        scale = np.where(scale < _EPS, 1.0, scale)  # a constant feature maps to 0, not to inf
        getattr(self, f"{name}_offset").copy_(torch.as_tensor(offset, dtype=torch.float32))
        getattr(self, f"{name}_scale").copy_(torch.as_tensor(scale, dtype=torch.float32))

    def set_limits(self, name: str, low: np.ndarray, high: np.ndarray) -> None:
        """Map the known limits [low, high] of field `name` onto [-1, 1]."""
        self.fit(name, np.stack([np.asarray(low), np.asarray(high)]), "limits")

    def normalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{name}_offset")) / getattr(self, f"{name}_scale")

    def unnormalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, f"{name}_scale") + getattr(self, f"{name}_offset")
