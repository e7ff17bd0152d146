"""Reward fitting that weights each label by its annotator's reliability: a plain fit, then
noise-aware refits (`reward_training.noise_aware_loss`), each with every annotator's flip rate
estimated (`annotator_reliability`) from the reward before.

Where the estimate's prior on a query comes from matters. A reward fit to everyone's labels
learns an annotator's systematic errors from their other labels, so even its members that never
saw a query lean towards that annotator's answer, and the annotator looks more reliable than
they are. `prior="without_annotator"` scores each annotator's answers with a reward fit without
any of their labels (one more fit per annotator and round)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from embodied_pref.annotator_reliability import ReliabilityConfig, ReliabilityEstimate, estimate_reliability
from embodied_pref.preference import PartialReturnModel
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.reward_training import (
    RewardTrainingConfig,
    RewardTrainingReport,
    preference_probabilities,
    train_reward,
)
from embodied_pref.segments import PreferencePairs, pair_sets


@dataclass
class ReliabilityFit:
    """The rounds of `train_reward_with_reliability`: round 0 is the plain fit, each later round
    a noise-aware refit with the flip rates estimated from the round before."""

    reports: list[RewardTrainingReport] = field(default_factory=list)
    """Each round's learning curves."""
    estimates: list[ReliabilityEstimate] = field(default_factory=list)
    """estimates[r]: the annotators' flip rates estimated with round r's reward."""

    @property
    def estimate(self) -> ReliabilityEstimate:
        """The estimate from the final reward."""
        return self.estimates[-1]

    @property
    def trained_with(self) -> ReliabilityEstimate | None:
        """The estimate whose flip rates weighted the final reward (None: no noise-aware round)."""
        return self.estimates[-2] if len(self.estimates) > 1 else None


def train_reward_with_reliability(
    ensemble: RewardEnsemble,
    pairs: PreferencePairs | Sequence[PreferencePairs],
    annotators: np.ndarray | Sequence[np.ndarray],
    config: RewardTrainingConfig = RewardTrainingConfig(),
    model: PartialReturnModel = PartialReturnModel(),
    rounds: int = 1,
    reliability: ReliabilityConfig = ReliabilityConfig(),
    evidence: np.ndarray | Sequence[np.ndarray] | None = None,
    log_dir: str | Path | None = None,
    prior: Literal["in_sample", "out_of_bag", "without_annotator"] = "out_of_bag",
) -> ReliabilityFit:
    """Fit `ensemble` in place with each label weighted by its annotator's reliability.

    Round 0 fits the plain model; then, `rounds` times: estimate every annotator's flip rate ε
    (`estimate_reliability`, with the current reward's P(first better) as the prior of each
    query) and refit from scratch with the noise-aware loss. The estimate is made once more
    with the final reward.

    annotators: (N,) str per pair (a list, one per set, for several sets). evidence: (N,) str,
    the query id under which a pair's label counts towards its annotator's estimate, "" for
    pairs that do not count (e.g. those a triplet ranking implies); default `pairs.groups`.
    Only decisive labels (targets 0 or 1) count, an annotator's last one per query.
    prior: where each query's P(first better) comes from. "out_of_bag": the mean over the
    members that never trained on it (`RewardTrainingReport.unseen`; a query every member saw
    then counts only if it overlaps). "without_annotator": a query one annotator answered is
    scored by a reward of the same shape fit (same settings, same flip rates) to everybody
    else's labels; a query several answered has no model prior, their answers decide it.
    "in_sample": every member's, which the labels themselves have pulled towards agreement.
    """
    if prior not in ("in_sample", "out_of_bag", "without_annotator"):
        raise ValueError(f"prior: expected in_sample, out_of_bag or without_annotator, found {prior!r}")
    if rounds < 0:
        raise ValueError(f"rounds: expected >= 0, found {rounds}")
    sets = pair_sets(pairs)
    annotator_sets = [annotators] if isinstance(annotators, np.ndarray) else list(annotators)
    if evidence is None:
        if any(s.groups is None for s in sets):
            raise ValueError("evidence: the pairs carry no query ids (groups); pass the query id of each pair")
        evidence = [s.groups for s in sets]
    evidence_sets = [evidence] if isinstance(evidence, np.ndarray) else list(evidence)
    for name, given in (("annotators", annotator_sets), ("evidence", evidence_sets)):
        if len(given) != len(sets) or any(len(g) != len(s) for g, s in zip(given, sets)):
            raise ValueError(f"{name}: expected one entry per pair of each set, found lengths "
                             f"{[len(g) for g in given]} for pairs of {[len(s) for s in sets]}")
    answers = _reliability_answers(sets, annotator_sets, evidence_sets)

    fit, flips = ReliabilityFit(), None
    for round_index in range(rounds + 1):
        round_dir = None if log_dir is None else Path(log_dir) / f"round_{round_index}"
        fit.reports.append(train_reward(ensemble, sets, config, model, round_dir, flip_rates=flips))
        if prior == "without_annotator":
            prob_first = _priors_without_each_annotator(ensemble, sets, annotator_sets, answers, flips, config, model)
        else:
            prob_first = _model_priors(ensemble, sets, answers, model,
                                       fit.reports[-1].unseen if prior == "out_of_bag" else None)
        keys = list(answers)
        fit.estimates.append(estimate_reliability([q for q, _ in keys], [a for _, a in keys],
                                                  np.array([answers[k][2] for k in keys], dtype=bool),
                                                  prob_first, reliability))
        flips = [fit.estimate.flip_rate_per_label(a) for a in annotator_sets]
    return fit


