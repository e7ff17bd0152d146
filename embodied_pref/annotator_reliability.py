"""How reliable each annotator is: a flip rate ε_a per annotator, Dawid–Skene style.

Model (the "one-coin" Dawid–Skene model for two classes): each pairwise query q has an unknown
true preference z_q ∈ {first better, second better}; annotator a reports it and flips it with
probability ε_a, independently of the query. The reward model's P(first better) for q is the
prior on z_q (0.5 without a model). EM alternates:

- E-step: μ_q = P(z_q = first | answers) ∝ π_q · Π_a (1 − ε_a)^[y_qa = first] ε_a^[y_qa = second],
  against (1 − π_q) · Π_a ε_a^[y_qa = first] (1 − ε_a)^[y_qa = second];
- M-step: an annotator's expected flips d_a = Σ_q [y_qa = first](1 − μ_q) + [y_qa = second] μ_q
  over their n_a answers, and ε_a = (α + d_a) / (α + β + n_a), the mean of the Beta(α + d_a,
  β + n_a − d_a) posterior of a Beta(α, β) prior, capped at `max_flip` (0.5: an annotator is
  taken to be no worse than a coin, which also rules out EM's mirror solution where everyone
  flips).

The uncertainty of ε_a is that Beta posterior (mean, std and an equal-tailed interval) from the
expected counts, conditional on the model's probabilities. Without a model, a query answered
by one annotator says nothing about them, so only overlap queries (answered by >= 2
annotators) count; with a model, so do the queries it gives a probability for. Answers are
the decisive pairwise ones (left/right); equal, cannot-tell, skip and rankings carry no flip
to count and are left out. An annotator's latest answer to a query counts.

What the model cannot see, it cannot charge: an annotator whose mistakes are the model's own
(e.g. one who ignores what the reward has not learnt either) looks reliable, and one who is
right where the model is wrong is charged for it. Only overlap queries tell them apart, and
the model's probabilities should come from a model that did not train on the query
(`train_reward_with_reliability` uses its ensemble's out-of-bag members).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import beta as beta_distribution

from embodied_pref.data import Label, Outcome


@dataclass(frozen=True)
class ReliabilityConfig:
    """Prior and stopping rule of the flip-rate estimate."""

    prior_flips: float = 1.0
    """α of the Beta(α, β) prior on each flip rate (pseudo-count of flips)."""
    prior_agreements: float = 1.0
    """β of the Beta(α, β) prior (pseudo-count of answers that match the truth)."""
    max_flip: float = 0.5
    """Upper bound on a flip rate: 0.5 means an annotator's answers are ignored, never inverted."""
    model_floor: float = 0.02
    """The model's P(first better) is clipped to [floor, 1 − floor], so that a confident model
    cannot turn every disagreement into a certain flip."""
    iterations: int = 200
    """Most EM iterations."""
    tolerance: float = 1e-7
    """EM stops when no flip rate moves by more than this."""
    interval: float = 0.9
    """Mass of the reported equal-tailed posterior interval."""

    def __post_init__(self) -> None:
        if not (self.prior_flips > 0 and self.prior_agreements > 0):
            raise ValueError(f"ReliabilityConfig.prior_flips/prior_agreements: expected > 0, found "
                             f"{self.prior_flips}/{self.prior_agreements}")
        if not 0 < self.max_flip <= 0.5:
            raise ValueError(f"ReliabilityConfig.max_flip: expected in (0, 0.5], found {self.max_flip}")
        if not 0 <= self.model_floor < 0.5:
            raise ValueError(f"ReliabilityConfig.model_floor: expected in [0, 0.5), found {self.model_floor}")
        if self.iterations < 1 or not self.tolerance > 0:
            raise ValueError(f"ReliabilityConfig.iterations/tolerance: expected >= 1 and > 0, found "
                             f"{self.iterations}/{self.tolerance}")
        if not 0 < self.interval < 1:
            raise ValueError(f"ReliabilityConfig.interval: expected in (0, 1), found {self.interval}")


@dataclass(frozen=True)
class AnnotatorReliability:
    """One annotator's estimated flip rate and how sure the estimate is."""

    annotator: str
    n_labels: int
    """Decisive pairwise answers given."""
    n_evidence: int
    """Answers the estimate counts: those to overlap queries and to queries the model scored."""
    n_overlap: int
    """Answers to queries that another annotator answered too."""
    expected_flips: float
    """Σ over the counted answers of P(the answer is the opposite of the truth)."""
    flip_rate: float | None
    """Posterior mean of ε_a, capped at `ReliabilityConfig.max_flip` (the rate training uses);
    None when no answer counts."""
    flip_std: float | None
    """Posterior standard deviation of ε_a."""
    interval: tuple[float, float] | None
    """Equal-tailed posterior interval of ε_a (`ReliabilityConfig.interval` mass), uncapped: an
    interval above 0.5 says the annotator answers against the model more often than not."""
    model_agreement: float | None
    """Share of the answers the model agrees with (its P(first better) on the answer's side of
    0.5; 0.5 itself counts half), over the queries it scored; None if it scored none."""


