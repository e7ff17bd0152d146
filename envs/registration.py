"""What every suite needs to declare its variants: a check of a variant's value, and one
gymnasium id registered per combination of variant values."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, found {value!r}")


def register_variants(env_id: Callable[..., str], entry_point: str, **choices: tuple[str, ...]) -> None:
    """Register `env_id(**values)` -> `entry_point(**values)` for every combination of the
    `choices` (keyword -> its values), unless already registered."""
    for values in itertools.product(*choices.values()):
        kwargs = dict(zip(choices, values))
        name = env_id(**kwargs)
        if name not in gymnasium.registry:
            gymnasium.register(name, entry_point=entry_point, kwargs=kwargs)
