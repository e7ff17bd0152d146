from dataclasses import dataclass, field

from embodied_pref.experiments.align_policy import AlignPolicyConfig
from embodied_pref.experiments.presets import with_preset


@dataclass(frozen=True)
class Inner:
    steps: int = 100
    rate: float = 1e-4


@dataclass(frozen=True)
class Outer:
    episodes: int = 50
    name: str = "full"
    inner: Inner = field(default_factory=Inner)


PRESET = {"episodes": 5, "name": "quick", "inner": {"steps": 10, "rate": 1e-3}}


def test_the_preset_fills_fields_left_at_their_defaults():
    assert with_preset(Outer(), PRESET) == Outer(5, "quick", Inner(10, 1e-3))


def test_flags_given_beside_the_preset_win_at_every_depth():
    given = Outer(episodes=7, inner=Inner(rate=3e-5))
    assert with_preset(given, PRESET) == Outer(7, "quick", Inner(10, 3e-5))


def test_a_whole_nested_value_replaces_the_field():
    assert with_preset(Outer(), {"inner": Inner(1, 1.0)}).inner == Inner(1, 1.0)
    assert with_preset(Outer(inner=Inner(2)), {"inner": Inner(1, 1.0)}).inner == Inner(2)


def test_align_policy_quick_keeps_the_flags_given_with_it():
    quick = AlignPolicyConfig(quick=True).resolved()
    assert (quick.demonstrations, quick.bc.steps, quick.policy.unet, quick.rwr.rounds) == (100, 8_000, "tiny", 3)
    assert not quick.quick
    flagged = AlignPolicyConfig(quick=True, demonstrations=300, labels=400).resolved()
    assert (flagged.demonstrations, flagged.labels, flagged.bc.steps) == (300, 400, 8_000)
