"""Ranking agents from people's pairwise comparisons of their episodes (BASALT-style).

People watch two agents' episodes of the same task and world seed side by side and pick the
better one or call a draw. Each answer updates the two agents' TrueSkill ratings of that task
(``trueskill`` 0.4.5 with its library defaults: μ 25, σ 25/3, β 25/6, τ 25/300, draw
probability 0.1; a draw is ranks ``[0, 0]``), in the order the answers were given.

```
Comparison(task, agent_a, agent_b, seed, outcome) ──rate──▶ {task: {agent: Rating(μ, σ)}}
      ▲                                                          │
      └── a person (or a NoisyJudge) answers ◀── choose_pairs ◀──┘  (expected σ² decrease)
```

- Score: ``μ − 3σ`` per task (a conservative skill estimate).
- Next pair: the one with the largest expected decrease of ``σ_a² + σ_b²`` over its two
  outcomes (a wins, b wins; draws left out as in BASALT's server), each weighted by its
  predicted probability ``P(a wins) = Φ(Δμ / √(2β² + σ_a² + σ_b²))``. The denominator is
  trueskill's own 1-vs-1 convention (each player's performance adds β² of noise, so a match
  of two adds 2β²); BASALT's server used ``√(β² + σ_a² + σ_b²)``. A buffer of the
  ``top_k`` = 25 best pairs is served highest first, each on a random seed both agents played
  (and, where given, not asked before).
- Over tasks: each task's scores are standardized over the agents rated in it (z-scores:
  mean 0, standard deviation 1; 0 when the task has one agent or all scores are equal) and
  an agent's overall score is the mean of its standardized scores over the tasks it was
  rated in, following BASALT 2022's normalized per-task averages.

Every function takes its own ``trueskill.TrueSkill`` environment (``ranking_env()`` by
default), so trueskill's global environment is never touched.

A labeling campaign is a dataset marked with meta ``agent_ranking`` whose trajectories carry
``{task, agent, seed}`` metadata, one clip per episode; ``campaign_queries`` is the pair
choice the labeling queue asks when it runs dry. Synthetic judges and the
ranking curves of the active and the uniform pair choice live in ``ranking_simulation``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import trueskill

from embodied_pref.data import Outcome, Query
from embodied_pref.store import PreferenceDataset

OUTCOMES = ("a", "b", "draw")
"""A comparison's outcome: agent_a's episode is better, agent_b's is, or a draw."""
BUFFER_SIZE = 25
"""Pairs the BASALT evaluation server buffers, served highest score first."""
CONFIDENCE = 3.0
"""Standard deviations taken off μ in the score μ − 3σ."""


def ranking_env() -> trueskill.TrueSkill:
    """A private TrueSkill environment with the library defaults (μ 25, σ 25/3, β 25/6,
    τ 25/300, draw probability 0.1)."""
    return trueskill.TrueSkill()


@dataclass(frozen=True)
class Comparison:
    """One person's answer: which of two agents' episodes (same task, same seed) is better."""

    task: str
    """Task both episodes solve."""
    agent_a: str
    """Agent of the first (left) episode."""
    agent_b: str
    """Agent of the second (right) episode."""
    seed: int
    """World seed both episodes were played on."""
    outcome: str
    """``"a"``, ``"b"`` or ``"draw"``."""
    worker: str = ""
    """Who answered (annotator name or crowd worker id)."""

    def __post_init__(self) -> None:
        for name in ("task", "agent_a", "agent_b"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"field '{name}': expected a non-empty str, found {value!r}")
        if self.agent_a == self.agent_b:
            raise ValueError(f"field 'agent_b': expected an agent other than agent_a, found "
                             f"{self.agent_b!r} twice")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"field 'seed': expected an int, found {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        if self.outcome not in OUTCOMES:
            raise ValueError(f"field 'outcome': expected one of {OUTCOMES}, found {self.outcome!r}")
        if not isinstance(self.worker, str):
            raise ValueError(f"field 'worker': expected a str, found {self.worker!r}")


Ratings = dict[str, dict[str, trueskill.Rating]]
"""``ratings[task][agent]``: that agent's TrueSkill rating on that task."""


def rate(comparisons: Iterable[Comparison], env: trueskill.TrueSkill | None = None,
         agents: Mapping[str, Collection[str]] | None = None) -> Ratings:
    """TrueSkill ratings per task after the comparisons, applied in order.

    ``agents[task]`` lists agents to rate even if no comparison names them yet (they keep the
    prior rating).
    """
    env = env or ranking_env()
    ratings: Ratings = {}
    for task, names in (agents or {}).items():
        for name in names:
            ratings.setdefault(task, {}).setdefault(name, env.create_rating())
    for comparison in comparisons:
        update(ratings.setdefault(comparison.task, {}), comparison, env)
    return ratings


