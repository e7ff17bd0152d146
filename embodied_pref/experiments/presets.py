"""Presets (such as an experiment's --quick or a bench's --smoke) that give way to the flags a user sets."""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

Config = TypeVar("Config")


def with_preset(config: Config, preset: Mapping[str, Any], given: Collection[str] = ()) -> Config:
    """`config` with the preset's value for every field still at its default, so that a flag
    the user gave wins over the preset. A nested config takes a nested mapping; a value that is
    not a mapping replaces the field whole. `given` names the fields set on the command line
    (dotted for nested ones, see `flags_given`): they win even where they equal the default,
    which the values alone cannot tell from no flag."""
    return _apply(config, type(config)(), preset, frozenset(given), "")


def flags_given(argv: Sequence[str]) -> frozenset[str]:
    """Dotted field names of the `--flag` options in a command line (`--ppo-steps 5` and
    `--ppo_steps=5` -> "ppo_steps", `--ppo.vec-env` -> "ppo.vec_env", `--no-fine-tune` ->
    "fine_tune")."""
    names = set()
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            parent, _, leaf = name.rpartition(".")
            names.add(name)
            if leaf.startswith("no_"):
                names.add(f"{parent}.{leaf[3:]}" if parent else leaf[3:])
    return frozenset(names)


def parse_with_smoke(parser: argparse.ArgumentParser, smoke: Mapping[str, Any],
                     help: str | None = None) -> argparse.Namespace:
    """Adds `--smoke` to a bench's parser and parses the command line: with it, the `smoke`
    sizes replace the defaults, so that flags given beside it still win."""
    parser.add_argument("--smoke", action="store_true", help=help or f"tiny sizes, {dict(smoke)}")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    return args


def _apply(config: Any, default: Any, preset: Mapping[str, Any], given: frozenset[str], prefix: str) -> Any:
    changes = {}
    for name, value in preset.items():
        current, base, path = getattr(config, name), getattr(default, name), prefix + name
        if path in given:
            continue
        if isinstance(value, Mapping):
            changes[name] = _apply(current, base, value, given, path + ".")
        elif current == base:
            changes[name] = value
    return replace(config, **changes)
