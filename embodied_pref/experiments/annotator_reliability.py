"""Reliability-weighted reward learning: four synthetic annotators of different quality label
X-MAGICAL clip pairs (an oracle, a mistake teacher, a myopic one and a near-adversarial one),
some queries by two of them. Three rewards are fit to the same labels: every label at face
value (annotator model "none"), each label weighted by its annotator's estimated flip rate
("reliability", `train_reward_with_reliability`), and, as the control, the same noise-aware fit
with one flip rate for all labels ("uniform"). Per seed: held-out preference accuracy against
the ground truth, and each annotator's estimated flip rate (with its posterior interval)
against the true one, and whether the estimate ranks the annotators as the truth does.

An annotator's true flip rate is their disagreement with the oracle on pairs drawn the way
queries are, measured on many such pairs (the rate is a property of the annotator: ε for the
mistake and adversarial annotators, for the myopic one how often its discounted return orders
a pair otherwise than the full return does). Their disagreement on the 150 or so pairs each
one happened to label is reported beside it: its sampling noise (±0.03 at a rate of 0.18) can
reverse two annotators whose rates are close. Writes results.json, table.md and flip_rates.png.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.stats
from tqdm.auto import tqdm

from embodied_pref.annotator_reliability import AnnotatorReliability, ReliabilityConfig
from embodied_pref.data import OUTCOME_TARGETS
from embodied_pref.distributed import is_main_process
from embodied_pref.evaluation import evaluate_reward
from embodied_pref.experiments.results import mean_std, save_results
from embodied_pref.experiments.tasks import scripted_clips
from embodied_pref.query_selection import select_pairs
from embodied_pref.reward_nets import RewardEnsemble, RewardNetConfig
from embodied_pref.reliability_training import train_reward_with_reliability
from embodied_pref.reward_training import RewardTrainingConfig, train_reward
from embodied_pref.segments import PreferencePairs, SegmentBatch
from embodied_pref.teachers import SyntheticTeacher, TeacherConfig

ANNOTATOR_NAMES = ("oracle", "mistake", "myopic", "adversarial")
RELIABILITY_REWARD_NET = RewardNetConfig(hidden_sizes=(64, 64), use_state=False, use_action=False,
                                         use_next_state=True)
"""`XMAGICAL_REWARD_NET` (a state reward of s') with 64-wide layers: a fit takes ~5 s instead of
~30–90 s on one core, which keeps 3 seeds × 5 fits within minutes; fit to the oracle's answers to
the experiment's queries it scored 0.80/0.80 held-out accuracy against 0.82/0.82 at 256 wide
(seeds 10 and 11, not the reported ones)."""
ARMS = ("none", "uniform", "reliability")
"""Reward fits compared: every label at face value; the noise-aware loss with one flip rate
estimated for all labels pooled (the control); one flip rate per annotator."""


@dataclass(frozen=True)
class AnnotatorReliabilityConfig:
    """The annotator-reliability experiment: an oracle, a mistake, a myopic and an adversarial
    annotator label clip pairs of a task; rewards that take the labels at face value ("none"),
    with one flip rate for all ("uniform") and with each annotator's estimated flip rate
    ("reliability") are scored on held-out clips. The defaults take about 1.5 minutes on one core."""

    task: str = "xmagical-avoid"
    """Task whose scripted episodes are cut into clips (see `collect --task`)."""
    embodiment: str = "Gripper"
    """Embodiment of the episodes."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Repetitions: episodes, queries, annotators' answers, reward initialization."""
    labels: int = 600
    """Labels in all, over every annotator."""
    overlap: float = 0.15
    """Share of queries answered by two annotators (the rest by one); with 600 labels, 522
    queries of which 78 are answered twice."""
    mistake_prob: float = 0.2
    """The mistake annotator flips each answer with this probability."""
    myopic_gamma: float = 0.8
    """The myopic annotator weighs step t of L by γ^(L−1−t)."""
    adversarial_prob: float = 0.45
    """The adversarial annotator flips each answer with this probability."""
    train_episodes: int = 60
    """Episodes whose clips are queried."""
    test_episodes: int = 30
    """Held-out episodes whose clips score the reward."""
    qualities: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9)
    """Scripted demonstrator qualities, cycled over episodes (0 random ... 1 expert)."""
    violating_share: float = 0.3
    """Share of episodes whose demonstrator goes against the task's hidden preference."""
    clip_length: int = 50
    """Steps per clip."""
    clips_per_episode: int = 8
    """Clips cut at random starts from each episode."""
    test_pairs: int = 2000
    """Held-out clip pairs for preference accuracy."""
    rounds: int = 1
    """Noise-aware refits after the plain fit, each with the flip rates the previous reward gave."""
    reward_net: RewardNetConfig = RELIABILITY_REWARD_NET
    """The reward ensemble."""
    training: RewardTrainingConfig = field(default_factory=lambda: RewardTrainingConfig(progress=False))
    """Fitting each reward (each seed seeds its own)."""
    reliability: ReliabilityConfig = ReliabilityConfig()
    """Prior and stopping rule of the flip-rate estimate."""
    prior: Literal["in_sample", "out_of_bag", "without_annotator"] = "without_annotator"
    """Where the estimate's P(first better) of each query comes from (`train_reward_with_reliability`);
    the uniform control pools everyone as one annotator, whom no other annotator's labels can
    judge, so it always takes "out_of_bag"."""
    population_pairs: int = 20_000
    """Pairs, drawn like the queries, on which each annotator's true flip rate is measured."""
    out: Path = Path("runs/experiments/annotator_reliability")
    """Directory for results.json, table.md and flip_rates.png."""

    def __post_init__(self) -> None:
        if not 0 <= self.overlap <= 1:
            raise ValueError(f"overlap: expected a share in [0, 1], found {self.overlap}")
        if self.labels < 2 * len(ANNOTATOR_NAMES):
            raise ValueError(f"labels: expected at least {2 * len(ANNOTATOR_NAMES)}, found {self.labels}")
        if not 0 <= self.violating_share <= 1:
            raise ValueError(f"violating_share: expected a share in [0, 1], found {self.violating_share}")

    def annotators(self, seed: int) -> list[SyntheticTeacher]:
        """The four annotators, in `ANNOTATOR_NAMES` order, each with its own random stream."""
        configs = [TeacherConfig("oracle"), TeacherConfig("mistake", mistake_prob=self.mistake_prob),
                   TeacherConfig("myopic", gamma=self.myopic_gamma),
                   TeacherConfig("adversarial", mistake_prob=self.adversarial_prob)]
        return [SyntheticTeacher(c, seed=seed * 100 + k) for k, c in enumerate(configs)]


