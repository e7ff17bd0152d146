"""BASALT's published comparisons (the BASALT Evaluation and Demonstrations Dataset, BEDD)
read into and written from ``Comparison`` records.

```
updated_human_answers.json   [{"task": "FindCave",
                               "episodes": [{"agent_name": "BC-Baseline", "seed": 14169},
                                            {"agent_name": "Human1", "seed": 14169}],
                               "result": {"is_draw": false,
                                          "eval_metadata": {"win_player": "p1", ...}},
                               "worker_id": "A1B2..."}, ...]          newest answer first
banned_workers.json          [{"workerId": "A1B2..."}, ...]          their answers are dropped
```

The layout follows BASALT's evaluation server, which loads these files into its database:
``win_player`` is ``"p1"`` (the first episode won) or ``"p2"``, ignored when ``is_draw``;
the answers are stored newest first, so reading reverses them into the order they were given
(TrueSkill is order-dependent). Assumed where the published files were not at hand: a seed
may be an int or a string of digits (the server keeps seeds as strings); a banned worker may
be written as ``{"workerId": id}`` (what the server reads) or as a bare id string; other
fields of a record are ignored. Writing produces exactly the layout above, with
``win_player`` null for a draw.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from embodied_pref.agent_ranking import Comparison
from embodied_pref.durable import write_atomic

ANSWERS_FILE = "updated_human_answers.json"
BANNED_FILE = "banned_workers.json"


class BEDDError(ValueError):
    """A BEDD file is unreadable or a record is malformed; the message names the file, the
    record index and the field."""


def _load_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BEDDError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BEDDError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, list):
        raise BEDDError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
    return data


def _field(record: Any, dotted: str, where: str) -> Any:
    value = record
    for name in dotted.split("."):
        if isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        elif isinstance(value, Mapping) and name in value:
            value = value[name]
        else:
            raise BEDDError(f"{where}: field '{dotted}': missing")
    return value


def _text(record: Any, dotted: str, where: str) -> str:
    value = _field(record, dotted, where)
    if not isinstance(value, str) or not value:
        raise BEDDError(f"{where}: field '{dotted}': expected a non-empty string, found {value!r}")
    return value


def _seed(value: Any, field: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise BEDDError(f"{where}: field '{field}': expected an int seed, found {value!r}")


def read_banned_workers(path: str | os.PathLike[str]) -> set[str]:
    """The worker ids listed in a ``banned_workers.json``."""
    path = Path(path)
    banned = set()
    for index, entry in enumerate(_load_list(path)):
        worker = entry.get("workerId") if isinstance(entry, Mapping) else entry
        if not isinstance(worker, str) or not worker:
            raise BEDDError(f"{path}: record {index}: field 'workerId': expected a worker id, "
                            f"found {entry!r}")
        banned.add(worker)
    return banned


def record_to_comparison(record: Any, where: str) -> Comparison:
    """One answers record as a ``Comparison``; ``where`` prefixes error messages."""
    if not isinstance(record, Mapping):
        raise BEDDError(f"{where}: expected a JSON object, found {type(record).__name__}")
    task = _text(record, "task", where)
    episodes = _field(record, "episodes", where)
    if not isinstance(episodes, list) or len(episodes) != 2:
        raise BEDDError(f"{where}: field 'episodes': expected a list of 2 episodes, found "
                        f"{episodes!r}")
    agents = [_text(record, f"episodes.{i}.agent_name", where) for i in range(2)]
    seeds = [_seed(_field(record, f"episodes.{i}.seed", where), f"episodes.{i}.seed", where)
             for i in range(2)]
    if seeds[0] != seeds[1]:
        raise BEDDError(f"{where}: field 'episodes.1.seed': expected the seed of episode 0 "
                        f"({seeds[0]}), found {seeds[1]}")
    is_draw = _field(record, "result.is_draw", where)
    if not isinstance(is_draw, bool):
        raise BEDDError(f"{where}: field 'result.is_draw': expected true or false, found "
                        f"{is_draw!r}")
    if is_draw:
        outcome = "draw"
    else:
        winner = _field(record, "result.eval_metadata.win_player", where)
        if winner not in ("p1", "p2"):
            raise BEDDError(f"{where}: field 'result.eval_metadata.win_player': expected 'p1' "
                            f"or 'p2', found {winner!r}")
        outcome = "a" if winner == "p1" else "b"
    worker = _field(record, "worker_id", where)
    if not isinstance(worker, str):
        raise BEDDError(f"{where}: field 'worker_id': expected a string, found {worker!r}")
    try:
        return Comparison(task, agents[0], agents[1], seeds[0], outcome, worker)
    except ValueError as err:
        raise BEDDError(f"{where}: {err}") from None


def read_bedd(answers: str | os.PathLike[str], banned: str | os.PathLike[str] | None = None,
              ) -> list[Comparison]:
    """The comparisons of an ``updated_human_answers.json``, oldest first, without those of
    the workers listed in ``banned`` (a ``banned_workers.json``)."""
    path = Path(answers)
    dropped = read_banned_workers(banned) if banned is not None else set()
    records = _load_list(path)
    comparisons = [record_to_comparison(record, f"{path}: record {index}")
                   for index, record in enumerate(records)]
    return [c for c in reversed(comparisons) if c.worker not in dropped]


def comparison_to_record(comparison: Comparison) -> dict[str, Any]:
    """A ``Comparison`` in BEDD's answers layout."""
    winner = {"a": "p1", "b": "p2", "draw": None}[comparison.outcome]
    return {
        "task": comparison.task,
        "episodes": [{"agent_name": comparison.agent_a, "seed": comparison.seed},
                     {"agent_name": comparison.agent_b, "seed": comparison.seed}],
        "result": {"is_draw": comparison.outcome == "draw",
                   "eval_metadata": {"win_player": winner}},
        "worker_id": comparison.worker,
    }


def write_bedd(comparisons: Iterable[Comparison], answers: str | os.PathLike[str],
               banned_workers: Collection[str] = (),
               banned: str | os.PathLike[str] | None = None) -> Path:
    """Write comparisons (given oldest first) as an ``updated_human_answers.json`` (newest
    first, atomically) and, if ``banned`` is given, ``banned_workers`` as a
    ``banned_workers.json``. Returns the answers path."""
    path = Path(answers)
    records = [comparison_to_record(c) for c in comparisons][::-1]
    write_atomic(path, (json.dumps(records, indent=1) + "\n").encode("utf-8"))
    if banned is not None:
        entries = [{"workerId": worker} for worker in sorted(banned_workers)]
        write_atomic(Path(banned), (json.dumps(entries, indent=1) + "\n").encode("utf-8"))
    return path