def update(task_ratings: dict[str, trueskill.Rating], comparison: Comparison,
           env: trueskill.TrueSkill) -> None:
    """Apply one comparison to one task's ratings (``{agent: Rating}``, changed in place)."""
    a = task_ratings.get(comparison.agent_a, env.create_rating())
    b = task_ratings.get(comparison.agent_b, env.create_rating())
    ranks = {"a": [0, 1], "b": [1, 0], "draw": [0, 0]}[comparison.outcome]
    (a,), (b,) = env.rate([(a,), (b,)], ranks=ranks)
    task_ratings[comparison.agent_a], task_ratings[comparison.agent_b] = a, b


def score(rating: trueskill.Rating) -> float:
    """The leaderboard score μ − 3σ."""
    return float(rating.mu - CONFIDENCE * rating.sigma)


def win_probability(a: trueskill.Rating, b: trueskill.Rating,
                    env: trueskill.TrueSkill | None = None) -> float:
    """P(a beats b) = Φ((μ_a − μ_b) / √(2β² + σ_a² + σ_b²)), draws not counted."""
    env = env or ranking_env()
    spread = math.sqrt(2 * env.beta**2 + a.sigma**2 + b.sigma**2)
    return float(env.cdf((a.mu - b.mu) / spread))


def expected_sigma_decrease(a: trueskill.Rating, b: trueskill.Rating,
                            env: trueskill.TrueSkill | None = None) -> float:
    """Expected decrease of σ_a² + σ_b² from one comparison of a and b: the decrease after
    "a wins" and after "b wins", weighted by their win probabilities."""
    env = env or ranking_env()
    before = a.sigma**2 + b.sigma**2
    p_a = win_probability(a, b, env)
    (a_won,), (b_lost,) = env.rate([(a,), (b,)], ranks=[0, 1])
    (a_lost,), (b_won,) = env.rate([(a,), (b,)], ranks=[1, 0])
    after_a = a_won.sigma**2 + b_lost.sigma**2
    after_b = a_lost.sigma**2 + b_won.sigma**2
    return p_a * (before - after_a) + (1 - p_a) * (before - after_b)


@dataclass(frozen=True)
class PairChoice:
    """A pair of agents to compare on one seed, and why (the expected σ² decrease)."""

    task: str
    agent_a: str
    agent_b: str
    seed: int
    score: float


def pair_key(task: str, agent_a: str, agent_b: str, seed: int) -> tuple[str, str, str, int]:
    """The same key for either order of the two agents (for "asked before" sets)."""
    first, second = sorted((agent_a, agent_b))
    return task, first, second, int(seed)


def choose_pairs(
    ratings: Mapping[str, trueskill.Rating],
    seeds: Mapping[str, Collection[int]],
    rng: np.random.Generator,
    *,
    task: str = "",
    top_k: int = BUFFER_SIZE,
    asked: Collection[tuple[str, str, str, int]] = frozenset(),
    env: trueskill.TrueSkill | None = None,
) -> list[PairChoice]:
    """The buffer of up to ``top_k`` agent pairs of one task with the largest expected σ²
    decrease, highest first; each on a seed drawn uniformly from those both agents played,
    leaving out ``asked`` (keys from ``pair_key``). Pairs with no seed left are skipped; the
    two agents are shown in a random order.

    ``ratings[agent]`` (agents missing from it have the prior rating), ``seeds[agent]``: the
    seeds that agent played.
    """
    env = env or ranking_env()
    agents = sorted(seeds)
    candidates = []
    for agent_a, agent_b in combinations(agents, 2):
        shared = sorted(set(seeds[agent_a]) & set(seeds[agent_b]))
        open_seeds = [s for s in shared if pair_key(task, agent_a, agent_b, s) not in asked]
        if not open_seeds:
            continue
        value = expected_sigma_decrease(ratings.get(agent_a, env.create_rating()),
                                        ratings.get(agent_b, env.create_rating()), env)
        candidates.append((value, agent_a, agent_b, open_seeds))
    candidates.sort(key=lambda c: -c[0])
    chosen = []
    for value, agent_a, agent_b, open_seeds in candidates[:top_k]:
        seed = open_seeds[int(rng.integers(len(open_seeds)))]
        if rng.random() < 0.5:
            agent_a, agent_b = agent_b, agent_a
        chosen.append(PairChoice(task, agent_a, agent_b, seed, float(value)))
    return chosen