def assign_queries(n_labels: int, n_annotators: int, overlap: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Who answers what: (query index (n_labels,), annotator index (n_labels,), n_queries).

    round(n_labels / (1 + overlap)) queries; the last n_labels − n_queries of them (in a random
    order) go to two distinct annotators, the pairs of annotators taken in turn; every other
    query to one, the annotators taken in turn, so that each gets about as many labels.
    """
    n_queries = int(round(n_labels / (1 + overlap)))
    n_twice = n_labels - n_queries
    if n_twice > n_queries:
        raise ValueError(f"overlap: {overlap} asks for more doubly answered queries than queries")
    order = rng.permutation(n_queries)
    couples = [(a, b) for a in range(n_annotators) for b in range(a + 1, n_annotators)]
    couples = [couples[i] for i in rng.permutation(len(couples))]
    offset = int(rng.integers(n_annotators))
    queries, annotators = [], []
    for j, query in enumerate(order):
        if j < n_twice:
            queries += [query, query]
            annotators += list(couples[j % len(couples)])
        else:
            queries.append(query)
            annotators.append((offset + j) % n_annotators)
    return np.array(queries), np.array(annotators), n_queries


@dataclass(frozen=True)
class AnnotatedPairs:
    """The experiment's labels: pairs with the query and the annotator of each."""

    pairs: PreferencePairs
    """Labelled pairs; `groups` holds the query ids."""
    annotators: np.ndarray
    """(N,) str: who gave each label."""
    oracle_targets: np.ndarray
    """(N,) float32: the oracle's answer to each pair (the truth the flips are counted against)."""


def annotate(pool: SegmentBatch, config: AnnotatorReliabilityConfig, seed: int) -> AnnotatedPairs:
    """Uniformly drawn distinct clip pairs of `pool`, answered as `assign_queries` says."""
    rng = np.random.default_rng([seed, 1])
    query_of, annotator_of, n_queries = assign_queries(config.labels, len(ANNOTATOR_NAMES), config.overlap, rng)
    selected = select_pairs(pool, n_queries, rng)
    first, second = selected.first[query_of], selected.second[query_of]
    targets = np.zeros(len(query_of), np.float32)
    for k, teacher in enumerate(config.annotators(seed)):
        mine = annotator_of == k
        outcomes = teacher.label(pool.gt_rewards[first[mine]], pool.gt_rewards[second[mine]])
        targets[mine] = [OUTCOME_TARGETS[o] for o in outcomes]
    oracle = SyntheticTeacher(TeacherConfig("oracle")).label(pool.gt_rewards[first], pool.gt_rewards[second])
    return AnnotatedPairs(
        pairs=PreferencePairs(pool[first], pool[second], targets, np.array([f"q{q}" for q in query_of])),
        annotators=np.array([ANNOTATOR_NAMES[k] for k in annotator_of]),
        oracle_targets=np.array([OUTCOME_TARGETS[o] for o in oracle], np.float32),
    )


def clip_pools(config: AnnotatorReliabilityConfig, seed: int) -> tuple[SegmentBatch, SegmentBatch]:
    """(training clips, held-out clips) from disjoint scripted episodes."""
    def pool(episodes: int, first_seed: int) -> SegmentBatch:
        rng = np.random.default_rng(first_seed)
        qualities = [config.qualities[i % len(config.qualities)] for i in range(episodes)]
        violating = rng.permutation([i < round(config.violating_share * episodes) for i in range(episodes)])
        return scripted_clips(config.task, config.embodiment, qualities, first_seed, config.clip_length,
                              config.clips_per_episode, rng, violations=list(violating))

    return pool(config.train_episodes, seed * 100_000), pool(config.test_episodes, seed * 100_000 + 50_000)


def population_flip_rates(pool: SegmentBatch, config: AnnotatorReliabilityConfig, seed: int) -> np.ndarray:
    """(annotators,) each annotator's disagreement with the oracle on `config.population_pairs`
    pairs of `pool` drawn like the queries, with streams of their own (not the labelling ones)."""
    selected = select_pairs(pool, config.population_pairs, np.random.default_rng([seed, 2]))
    first, second = pool.gt_rewards[selected.first], pool.gt_rewards[selected.second]
    oracle = SyntheticTeacher(TeacherConfig("oracle")).label(first, second)
    return np.array([np.mean([a != o for a, o in zip(teacher.label(first, second), oracle)])
                     for teacher in config.annotators(seed + 10_000)])


def ranks_correctly(estimated: np.ndarray, true: np.ndarray) -> bool:
    """Whether the estimate orders every two annotators whose true rates differ as the truth does."""
    return all(
        np.sign(estimated[i] - estimated[j]) == np.sign(true[i] - true[j])
        for i in range(len(true)) for j in range(i + 1, len(true)) if true[i] != true[j]
    )


def run_seed(config: AnnotatorReliabilityConfig, seed: int) -> dict:
    """One seed: every arm of `ARMS` on the same labels; returns its row."""
    train, test = clip_pools(config, seed)
    labelled = annotate(train, config, seed)
    training = RewardTrainingConfig(**{**asdict(config.training), "seed": seed})
    dims = train.observations.shape[-1], train.actions.shape[-1]

    started = time.perf_counter()
    plain = RewardEnsemble(*dims, config.reward_net)
    train_reward(plain, labelled.pairs, training)
    none_seconds = time.perf_counter() - started
    started = time.perf_counter()
    weighted = RewardEnsemble(*dims, config.reward_net)
    fit = train_reward_with_reliability(weighted, labelled.pairs, labelled.annotators, training,
                                        rounds=config.rounds, reliability=config.reliability, prior=config.prior)
    reliability_seconds = time.perf_counter() - started
    # The control: the same noise-aware fit with one flip rate for everyone (all labels pooled as
    # one annotator), so that a gain of telling annotators apart shows apart from a gain of a
    # noise-aware loss as such.
    started = time.perf_counter()
    pooled = RewardEnsemble(*dims, config.reward_net)
    uniform = train_reward_with_reliability(pooled, labelled.pairs, np.full(len(labelled.pairs), "everyone"),
                                            training, rounds=config.rounds, reliability=config.reliability)
    uniform_seconds = time.perf_counter() - started

    evaluation = {name: evaluate_reward(ensemble, test, n_pairs=config.test_pairs, seed=seed)
                  for name, ensemble in (("none", plain), ("uniform", pooled), ("reliability", weighted))}
    estimates = {"weighting": fit.trained_with, "final": fit.estimate}
    annotators = []
    for name in ANNOTATOR_NAMES:
        mine = labelled.annotators == name
        annotators.append({
            "annotator": name, "labels": int(mine.sum()), "overlap_labels": fit.estimate.annotators[name].n_overlap,
            "flip_rate_on_labels": float(np.mean(labelled.pairs.targets[mine] != labelled.oracle_targets[mine])),
            "model_agreement": fit.estimate.annotators[name].model_agreement,
            **{kind: None if e is None else _flip_estimate(e.annotators[name]) for kind, e in estimates.items()},
            "estimates_by_round": [e.annotators[name].flip_rate for e in fit.estimates],
        })
    for a, rate in zip(annotators, population_flip_rates(train, config, seed)):
        a["true_flip_rate"] = float(rate)
    true = np.array([a["true_flip_rate"] for a in annotators])
    on_labels = np.array([a["flip_rate_on_labels"] for a in annotators])
    ranking = {}
    for kind, e in estimates.items():
        if e is not None:
            estimated = np.array([a[kind]["flip_rate"] for a in annotators])
            ranking[kind] = {"kendall_tau": float(scipy.stats.kendalltau(estimated, true).statistic),
                             "ranks_correctly": ranks_correctly(estimated, true),
                             "ranks_as_on_labels": ranks_correctly(estimated, on_labels)}
    return {
        "seed": seed, "labels": len(labelled.pairs), "queries": len(np.unique(labelled.pairs.groups)),
        **{f"accuracy_{name}": e.accuracy for name, e in evaluation.items()},
        **{f"spearman_{name}": e.spearman for name, e in evaluation.items()},
        "uniform_flip_rate": uniform.estimate.annotators["everyone"].flip_rate,
        "ranking": ranking, "annotators": annotators,
        "best_epochs": [r.best_epoch for r in fit.reports],
        "seconds_none": none_seconds, "seconds_uniform": uniform_seconds, "seconds_reliability": reliability_seconds,
    }


def _flip_estimate(estimate: AnnotatorReliability) -> dict:
    return {"flip_rate": estimate.flip_rate, "std": estimate.flip_std,
            "interval": None if estimate.interval is None else list(estimate.interval)}


ESTIMATE_KINDS = {"weighting": "ε the final reward was trained with", "final": "ε re-estimated with the final reward"}


def plot_flip_rates(rows: list[dict], path: Path, title: str = "") -> None:
    """Estimated flip rates (posterior mean, interval as error bar: the ones the final reward was
    trained with, and the re-estimate with it) beside the true one, per annotator; one offset
    group of points per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = [a["annotator"] for a in rows[0]["annotators"]]
    width = 0.7 / max(len(rows), 1)
    for s, row in enumerate(rows):
        x = np.arange(len(names)) - 0.35 + (s + 0.5) * width
        for shift, (kind, color) in zip((-0.22, 0.22), (("weighting", "tab:blue"), ("final", "tab:green"))):
            if row["annotators"][0][kind] is None:
                continue
            estimated = np.array([a[kind]["flip_rate"] for a in row["annotators"]])
            low = estimated - np.array([a[kind]["interval"][0] for a in row["annotators"]])
            high = np.array([a[kind]["interval"][1] for a in row["annotators"]]) - estimated
            ax.errorbar(x + shift * width, estimated, yerr=[np.maximum(low, 0), np.maximum(high, 0)], fmt="o",
                        ms=4, capsize=2, color=color, label=ESTIMATE_KINDS[kind] if s == 0 else None)
        ax.scatter(x, [a["true_flip_rate"] for a in row["annotators"]], marker="x", color="tab:red",
                   zorder=3, label="true: disagreement with the oracle" if s == 0 else None)
        ax.scatter(x, [a["flip_rate_on_labels"] for a in row["annotators"]], marker="+", color="tab:gray",
                   zorder=3, label="disagreement on the pairs it labelled" if s == 0 else None)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("flip rate ε (posterior mean, 90% interval)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_annotator_reliability(config: AnnotatorReliabilityConfig = AnnotatorReliabilityConfig()) -> dict:
    """Every seed; writes results.json, table.md and flip_rates.png to `config.out`."""
    started = time.perf_counter()
    rows = [run_seed(config, seed) for seed in tqdm(config.seeds, desc="seeds")]
    gain = [r["accuracy_reliability"] - r["accuracy_none"] for r in rows]
    table = [
        f"{config.task} ({config.embodiment}), {config.labels} labels, {config.overlap:.0%} of queries "
        f"answered twice, {len(config.seeds)} seeds", "",
        "| annotator model | held-out accuracy (mean ± std) | Spearman (mean ± std) |", "|---|---:|---:|",
        *[f"| {name} | {mean_std([r[f'accuracy_{name}'] for r in rows])} | "
          f"{mean_std([r[f'spearman_{name}'] for r in rows])} |" for name in ARMS],
        "", f"Accuracy gain of reliability over none: {mean_std(gain)} (per seed: "
        + ", ".join(f"{g:+.3f}" for g in gain) + "); over uniform: "
        + mean_std([r["accuracy_reliability"] - r["accuracy_uniform"] for r in rows]) + ".", "",
        "| annotator (seed) | labels | true flip rate | on its labels | " + " | ".join(ESTIMATE_KINDS.values()) + " |",
        "|---|---:|---:|---:|" + "---|" * len(ESTIMATE_KINDS),
    ]
    for row in rows:
        for a in row["annotators"]:
            cells = ["–" if a[kind] is None else
                     f"{a[kind]['flip_rate']:.3f} ± {a[kind]['std']:.3f} [{a[kind]['interval'][0]:.3f}, "
                     f"{a[kind]['interval'][1]:.3f}]" for kind in ESTIMATE_KINDS]
            table.append(f"| {a['annotator']} ({row['seed']}) | {a['labels']} | {a['true_flip_rate']:.3f} | "
                         f"{a['flip_rate_on_labels']:.3f} | "
                         + " | ".join(cells) + " |")
    table += ["", "| seed | " + " | ".join(f"{k}: Kendall τ | {k}: ranks correctly | {k}: as on their labels"
                                           for k in ESTIMATE_KINDS) + " |",
              "|---:|" + "---:|---|---|" * len(ESTIMATE_KINDS)]
    yes_no = {True: "yes", False: "no"}
    for row in rows:
        cells = [f"{row['ranking'][k]['kendall_tau']:.3f} | {yes_no[row['ranking'][k]['ranks_correctly']]} | "
                 f"{yes_no[row['ranking'][k]['ranks_as_on_labels']]}" if k in row["ranking"] else "– | – | –"
                 for k in ESTIMATE_KINDS]
        table.append(f"| {row['seed']} | " + " | ".join(cells) + " |")
    wall = time.perf_counter() - started
    if is_main_process():
        config.out.mkdir(parents=True, exist_ok=True)
        plot_flip_rates(rows, config.out / "flip_rates.png",
                        title=f"{config.task}: annotators' flip rates, estimated vs true")
    ranks = {k: all(r["ranking"][k]["ranks_correctly"] for r in rows) for k in ESTIMATE_KINDS if k in rows[0]["ranking"]}
    return save_results(config.out, config, rows, table, accuracy_gain_mean=float(np.mean(gain)),
                        ranks_correctly_every_seed=ranks, wall_seconds=wall)