def _reliability_answers(sets: Sequence[PreferencePairs], annotator_sets: Sequence[np.ndarray],
                         evidence_sets: Sequence[np.ndarray]) -> dict[tuple[str, str], tuple[int, int, bool]]:
    """(query id, annotator) -> (set, pair index, prefers first) of the last decisive label."""
    answers: dict[tuple[str, str], tuple[int, int, bool]] = {}
    for s, (pairs, annotators, evidence) in enumerate(zip(sets, annotator_sets, evidence_sets)):
        for i, (annotator, query, target) in enumerate(zip(annotators, evidence, pairs.targets)):
            if query and target in (0.0, 1.0):
                answers.pop((str(query), str(annotator)), None)
                answers[(str(query), str(annotator))] = (s, i, bool(target == 1.0))
    return answers


def _model_priors(ensemble: RewardEnsemble, sets: Sequence[PreferencePairs],
                  answers: dict[tuple[str, str], tuple[int, int, bool]], model: PartialReturnModel,
                  unseen: Sequence[np.ndarray] | None) -> dict[str, float]:
    """The ensemble's mean P(first better) of each answered query: over the members that never
    trained on the query when `unseen` is given (a query every member saw gets none), else over
    all members."""
    ensemble.eval()
    prob_first = {}
    for s, pairs in enumerate(sets):
        members = preference_probabilities(ensemble, pairs.first, pairs.second, model)  # (K, N)
        for (query, _), (set_index, i, _) in answers.items():
            if set_index != s:
                continue
            use = np.ones(len(members), dtype=bool) if unseen is None else unseen[s][:, i]
            if use.any():
                prob_first[query] = float(members[use, i].mean())
    return prob_first


def _priors_without_each_annotator(
    ensemble: RewardEnsemble, sets: Sequence[PreferencePairs], annotator_sets: Sequence[np.ndarray],
    answers: dict[tuple[str, str], tuple[int, int, bool]], flips: Sequence[np.ndarray] | None,
    config: RewardTrainingConfig, model: PartialReturnModel,
) -> dict[str, float]:
    """P(first better) of each query that one annotator alone answered, by a reward of
    `ensemble`'s shape fit to every other annotator's labels (with their flip rates)."""
    answerers = Counter(query for query, _ in answers)
    prob_first: dict[str, float] = {}
    for name in sorted({annotator for _, annotator in answers}):
        alone = {query: where[:2] for (query, annotator), where in answers.items()
                 if annotator == name and answerers[query] == 1}
        others = [np.asarray(annotators).astype(str) != name for annotators in annotator_sets]
        kept = [s for s, keep in enumerate(others) if keep.any()]
        if not alone or sum(int(others[s].sum()) for s in kept) < 2:
            continue
        without = RewardEnsemble(ensemble.obs_dim, ensemble.act_dim, ensemble.config)
        train_reward(without, [sets[s][others[s]] for s in kept], config, model,
                     flip_rates=None if flips is None else [flips[s][others[s]] for s in kept])
        without.eval()
        for s, pairs in enumerate(sets):
            queries = [query for query, (set_index, _) in alone.items() if set_index == s]
            if queries:
                index = np.array([alone[query][1] for query in queries])
                probs = preference_probabilities(without, pairs.first[index], pairs.second[index], model).mean(axis=0)
                prob_first.update(zip(queries, probs.tolist()))
    return prob_first