@dataclass(frozen=True)
class ReliabilityEstimate:
    """Every annotator's reliability, and the posterior over each query's true preference."""

    annotators: dict[str, AnnotatorReliability]
    """By annotator name, sorted by name."""
    posterior_first: dict[str, float]
    """P(first clip truly better | answers, model) per query id."""
    iterations: int
    """EM iterations run."""
    converged: bool
    with_model: bool
    """Whether a model's probabilities were the prior (else 0.5 and overlap only)."""

    def flip_rates(self) -> dict[str, float]:
        """Estimated ε per annotator, 0 where nothing was counted (their labels are taken at face value)."""
        return {name: (a.flip_rate if a.flip_rate is not None else 0.0) for name, a in self.annotators.items()}

    def flip_rate_per_label(self, annotators: Sequence[str]) -> np.ndarray:
        """(N,) float32 ε of each label's annotator (0 for an annotator not estimated)."""
        rates = self.flip_rates()
        return np.array([rates.get(str(a), 0.0) for a in annotators], dtype=np.float32)


def decisive_answers(labels: Sequence[Label]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query ids (M,) str, annotators (M,) str, prefers_first (M,) bool) of the left/right
    answers among `labels`; an annotator's latest answer to a query replaces earlier ones
    (even a later skip removes an earlier answer)."""
    latest: dict[tuple[str, str], bool | None] = {}
    for index, label in enumerate(labels):
        if not isinstance(label, Label):
            raise TypeError(f"labels[{index}]: expected a Label, found {type(label).__name__}")
        key = (label.query_id, label.annotator)
        latest.pop(key, None)  # re-inserted last: the order follows the latest answers
        latest[key] = {Outcome.LEFT: True, Outcome.RIGHT: False}.get(label.outcome)
    kept = [(q, a, first) for (q, a), first in latest.items() if first is not None]
    return (np.array([k[0] for k in kept], dtype=object), np.array([k[1] for k in kept], dtype=object),
            np.array([k[2] for k in kept], dtype=bool))


def estimate_reliability(
    query_ids: Sequence[str],
    annotators: Sequence[str],
    prefers_first: Sequence[bool],
    prob_first: Mapping[str, float] | None = None,
    config: ReliabilityConfig = ReliabilityConfig(),
) -> ReliabilityEstimate:
    """Flip rate per annotator from decisive pairwise answers.

    query_ids, annotators: (M,) str; prefers_first: (M,) bool, True for "the first clip is
    better". One answer per (query, annotator) pair. prob_first: the model's P(first better)
    per query id; a query it lacks gets 0.5 and counts only if it overlaps. None estimates
    from overlap queries alone.
    """
    query_ids = np.asarray(query_ids, dtype=object).reshape(-1)
    annotators = np.asarray(annotators, dtype=object).reshape(-1)
    answers = np.asarray(prefers_first)
    if not len(query_ids) == len(annotators) == len(answers):
        raise ValueError(f"estimate_reliability: query_ids, annotators and prefers_first differ in "
                         f"length: {len(query_ids)}/{len(annotators)}/{len(answers)}")
    if answers.dtype != bool:
        raise ValueError(f"prefers_first: expected booleans (True: first clip better), found dtype {answers.dtype}")
    if any(not isinstance(a, str) for a in annotators):
        bad = next(a for a in annotators if not isinstance(a, str))
        raise ValueError(f"annotators: expected names (str; \"\" pools unnamed labels), found {bad!r}")
    queries, q_index = np.unique(query_ids.astype(str), return_inverse=True)
    names, a_index = np.unique(annotators.astype(str), return_inverse=True)
    queries, names = [str(q) for q in queries], [str(a) for a in names]
    if len(set(zip(q_index.tolist(), a_index.tolist()))) != len(answers):
        raise ValueError("estimate_reliability: expected one answer per (query, annotator); "
                         "`decisive_answers` keeps each annotator's latest")
    prior = np.full(len(queries), 0.5)
    if prob_first is not None:
        for i, query in enumerate(queries):
            p = float(prob_first.get(query, 0.5))
            if not 0 <= p <= 1:
                raise ValueError(f"prob_first[{query!r}]: expected a probability in [0, 1], found {p}")
            prior[i] = min(max(p, config.model_floor), 1 - config.model_floor)

    answers_per_query = np.bincount(q_index, minlength=len(queries))
    overlap = answers_per_query[q_index] >= 2
    with_prior = np.zeros(len(queries), dtype=bool)
    if prob_first is not None:
        with_prior = np.array([q in prob_first for q in queries], dtype=bool)
    counted = overlap | with_prior[q_index]
    y = answers.astype(np.float64)
    n_counted = np.bincount(a_index, weights=counted, minlength=len(names))

    flip = np.full(len(names), min(0.2, config.max_flip))
    converged, iteration = False, 0
    for iteration in range(1, config.iterations + 1):
        posterior = _posterior_first(prior, flip, q_index, a_index, y)
        expected = _expected_flips(posterior, q_index, a_index, y, counted, len(names))
        new_flip = np.minimum((config.prior_flips + expected) / (config.prior_flips + config.prior_agreements + n_counted),
                              config.max_flip)
        moved = np.max(np.abs(new_flip - flip), initial=0.0)
        flip = new_flip
        if moved <= config.tolerance:
            converged = True
            break
    posterior = _posterior_first(prior, flip, q_index, a_index, y)
    expected = _expected_flips(posterior, q_index, a_index, y, counted, len(names))

    reports = {}
    for k, name in enumerate(names):
        mine = a_index == k
        agreement, scored = None, mine & with_prior[q_index]
        if scored.any():
            model_p = np.array([float(prob_first[queries[q]]) for q in q_index[scored]])
            agreement = float(np.mean(np.where(model_p == 0.5, 0.5, (model_p > 0.5) == answers[scored])))
        a_post, b_post = config.prior_flips + expected[k], config.prior_agreements + n_counted[k] - expected[k]
        has_evidence = n_counted[k] > 0
        tail = (1 - config.interval) / 2
        reports[name] = AnnotatorReliability(
            annotator=name, n_labels=int(mine.sum()), n_evidence=int(n_counted[k]),
            n_overlap=int((mine & overlap).sum()), expected_flips=float(expected[k]),
            flip_rate=float(flip[k]) if has_evidence else None,
            flip_std=float(beta_distribution.std(a_post, b_post)) if has_evidence else None,
            interval=(float(beta_distribution.ppf(tail, a_post, b_post)),
                      float(beta_distribution.ppf(1 - tail, a_post, b_post))) if has_evidence else None,
            model_agreement=agreement,
        )
    return ReliabilityEstimate(
        annotators=reports, posterior_first={q: float(p) for q, p in zip(queries, posterior)},
        iterations=iteration, converged=converged, with_model=prob_first is not None)


def _posterior_first(prior: np.ndarray, flip: np.ndarray, q_index: np.ndarray, a_index: np.ndarray,
                     y: np.ndarray) -> np.ndarray:
    """E-step: P(z_q = first | answers) per query, in log space."""
    eps = np.clip(flip[a_index], 1e-12, 1 - 1e-12)
    log_if_first = np.where(y == 1, np.log1p(-eps), np.log(eps))   # answer given z = first
    log_if_second = np.where(y == 1, np.log(eps), np.log1p(-eps))  # answer given z = second
    n = len(prior)
    log_first = np.log(prior) + np.bincount(q_index, weights=log_if_first, minlength=n)
    log_second = np.log1p(-prior) + np.bincount(q_index, weights=log_if_second, minlength=n)
    return expit(log_first - log_second)


def _expected_flips(posterior: np.ndarray, q_index: np.ndarray, a_index: np.ndarray, y: np.ndarray,
                    counted: np.ndarray, n_annotators: int) -> np.ndarray:
    """M-step counts: Σ over an annotator's counted answers of P(answer ≠ truth)."""
    p_flip = np.where(y == 1, 1 - posterior[q_index], posterior[q_index])
    return np.bincount(a_index, weights=p_flip * counted, minlength=n_annotators)