# --- campaign datasets ----------------------------------------------------------------------

CAMPAIGN_META_KEY = "agent_ranking"
"""Dataset meta key marking an agent-ranking campaign; its value is ``{"buffer_size": int}``
(pairs selected each time the labeling queue runs dry)."""
CAMPAIGN_SELECTOR = "trueskill"
"""``Query.selector`` of the campaign's queries (their score: the expected σ² decrease)."""


@dataclass(frozen=True)
class EpisodeRef:
    """Which agent played which seed of which task (a trajectory's ``metadata``)."""

    task: str
    agent: str
    seed: int


def campaign_trajectories(dataset: PreferenceDataset) -> dict[str, EpisodeRef]:
    """``{trajectory_id: episode}`` for the trajectories whose metadata names a task, an
    agent and a seed."""
    episodes = {}
    for trajectory_id in dataset.trajectory_ids():
        meta = dataset.trajectory_info(trajectory_id)["metadata"]
        if all(key in meta for key in ("task", "agent", "seed")):
            episodes[trajectory_id] = EpisodeRef(str(meta["task"]), str(meta["agent"]),
                                                 int(meta["seed"]))
    return episodes


def campaign_clips(dataset: PreferenceDataset) -> dict[str, EpisodeRef]:
    """``{clip_id: episode}`` for the clips of ``campaign_trajectories``."""
    episodes = campaign_trajectories(dataset)
    return {clip.id: episodes[clip.trajectory_id] for clip in dataset.clips()
            if clip.trajectory_id in episodes}


LABEL_OUTCOMES = {Outcome.LEFT: "a", Outcome.RIGHT: "b", Outcome.EQUAL: "draw"}
"""A stored label's outcome -> the comparison's (left is agent_a's episode)."""


def campaign_comparisons(dataset: PreferenceDataset,
                         clips: Mapping[str, EpisodeRef] | None = None) -> list[Comparison]:
    """The dataset's answers to pairs of same-task, same-seed episodes of two agents, in the
    order they were given (left/right/equal; skips and cannot-tell carry no comparison)."""
    clips = campaign_clips(dataset) if clips is None else clips
    queries = {q.id: q for q in dataset.queries()}
    comparisons = []
    for label in dataset.labels():
        outcome = LABEL_OUTCOMES.get(label.outcome)
        query = queries.get(label.query_id)
        if outcome is None or query is None or len(query.clip_ids) != 2:
            continue
        first, second = (clips.get(c) for c in query.clip_ids)
        if (first is None or second is None or (first.task, first.seed) != (second.task, second.seed)
                or first.agent == second.agent):
            continue
        comparisons.append(Comparison(first.task, first.agent, second.agent, first.seed,
                                      outcome, label.annotator))
    return comparisons


def campaign_queries(dataset: PreferenceDataset, rng: np.random.Generator, *,
                     top_k: int = BUFFER_SIZE, clip_ids: Collection[str] | None = None
                     ) -> list[Query]:
    """The next ``top_k`` pairs to ask, highest expected σ² decrease first, over all tasks:
    pairs of same-task, same-seed episodes of two agents rated from the stored answers,
    never a pair of episodes asked before. ``clip_ids`` limits the clips to use (e.g. those
    with a preview)."""
    episodes = campaign_clips(dataset)
    usable = episodes if clip_ids is None else {
        c: e for c, e in episodes.items() if c in set(clip_ids)}
    env = ranking_env()
    ratings = rate(campaign_comparisons(dataset, episodes), env)
    asked = set()
    for query in dataset.queries():
        pair = [episodes.get(c) for c in query.clip_ids]
        if len(pair) == 2 and None not in pair and pair[0].task == pair[1].task:
            asked.add(pair_key(pair[0].task, pair[0].agent, pair[1].agent, pair[0].seed))
    buffer: list[PairChoice] = []
    for task in sorted({e.task for e in usable.values()}):
        seeds: dict[str, set[int]] = {}
        for e in usable.values():
            if e.task == task:
                seeds.setdefault(e.agent, set()).add(e.seed)
        buffer += choose_pairs(ratings.get(task, {}), seeds, rng, task=task, top_k=top_k,
                               asked=asked, env=env)
    buffer.sort(key=lambda p: -p.score)
    clip_of = {(e.task, e.agent, e.seed): c for c, e in usable.items()}
    return [Query((clip_of[p.task, p.agent_a, p.seed], clip_of[p.task, p.agent_b, p.seed]),
                  selector=CAMPAIGN_SELECTOR, score=p.score)
            for p in buffer[:top_k]]


