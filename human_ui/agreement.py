"""Agreement between annotators on the queries they both answered, and with a reward model.

- percent agreement: over items, the share of agreeing rater pairs, averaged;
- Cohen's kappa (two raters): (p_o − p_e) / (1 − p_e), p_e from each rater's own marginals;
- Fleiss' kappa (any number of raters per item): P̄ = mean_i Σ_j n_ij(n_ij − 1) / (n_i(n_i − 1)),
  p_j = Σ_i n_ij / Σ_i n_i, P̄_e = Σ_j p_j², κ = (P̄ − P̄_e) / (1 − P̄_e). With the same number
  of raters on every item this is Fleiss (1971); items with fewer than 2 raters are dropped.

Answers are compared as categories: ``left``/``right``/``equal``/``cannot_tell`` for pairs and
the ranking with its ties (``"2=0>1"``) for triplets. Skips are not answers.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence

from embodied_pref.data import Label, Outcome


def answer_category(label: Label) -> str | None:
    """The category an answer is compared by; None for a skip."""
    if label.outcome is Outcome.SKIP:
        return None
    if label.outcome is Outcome.RANKING:
        text = str(label.ranking[0])
        for position, clip in enumerate(label.ranking[1:]):
            text += ("=" if position in label.ties else ">") + str(clip)
        return text
    return label.outcome.value


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two raters' categories on the same items; nan if undefined
    (no items, or both raters always gave one and the same category)."""
    if len(first) != len(second):
        raise ValueError(f"second: expected {len(first)} ratings like first, found {len(second)}")
    n = len(first)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in zip(first, second)) / n
    count_a, count_b = Counter(first), Counter(second)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected == 1.0:
        return math.nan
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa of items each rated by >= 2 raters (list of the raters' categories);
    nan if no item qualifies or chance agreement is 1."""
    items = [list(ratings) for ratings in items if len(ratings) >= 2]
    if not items:
        return math.nan
    per_item = []
    totals: Counter[str] = Counter()
    for ratings in items:
        counts = Counter(ratings)
        n = len(ratings)
        per_item.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
        totals.update(counts)
    p_bar = sum(per_item) / len(per_item)
    grand = sum(totals.values())
    p_e = sum((c / grand) ** 2 for c in totals.values())
    if p_e == 1.0:
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


def percent_agreement(items: Sequence[Sequence[str]]) -> float:
    """Mean over items (>= 2 raters) of the share of rater pairs that agree; nan if none."""
    shares = []
    for ratings in items:
        pairs = list(itertools.combinations(ratings, 2))
        if pairs:
            shares.append(sum(a == b for a, b in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else math.nan


def overlapping_answers(labels: Sequence[Label]) -> dict[str, dict[str, str]]:
    """query id -> {annotator: category} for queries answered by >= 2 annotators
    (an annotator's latest answer counts)."""
    by_query: dict[str, dict[str, str]] = {}
    for label in labels:
        category = answer_category(label)
        if category is not None:
            by_query.setdefault(label.query_id, {})[label.annotator] = category
    return {qid: answers for qid, answers in by_query.items() if len(answers) >= 2}


def agreement_report(labels: Sequence[Label]) -> dict:
    """Percent agreement, Fleiss' kappa and Cohen's kappa per annotator pair, on overlaps."""
    overlaps = overlapping_answers(labels)
    items = [list(answers.values()) for answers in overlaps.values()]
    pairs = []
    annotators = sorted({a for answers in overlaps.values() for a in answers})
    for a, b in itertools.combinations(annotators, 2):
        common = [answers for answers in overlaps.values() if a in answers and b in answers]
        if common:
            first, second = [x[a] for x in common], [x[b] for x in common]
            pairs.append({
                "annotators": [a, b], "n": len(common),
                "percent_agreement": _finite(sum(x == y for x, y in zip(first, second)) / len(common)),
                "cohen_kappa": _finite(cohen_kappa(first, second)),
            })
    return {
        "overlapping_queries": len(items),
        "percent_agreement": _finite(percent_agreement(items)),
        "fleiss_kappa": _finite(fleiss_kappa(items)),
        "pairs": pairs,
    }


def model_agreement(labels: Sequence[Label], prob_first: Mapping[str, float]) -> dict[str, dict]:
    """Per annotator: share of decisive pairwise answers (left/right) the reward model agrees
    with, given the model's P(first clip better) per query id."""
    result: dict[str, dict] = {}
    for label in labels:
        if label.outcome not in (Outcome.LEFT, Outcome.RIGHT) or label.query_id not in prob_first:
            continue
        entry = result.setdefault(label.annotator, {"n": 0, "agree": 0})
        entry["n"] += 1
        entry["agree"] += (prob_first[label.query_id] > 0.5) == (label.outcome is Outcome.LEFT)
    for entry in result.values():
        entry["agreement"] = entry["agree"] / entry["n"]
    return result


def _finite(value: float) -> float | None:
    """JSON has no nan: None stands for undefined."""
    return None if math.isnan(value) else round(value, 6)
