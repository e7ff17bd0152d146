"""Write a small robot-recording sample from the Franka simulation, in the layouts real robot
data comes in: a LeRobot v3.0 dataset, the same episodes as LeRobot v2.1, and a robomimic HDF5
file whose operator-quality masks (better / okay / worse) grade the demonstrations. Nothing
is downloaded. See franka_recordings.md.

    .venv/bin/python datasets/franka_recordings.py --out data/franka_recordings
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium

from embodied_pref.experiments.tasks import task_spec
from embodied_pref.recordings.episode import RecordedEpisode
from embodied_pref.recordings.lerobot_writer import write_lerobot
from embodied_pref.recordings.robomimic import write_robomimic
from embodied_pref.rollout import rollout
from envs.franka.recording import TwoCameraRender, recorded_episode

QUALITIES = {"better": 1.0, "okay": 0.6, "worse": 0.3}
"""The scripted operator's skill behind each quality mask."""


def franka_sample_episodes(episodes: int = 6, steps: int = 50, size: int = 32, task: str = "franka-group",
                           seed: int = 0) -> list[RecordedEpisode]:
    """Scripted episodes of `task` with both cameras, qualities cycling better/okay/worse and
    every other one breaking the task's hidden preference."""
    spec = task_spec(task)
    env = TwoCameraRender(gymnasium.make(spec.env_id("Panda", "state"), max_steps=steps), size)
    recorded = []
    try:
        for i in range(episodes):
            level = list(QUALITIES)[i % len(QUALITIES)]
            violate = i % 2 == 1
            demonstrator = spec.demonstrator(env.unwrapped, QUALITIES[level], violate, seed + i)
            trajectory = rollout(env, demonstrator, seed + i, record_frames=True)
            recorded.append(recorded_episode(trajectory, f"demo_{i}", spec.instructions,
                                             {"quality": level, "violates_preference": violate, "seed": seed + i}))
    finally:
        env.close()
    return recorded


def write_sample(out: Path, recorded: list[RecordedEpisode]) -> dict[str, Path]:
    """`franka_sample_episodes` in every layout under `out`: lerobot_v3.0/, lerobot_v2.1/, robomimic.hdf5."""
    masks = {level: [e.name for e in recorded if e.metadata["quality"] == level] for level in QUALITIES}
    return {
        "lerobot_v3.0": write_lerobot(recorded, out / "lerobot_v3.0", version="v3.0", robot_type="panda"),
        "lerobot_v2.1": write_lerobot(recorded, out / "lerobot_v2.1", version="v2.1", robot_type="panda"),
        "robomimic": write_robomimic(recorded, out / "robomimic.hdf5", env_args={"env_name": "franka-group"},
                                     masks=masks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/franka_recordings"))
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50, help="steps per episode (45..100)")
    parser.add_argument("--size", type=int, default=32, help="camera frame size (square)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recorded = franka_sample_episodes(args.episodes, args.steps, args.size, seed=args.seed)
    for layout, path in write_sample(args.out, recorded).items():
        print(f"{layout}: {path}")


if __name__ == "__main__":
    main()
