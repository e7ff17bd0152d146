"""A small synthetic dataset with real mp4 previews, to try the labeling app without an
environment (and for its tests and benchmark): a disk moves towards a goal square or
wanders; even seeds reach the goal."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embodied_pref.data import Clip, Query, Trajectory
from embodied_pref.query_selection import distinct_sets
from embodied_pref.store import PreferenceDataset

INSTRUCTIONS = """# Which robot does the task better?

Each clip shows the **blue disk** pushing towards the *green square*.

- Prefer the clip that ends **closer to the green square**.
- Bumping into the red zone is bad.
- If both look the same, choose *About equal*; if you cannot judge, *Can't tell*.
"""


def scene_frames(seed: int, steps: int, size: int = 64) -> np.ndarray:
    """(steps+1, size, size, 3) uint8: a disk moving on a soft background towards or away
    from a goal square; the seed sets the path."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([22 + 18 * yy / size, 28 + 14 * xx / size, 40 + 20 * yy / size], -1)
    goal = (slice(size // 8, size // 8 + size // 6), slice(size - size // 4, size - size // 12))
    start = rng.uniform(0.2, 0.8, 2) * size
    target = np.array([size / 8 + size / 12, size - size / 6]) if seed % 2 == 0 else rng.uniform(0, 1, 2) * size
    frames = []
    for t in range(steps + 1):
        img = base.copy()
        img[goal] = (60, 190, 110)
        img[size - size // 5:, : size // 3] = (150, 55, 60)
        pos = start + (target - start) * t / steps
        disk = (yy - pos[0]) ** 2 + (xx - pos[1]) ** 2 < (size / 12) ** 2
        img[disk] = (80, 150, 255)
        frames.append(img)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def make_trajectory(seed: int, steps: int = 24, size: int = 64) -> Trajectory:
    rng = np.random.default_rng(seed)
    return Trajectory(
        observations=rng.normal(size=(steps + 1, 4)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, 2)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32),
        frames=scene_frames(seed, steps, size),
        env_id="Disk-v0",
        seed=seed,
    )


def build_demo_dataset(root: str | Path, n_trajectories: int = 4, clip_length: int = 20, size: int = 64,
                  queries: int = 0, triplets: int = 0) -> PreferenceDataset:
    """A dataset of ``n_trajectories`` × 2 clips, every clip with an mp4 preview (10 fps)."""
    ds = PreferenceDataset.create(root, description="disk pushing (demo)",
                                  instructions=INSTRUCTIONS)
    clips = []
    for seed in range(n_trajectories):
        trajectory = make_trajectory(seed, steps=clip_length + 4, size=size)
        ds.add_trajectory(trajectory)
        clips += [Clip(trajectory.id, 0, clip_length), Clip(trajectory.id, 4, clip_length)]
    ds.add_clips(clips)
    for clip in clips:
        ds.write_preview(clip.id)
    rng = np.random.default_rng(0)
    rows = [*distinct_sets(len(clips), 2, queries, rng), *distinct_sets(len(clips), 3, triplets, rng)]
    ds.add_queries([Query(tuple(clips[i].id for i in row)) for row in rows])
    return ds
