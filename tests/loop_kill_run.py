"""Runs the tiny loop of test_loop.py and SIGKILLs itself at one stage of one iteration.

    python tests/loop_kill_run.py RUN_DIR STAGE ITERATION

STAGE: rollouts (while the round's rollouts are generated), trajectories (after the round's
first trajectory is stored, before its clips), labels (every label in, before the reward
fit), reward (reward fitted and saved, before policy training), agent_save (right after the
agent's checkpoint is written).
"""

import os
import signal
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # this checkout first

import test_loop  # noqa: E402
from embodied_pref import loop  # noqa: E402
from embodied_pref.store import PreferenceDataset  # noqa: E402
from policies.ppo import PPOAgent  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner, name: str, call: int, after: bool = False, when=lambda *a, **k: True) -> None:
    """Replace owner.name so that its `call`-th qualifying call (1-based) kills the process,
    before the real call or, with `after`, once it has returned."""
    real, calls = getattr(owner, name), [0]

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            calls[0] += 1
            if calls[0] == call and not after:
                die()
        result = real(*args, **kwargs)
        if after and calls[0] == call and when(*args, **kwargs):
            die()
        return result

    setattr(owner, name, wrapper)


def main(run_dir: str, stage: str, iteration: int) -> None:
    loop_config = test_loop.LOOP
    initial_count = 3  # test_loop's initial episodes
    if stage == "rollouts":
        if iteration == 0:
            kill_on_call(test_loop, "scripted_episodes", 1, after=True)
        else:
            kill_on_call(PPOAgent, "rollouts", iteration, after=True,
                         when=lambda self, n, seed, **k: n == loop_config.rollouts_per_iteration)
    elif stage == "trajectories":
        first_of_round = 1 if iteration == 0 else initial_count + (iteration - 1) * loop_config.rollouts_per_iteration + 1
        kill_on_call(PreferenceDataset, "add_trajectory", first_of_round, after=True)
    elif stage == "labels":
        kill_on_call(loop, "fit_reward", iteration + 1)
    elif stage == "reward":
        kill_on_call(PPOAgent, "train", iteration + 1)
    elif stage == "agent_save":
        kill_on_call(PPOAgent, "save", iteration + 1, after=True)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    test_loop.run(Path(run_dir))
    raise SystemExit("the loop finished without reaching its kill point")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
