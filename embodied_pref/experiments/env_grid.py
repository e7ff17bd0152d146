"""A picture of every task: first, middle and last frame of an expert episode per
task × embodiment, as one PNG grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from embodied_pref.experiments.tasks import TASKS, scripted_episodes  # noqa: E402


def render_env_grid(out: Path, seed: int = 0) -> Path:
    """Writes the grid to `out` (PNG) and returns the path."""
    rows = [(task, embodiment) for task, spec in TASKS.items() for embodiment in spec.embodiments]
    fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
    for (task, embodiment), row in zip(rows, axes):
        frames = scripted_episodes(task, embodiment, [1.0], seed, record_frames=True)[0].frames
        for ax, index, when in zip(row, (0, len(frames) // 2, len(frames) - 1), ("first", "middle", "last")):
            ax.imshow(frames[index])
            ax.set_xticks([])
            ax.set_yticks([])
            if ax is row[0]:
                ax.set_ylabel(f"{task}\n{embodiment}", fontsize=8)
            if (task, embodiment) == rows[0]:
                ax.set_title(f"{when} frame", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
