from dataclasses import dataclass, field

from embodied_pref.experiments.align_policy import AlignPolicyConfig
from embodied_pref.experiments.presets import flags_given, with_preset


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


def test_flags_given_name_dotted_fields_in_every_spelling():
    argv = ["rapl", "--quick", "--ppo-steps", "300000", "--ppo_seeds=0", "--ppo.vec-env", "subproc", "--no-fine-tune",
            "--encoder.no-pretrained", "-x", "--"]
    assert flags_given(argv) == {"quick", "ppo_steps", "ppo_seeds", "ppo.vec_env", "no_fine_tune", "fine_tune",
                                 "encoder.no_pretrained", "encoder.pretrained"}


def test_a_given_flag_wins_even_at_its_default_value():
    assert with_preset(Outer(), PRESET, given={"episodes", "inner.rate"}) == Outer(50, "quick", Inner(10, 1e-4))
    assert with_preset(Outer(), PRESET, given={"inner"}).inner == Inner()


def test_the_command_line_keeps_default_valued_flags_beside_quick(monkeypatch):
    from embodied_pref import cli
    from embodied_pref.experiments.rapl import RaplExperimentConfig

    ran = []
    monkeypatch.setattr(cli, "run_rapl_experiment", ran.append)
    cli.main(["experiment", "rapl", "--quick", "--ppo-steps", "300000", "--ppo-seeds", "0", "1", "2", "--ppo.vec-env",
              "subproc", "--ablations"])
    assert (ran[0].ppo_steps, ran[0].ppo_seeds, ran[0].ppo.vec_env, ran[0].ablations) == (300_000, (0, 1, 2), "subproc", ())
    quick = RaplExperimentConfig(quick=True).resolved()
    assert (ran[0].quick, ran[0].stride, ran[0].ppo.normalize_reward) == (False, quick.stride, True)  # the rest of the preset
    assert quick.ppo_steps != 300_000 and quick.ppo.vec_env != "subproc"
