"""TrueSkill's active pair choice (BASALT's expected variance decrease) against uniformly
random pairs: Kendall τ of the leaderboard against 5 synthetic agents' known skills vs the
number of noisy comparisons, averaged over seeds; prints the comparisons each needs to stay
at τ ≥ 0.8 and writes the curve.

    .venv/bin/python bench/trueskill_pairs.py [--seeds 0 1 2] [--noise 1.0] [--out docs/images/trueskill_pair_choice.png] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.ranking_simulation import (
    NoisyJudge,
    comparisons_to_reach,
    plot_ranking_curves,
    ranking_curves,
)

SMOKE = {"seeds": [0], "max_comparisons": 50, "out": Path(tempfile.gettempdir()) / "trueskill_pair_choice_smoke.png"}
"""Sizes of --smoke: every step end to end in seconds, its curve kept out of docs/; flags given
beside it win."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--agents", type=int, default=5, help="agents of skills 0, 1, ...")
    parser.add_argument("--noise", type=float, default=1.0, help="Thurstone noise per episode")
    parser.add_argument("--max-comparisons", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("docs/images/trueskill_pair_choice.png"))
    args = parse_with_smoke(parser, SMOKE, help=f"seed 0, 50 comparisons, the curve to {SMOKE['out']}")

    judge = NoisyJudge({f"agent{i}": float(i) for i in range(args.agents)}, noise=args.noise)
    checkpoints = list(range(5, args.max_comparisons + 1, 5))
    curves = ranking_curves(judge, checkpoints, seeds=args.seeds)
    print(f"| pair choice | comparisons to stay at τ ≥ 0.8 (mean of {len(args.seeds)} seeds) "
          "| each seed | τ after 50 |")
    print("|---|---:|---|---:|")
    for name, taus in curves.items():
        each = [comparisons_to_reach(checkpoints, row, 0.8) for row in taus]
        print(f"| {name} | {comparisons_to_reach(checkpoints, taus, 0.8):.1f} | "
              f"{', '.join(f'{n:.0f}' for n in each)} | {taus[:, checkpoints.index(50)].mean():.2f} |")
    active = comparisons_to_reach(checkpoints, curves["active"], 0.8)
    uniform = comparisons_to_reach(checkpoints, curves["uniform"], 0.8)
    print(f"ratio uniform / active: {uniform / active:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(plot_ranking_curves(checkpoints, curves, args.out))


if __name__ == "__main__":
    main()
