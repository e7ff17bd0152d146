"""Plots for reports: learning curves with spread, and learned-vs-true scatter."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(
    x: Sequence[float],
    curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
    path: str | Path,
    title: str = "",
    xlabel: str = "",
) -> None:
    """One panel per metric; one line per series with a ±1 std band over repetitions.

    curves[metric][series] is a list over x of the values from each repetition.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (metric, series) in zip(axes[0], curves.items()):
        for name, values in series.items():
            mean = np.array([np.mean(v) for v in values])
            std = np.array([np.std(v) for v in values])
            ax.plot(x, mean, marker="o", label=name)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(v) for v in x])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scatter(
    truth: np.ndarray, learned: np.ndarray, path: str | Path, title: str = "",
    xlabel: str = "ground-truth return", ylabel: str = "learned return",
) -> None:
    """Learned vs ground-truth values, one point per clip."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(truth, learned, s=8, alpha=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
