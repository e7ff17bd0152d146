"""Preference models: how a segment's per-step rewards turn into P(first segment preferred)."""

from embodied_pref.preference.partial_return import PartialReturnModel

__all__ = ["PartialReturnModel"]
