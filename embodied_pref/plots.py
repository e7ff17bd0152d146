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
        if len(x) > 1:  # matplotlib cannot place a log axis around a single point
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


def plot_grouped_bars(
    groups: Sequence[str], series: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path,
    title: str = "", panels: Sequence[str] = (),
) -> None:
    """One panel per metric (`panels`), bars per group and series, ±1 std over repetitions.

    series[metric][group + "/" + series_name] is the list of repetitions' values.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        names = list(dict.fromkeys(key.split("/", 1)[1] for key in series[metric]))
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            values = [series[metric].get(f"{group}/{name}", [np.nan]) for group in groups]
            ax.bar(np.arange(len(groups)) + j * width, [np.mean(v) for v in values], width,
                   yerr=[np.std(v) for v in values], capsize=3, label=name)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_learned_vs_true(runs: Mapping[str, Sequence[Sequence[tuple[float, float]]]], path: str | Path,
                         title: str = "", xlabel: str = "round") -> None:
    """One panel per fine-tuning run kind: learned return (left axis) and ground-truth return
    (right axis) of the policy's rollouts over training, one thin line per repetition.

    runs[name] is a list over repetitions of (learned, true) per round.
    """
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, (name, repetitions) in zip(axes[0], runs.items()):
        twin = ax.twinx()
        for i, rounds in enumerate(repetitions):
            learned, true = np.array(rounds, dtype=float).reshape(-1, 2).T
            ax.plot(learned, color="tab:blue", marker="o", alpha=0.7, label="learned" if i == 0 else None)
            twin.plot(true, color="tab:red", marker="s", alpha=0.7, label="ground truth" if i == 0 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("learned return", color="tab:blue")
        twin.set_ylabel("ground-truth return", color="tab:red")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
