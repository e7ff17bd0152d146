"""Preference models: how a segment's per-step rewards (partial return) or its regret turn into
P(first segment preferred)."""

from embodied_pref.preference.partial_return import PartialReturnModel
from embodied_pref.preference.regret import RegretModel, deterministic_regret, regret_from_advantages

__all__ = ["PartialReturnModel", "RegretModel", "deterministic_regret", "regret_from_advantages"]