# --- leaderboard ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """One agent's place on one task's leaderboard."""

    task: str
    agent: str
    mu: float
    sigma: float
    score: float
    """μ − 3σ."""
    normalized: float
    """The score standardized over the task's agents (z-score)."""
    comparisons: int
    """Comparisons of this task the agent took part in."""


@dataclass(frozen=True)
class Leaderboard:
    """Standings per task (best first) and the overall ranking (mean normalized score)."""

    tasks: dict[str, list[Standing]]
    overall: list[tuple[str, float, int]]
    """(agent, mean of its normalized per-task scores, number of tasks), best first."""


def leaderboard(ratings: Ratings, comparisons: Iterable[Comparison] = ()) -> Leaderboard:
    """Rank the agents of every task by μ − 3σ and over tasks by their mean z-scored score."""
    counts: dict[tuple[str, str], int] = {}
    for c in comparisons:
        for agent in (c.agent_a, c.agent_b):
            counts[c.task, agent] = counts.get((c.task, agent), 0) + 1
    tasks: dict[str, list[Standing]] = {}
    per_agent: dict[str, list[float]] = {}
    for task in sorted(ratings):
        agents = sorted(ratings[task])
        scores = np.array([score(ratings[task][a]) for a in agents])
        spread = scores.std()
        normalized = (scores - scores.mean()) / spread if spread > 1e-12 else np.zeros_like(scores)
        rows = [Standing(task, a, float(ratings[task][a].mu), float(ratings[task][a].sigma),
                         float(s), float(z), counts.get((task, a), 0))
                for a, s, z in zip(agents, scores, normalized)]
        tasks[task] = sorted(rows, key=lambda r: (-r.score, r.agent))
        for row in rows:
            per_agent.setdefault(row.agent, []).append(row.normalized)
    overall = sorted(((a, float(np.mean(z)), len(z)) for a, z in per_agent.items()),
                     key=lambda r: (-r[1], r[0]))
    return Leaderboard(tasks, overall)


def leaderboard_markdown(board: Leaderboard) -> str:
    """The leaderboard as markdown: one table per task, then the overall table."""
    lines = []
    for task, rows in board.tasks.items():
        lines += [f"## {task}", "", "| rank | agent | μ − 3σ | μ | σ | z | comparisons |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {i} | {r.agent} | {r.score:.2f} | {r.mu:.2f} | {r.sigma:.2f} | "
                  f"{r.normalized:.2f} | {r.comparisons} |" for i, r in enumerate(rows, 1)]
        lines.append("")
    lines += ["## Overall (mean z-scored μ − 3σ over tasks)", "",
              "| rank | agent | mean z | tasks |", "|---:|---|---:|---:|"]
    lines += [f"| {i} | {a} | {z:.2f} | {n} |" for i, (a, z, n) in enumerate(board.overall, 1)]
    return "\n".join(lines) + "\n"


def leaderboard_csv(board: Leaderboard) -> str:
    """One CSV row per (task, agent), plus rows of task ``overall`` (score = mean z)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "rank", "agent", "score", "mu", "sigma", "normalized", "comparisons"])
    for task, rows in board.tasks.items():
        for i, r in enumerate(rows, 1):
            writer.writerow([task, i, r.agent, f"{r.score:.6f}", f"{r.mu:.6f}", f"{r.sigma:.6f}",
                             f"{r.normalized:.6f}", r.comparisons])
    for i, (agent, z, n_tasks) in enumerate(board.overall, 1):
        writer.writerow(["overall", i, agent, f"{z:.6f}", "", "", f"{z:.6f}", n_tasks])
    return out.getvalue()


def plot_leaderboard(board: Leaderboard, path: str | Path) -> Path:
    """A PNG with one panel per task: μ ± 3σ per agent, sorted by μ − 3σ (best on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(board.tasks))
    height = 1.0 + 0.35 * max((len(r) for r in board.tasks.values()), default=1)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, height + 1), squeeze=False)
    for ax, (task, rows) in zip(axes[0], board.tasks.items()):
        ordered = rows[::-1]  # best at the top of the panel
        y = np.arange(len(ordered))
        mu = np.array([r.mu for r in ordered])
        ax.errorbar(mu, y, xerr=CONFIDENCE * np.array([r.sigma for r in ordered]), fmt="o",
                    capsize=3)
        ax.plot([r.score for r in ordered], y, "k|", markersize=10, label="μ − 3σ")
        ax.set_yticks(y, [r.agent for r in ordered])
        ax.set_xlabel("TrueSkill μ ± 3σ")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
