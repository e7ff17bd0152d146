"""Held-out preference accuracy of a reward learned from synthetic labels on Crafter clips,
against the same pairs with shuffled labels, per seed.

    .venv/bin/python bench/crafter_reward.py [--task crafter-thrift] [--labels 500] [--seeds 0 1 2] [--smoke]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from embodied_pref.experiments.crafter_demo import CRAFTER_QUALITIES, CRAFTER_REWARD_NET
from embodied_pref.experiments.presets import parse_with_smoke
from embodied_pref.experiments.results import mean_std
from embodied_pref.experiments.reward_quality import fit_and_evaluate, teacher_pairs
from embodied_pref.experiments.tasks import scripted_clips
from embodied_pref.query_selection import select_pairs
from embodied_pref.reward_training import RewardTrainingConfig
from embodied_pref.segments import PreferencePairs
from embodied_pref.teachers import make_teacher

SMOKE = {"labels": 20, "seeds": [0], "train_episodes": 2, "test_episodes": 1, "clip_length": 10, "max_epochs": 2}
"""Sizes of --smoke: every step end to end in seconds; flags given beside it win."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="crafter-thrift")
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--test-episodes", type=int, default=10)
    parser.add_argument("--clip-length", type=int, default=50)
    parser.add_argument("--max-epochs", type=int, default=RewardTrainingConfig.max_epochs,
                        help="reward training epochs at most (early stopping may end it sooner)")
    args = parse_with_smoke(parser, SMOKE)
    torch.set_num_threads(1)

    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        pools = [scripted_clips(args.task, "Player", [CRAFTER_QUALITIES[i % len(CRAFTER_QUALITIES)] for i in range(n)],
                                seed * 100_000 + offset, args.clip_length, 8, rng,
                                violations=[i % 2 == 1 for i in range(n)])
                 for n, offset in ((args.train_episodes, 0), (args.test_episodes, 50_000))]
        train, test = pools
        selected = select_pairs(train, args.labels, np.random.default_rng([seed, args.labels]))
        pairs = teacher_pairs(train, selected.first, selected.second, make_teacher("oracle", seed=seed))
        _, learned = fit_and_evaluate(pairs, test, seed, CRAFTER_REWARD_NET, args.max_epochs)
        shuffled = PreferencePairs(pairs.first, pairs.second, rng.permutation(pairs.targets))
        _, control = fit_and_evaluate(shuffled, test, seed, CRAFTER_REWARD_NET, args.max_epochs)
        rows.append({"seed": seed, "labels": len(pairs), "accuracy": learned.accuracy, "spearman": learned.spearman,
                     "shuffled_accuracy": control.accuracy})
        print(json.dumps(rows[-1]), flush=True)
    print(f"| task | labels | held-out accuracy | shuffled-label control | seeds |\n|---|---:|---:|---:|---:|\n"
          f"| {args.task} | {args.labels} | {mean_std([r['accuracy'] for r in rows])} | "
          f"{mean_std([r['shuffled_accuracy'] for r in rows])} | {len(rows)} |")


if __name__ == "__main__":
    main()
