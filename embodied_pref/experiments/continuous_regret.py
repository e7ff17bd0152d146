"""Regret labels on continuous control: which learner recovers them, reward or advantage?

On X-MAGICAL SweepToTop (state), a regret teacher labels clip pairs with
V̂(s_0) − (Σr + V̂(s_L)), V̂ fit to Monte-Carlo returns of the scripted expert rolled out
from states of mixed-quality episodes (the episode is replayed from its seed to the state,
then the expert takes over for `value_horizon` steps). Learners fit the same Bradley-Terry
loss on the same labels: partial-return rewards r(s') and r(s, a, s'), and the advantage
Â(s, a) (Knox et al. 2024: the partial-return form fit to regret labels learns ≈ A*). Each
is scored by held-out preference accuracy against the regret teacher's labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embodied_pref.data import OUTCOME_TARGETS, Trajectory
from embodied_pref.distributed import is_main_process
from embodied_pref.experiments import tasks
from embodied_pref.experiments.results import mean_std, save_results
from embodied_pref.experiments.reward_quality import XMAGICAL_REWARD_NET
from embodied_pref.experiments.xmagical_data import MIXED_QUALITIES, mixed_quality_pools, scripted_episodes
from embodied_pref.metrics import preference_accuracy
from embodied_pref.query_selection import distinct_sets, random_pairs
from embodied_pref.regret_teacher import RegretTeacher
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig, preference_probabilities, train_reward
from embodied_pref.segments import PreferencePairs, SegmentBatch
from embodied_pref.value_estimation import ValueFitConfig, ValueFunction, fit_value_function
from envs.xmagical import SweepToTopEnv

ADVANTAGE_NET = RewardNetConfig(use_state=True, use_action=True, use_next_state=False)
"""Â(s, a): the partial-return form over state-action pairs, fit to regret labels."""

LEARNERS: dict[str, RewardNetConfig] = {
    "partial return r(s')": XMAGICAL_REWARD_NET,
    "partial return r(s, a, s')": RewardNetConfig(use_state=True, use_action=True, use_next_state=True),
    "regret form Σr(s') + Φ(s_L) − Φ(s_0)": RewardNetConfig(use_state=False, use_action=False, use_next_state=True,
                                                            potential=True),
    "advantage Â(s, a)": ADVANTAGE_NET,
}


@dataclass(frozen=True)
class ExpertValueConfig:
    """V̂ for the regret teacher: the scripted expert's Monte-Carlo returns, regressed."""

    episodes: int = 40
    """Mixed-quality episodes whose states get Monte-Carlo value targets."""
    states_per_episode: int = 10
    """States per episode the expert is rolled out from."""
    horizon: int = 100
    """Expert steps summed into each Monte-Carlo return."""


@dataclass(frozen=True)
class ContinuousRegretConfig:
    """Regret teacher vs reward and advantage learners on X-MAGICAL SweepToTop (state)."""

    embodiment: str = "Gripper"
    """X-MAGICAL embodiment."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Independent repetitions (episodes, value fit, pairs, initialization)."""
    labels: int = 1000
    """Regret-teacher labels each learner trains on."""
    train_episodes: int = 60
    """Episodes whose clips may be labelled."""
    test_episodes: int = 30
    """Held-out episodes for evaluation."""
    clip_length: int = 10
    """Steps per clip. Short, as in Knox et al.: over long clips Σr dominates the regret and the
    two teachers mostly agree (17% of held-out pairs disagree at 50 steps, 32% at 10)."""
    value: ExpertValueConfig = ExpertValueConfig()
    """How the regret teacher's V̂ is estimated."""
    test_pairs: int = 2000
    """Held-out pairs labelled by the regret teacher."""
    max_epochs: int = 300
    """Reward-training epochs (early stopping on a validation split)."""
    out: Path = Path("runs/experiments/continuous_regret")
    """Directory for results.json and table.md."""


def expert_returns(embodiment: str, trajectory: Trajectory, steps: np.ndarray, horizon: int) -> np.ndarray:
    """Return of the scripted expert over `horizon` steps from each state `steps[i]` of `trajectory`.

    The episode is replayed from its seed with its recorded actions to the state (X-MAGICAL is
    deterministic given both), then the expert acts. (len(steps),) float64.
    """
    env = SweepToTopEnv(embodiment, max_episode_steps=trajectory.length + horizon)
    spec = tasks.task_spec("xmagical-sweep")
    returns = []
    try:
        for step in steps:
            obs, _ = env.reset(seed=trajectory.seed)
            for action in trajectory.actions[:step]:
                obs, *_ = env.step(action)
            if not np.allclose(obs, trajectory.observations[step], atol=1e-4):
                raise RuntimeError(f"trajectory {trajectory.id}: replay diverged from the recorded state at step {step}")
            expert = spec.demonstrator(env, 1.0, False, 0)
            total = 0.0
            for _ in range(horizon):
                obs, reward, *_ = env.step(expert(obs))
                total += float(reward)
            returns.append(total)
    finally:
        env.close()
    return np.asarray(returns)


