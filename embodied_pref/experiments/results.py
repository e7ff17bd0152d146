"""Writing an experiment's results: the raw rows as JSON, a markdown table, and the table printed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' with three decimals."""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def save_results(out_dir: Path, config: Any, rows: list[dict], table: list[str], **extra: Any) -> dict:
    """Writes out_dir/results.json (config, rows, extra) and out_dir/table.md; prints the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"config": asdict(config), "rows": rows, **extra}
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (out_dir / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return result
