"""Presets (such as an experiment's --quick) that give way to the flags a user sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

Config = TypeVar("Config")


def with_preset(config: Config, preset: Mapping[str, Any]) -> Config:
    """`config` with the preset's value for every field still at its default, so that a flag
    the user gave wins over the preset. A nested config takes a nested mapping; a value that is
    not a mapping replaces the field whole. (A flag set to the default value itself cannot be
    told from no flag, and yields to the preset.)"""
    return _apply(config, type(config)(), preset)


def _apply(config: Any, default: Any, preset: Mapping[str, Any]) -> Any:
    changes = {}
    for name, value in preset.items():
        current, base = getattr(config, name), getattr(default, name)
        if isinstance(value, Mapping):
            changes[name] = _apply(current, base, value)
        elif current == base:
            changes[name] = value
    return replace(config, **changes)