def expert_value_function(
    embodiment: str, config: ExpertValueConfig, seed: int, progress: bool = False
) -> ValueFunction:
    """V̂ regressed on expert Monte-Carlo returns from states of mixed-quality episodes."""
    qualities = [MIXED_QUALITIES[i % len(MIXED_QUALITIES)] for i in range(config.episodes)]
    episodes = scripted_episodes(embodiment, qualities, seed * 100_000 + 70_000)
    rng = np.random.default_rng([seed, 1])
    observations, targets = [], []
    for trajectory in tqdm(episodes, desc="expert returns", disable=not progress, leave=False):
        steps = np.sort(rng.choice(trajectory.length + 1, config.states_per_episode, replace=False))
        observations.append(trajectory.observations[steps])
        targets.append(expert_returns(embodiment, trajectory, steps, config.horizon))
    source = {"kind": "monte-carlo", "policy": "scripted expert (quality 1)", "horizon": config.horizon,
              "states": "mixed-quality X-MAGICAL episodes, replayed", "embodiment": embodiment,
              "episodes": config.episodes, "states_per_episode": config.states_per_episode, "seed": seed}
    return fit_value_function(np.concatenate(observations), np.concatenate(targets), source, ValueFitConfig(seed=seed))


def cached_value_function(config: ContinuousRegretConfig, seed: int, progress: bool) -> ValueFunction:
    """`expert_value_function`, kept in `config.out` so that a rerun (another label budget,
    clip length or learner) reuses it."""
    path = config.out / f"value_{config.embodiment}_seed{seed}.pt"
    if path.exists():
        value = ValueFunction.load(path)
        expected = {"embodiment": config.embodiment, "horizon": config.value.horizon, "episodes": config.value.episodes,
                    "states_per_episode": config.value.states_per_episode, "seed": seed}
        if all(value.source.get(k) == v for k, v in expected.items()):
            return value
    value = expert_value_function(config.embodiment, config.value, seed, progress)
    if is_main_process():  # every rank fits the same V̂ (one seed); one writes it
        config.out.mkdir(parents=True, exist_ok=True)
        value.save(path)
    return value


def regret_pairs(pool: SegmentBatch, first: np.ndarray, second: np.ndarray, teacher: RegretTeacher) -> PreferencePairs:
    targets = np.array([OUTCOME_TARGETS[o] for o in teacher.label_segments(pool[first], pool[second])], np.float32)
    return PreferencePairs(pool[first], pool[second], targets)


def run_continuous_regret(config: ContinuousRegretConfig, progress: bool = True) -> dict:
    """Runs every seed; writes results.json and table.md to `config.out`."""
    rows = []
    for seed in tqdm(config.seeds, desc="seeds", disable=not progress):
        value = cached_value_function(config, seed, progress)
        teacher = RegretTeacher(value)
        pools = mixed_quality_pools(config.embodiment, seed, config.train_episodes, config.test_episodes,
                                    config.clip_length)
        rng = np.random.default_rng([seed, 2])
        asked = distinct_sets(len(pools.train), 2, config.labels, rng)
        train = regret_pairs(pools.train, asked[:, 0], asked[:, 1], teacher)
        test_first, test_second = random_pairs(len(pools.test), config.test_pairs, rng)
        test = regret_pairs(pools.test, test_first, test_second, teacher)
        partial_return_prefers_first = pools.test.gt_returns[test_first] > pools.test.gt_returns[test_second]
        decisive = test.targets != 0.5
        disagreement = float(np.mean(partial_return_prefers_first[decisive] != (test.targets[decisive] == 1)))
        for name, net in LEARNERS.items():
            ensemble = RewardEnsemble(pools.test.observations.shape[-1], pools.test.actions.shape[-1], net)
            train_reward(ensemble, train, RewardTrainingConfig(seed=seed, progress=False, max_epochs=config.max_epochs))
            prob = preference_probabilities(ensemble, test.first, test.second).mean(0)
            rows.append({"seed": seed, "learner": name, "value_r2": value.validation_r2,
                         "teachers_disagree": disagreement,
                         "accuracy": preference_accuracy(prob, test.targets).accuracy})
    table = ["| learner (Bradley-Terry on regret labels) | held-out accuracy (mean ± std) | seeds |", "|---|---:|---:|"]
    for name in LEARNERS:
        table.append(f"| {name} | {mean_std([r['accuracy'] for r in rows if r['learner'] == name])} | "
                     f"{len(config.seeds)} |")
    per_seed = [r for r in rows if r["learner"] == next(iter(LEARNERS))]
    table.append(f"\nV̂ fit to expert Monte-Carlo returns: held-out R² {mean_std([r['value_r2'] for r in per_seed])}. "
                 f"Held-out pairs where the regret and partial-return teachers disagree: "
                 f"{mean_std([r['teachers_disagree'] for r in per_seed])}.")
    return save_results(config.out, config, rows, table)
