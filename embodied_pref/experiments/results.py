"""Writing an experiment's results: the raw rows as JSON, a markdown table, and the table printed,
by the main process alone under `torchrun`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embodied_pref.distributed import is_main_process


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' with three decimals."""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def save_results(out_dir: Path, config: Any, rows: list[dict], table: list[str], **extra: Any) -> dict:
    """Writes out_dir/results.json (config, rows, extra) and out_dir/table.md and prints the table,
    on rank 0 alone under torchrun; returns the result on every rank."""
    result = {"config": asdict(config), "rows": rows, **extra}
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
        (out_dir / "table.md").write_text("\n".join(table) + "\n")
        print("\n".join(table))
    return result