def reliability_report(
    labels: Sequence[Label], prob_first: Mapping[str, float] | None = None,
    config: ReliabilityConfig = ReliabilityConfig(),
) -> dict:
    """JSON-able summary for the labeling app's agreement page: per annotator the number of
    decisive answers, the estimated flip rate with its posterior std and interval, and the
    agreement with the reward model (given its P(first better) per query id)."""
    query_ids, annotators, prefers_first = decisive_answers(labels)
    estimate = estimate_reliability(query_ids, annotators, prefers_first, prob_first, config)
    rows = []
    for a in estimate.annotators.values():
        row = asdict(a)
        for key in ("expected_flips", "flip_rate", "flip_std", "model_agreement"):
            row[key] = None if row[key] is None or math.isnan(row[key]) else round(row[key], 6)
        row["interval"] = None if a.interval is None else [round(v, 6) for v in a.interval]
        rows.append(row)
    return {
        "model": estimate.with_model,
        "answers": int(len(prefers_first)),
        "overlapping_queries": int(sum(1 for n in _answers_per_query(query_ids).values() if n >= 2)),
        "interval_mass": config.interval,
        "iterations": estimate.iterations,
        "converged": estimate.converged,
        "annotators": rows,
    }


def _answers_per_query(query_ids: np.ndarray) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in query_ids:
        counts[q] = counts.get(q, 0) + 1
    return counts
