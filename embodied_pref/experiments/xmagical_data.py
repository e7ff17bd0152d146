"""X-MAGICAL episode pools for reward-learning experiments: scripted episodes of mixed
quality, cut into clips, with training and held-out pools from disjoint episodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from embodied_pref.data import Trajectory
from embodied_pref.experiments import tasks
from embodied_pref.segments import SegmentBatch, cut_clips, stack_segments

MIXED_QUALITIES = (0.0, 0.3, 0.6, 0.9)
"""Random (0.0) and noisy-scripted episodes, cycled."""


def scripted_episodes(
    embodiment: str,
    qualities: Sequence[float],
    seed: int,
    *,
    observation: str = "state",
    record_frames: bool = False,
    progress: bool = False,
) -> list[Trajectory]:
    """SweepToTop episodes, one per entry of `qualities` (0 random … 1 expert), seeds seed, seed+1, …"""
    return tasks.scripted_episodes("xmagical-sweep", embodiment, qualities, seed, observation=observation,
                                   record_frames=record_frames, progress=progress)


@dataclass(frozen=True)
class ClipPools:
    """Clips from training episodes and from held-out episodes never trained on."""

    train: SegmentBatch
    test: SegmentBatch


def mixed_quality_clips(
    embodiment: str, episodes: int, first_seed: int, clip_length: int, clips_per_episode: int,
    rng: np.random.Generator, progress: bool = False,
) -> SegmentBatch:
    """`clip_length`-step clips from `episodes` random and noisy-scripted episodes."""
    qualities = [MIXED_QUALITIES[i % len(MIXED_QUALITIES)] for i in range(episodes)]
    trajectories = scripted_episodes(embodiment, qualities, first_seed, progress=progress)
    by_id = {t.id: t for t in trajectories}
    clips = cut_clips(trajectories, clip_length, clips_per_episode, rng)
    return stack_segments([by_id[c.trajectory_id].segment(c.start, c.length) for c in clips])


def mixed_quality_pools(
    embodiment: str,
    seed: int,
    train_episodes: int = 60,
    test_episodes: int = 30,
    clip_length: int = 50,
    clips_per_episode: int = 8,
    progress: bool = False,
) -> ClipPools:
    """Training and held-out pools of `mixed_quality_clips`."""
    rng = np.random.default_rng(seed)
    # Seeds of held-out episodes are far from the training ones, so no episode is shared.
    return ClipPools(
        train=mixed_quality_clips(embodiment, train_episodes, seed * 100_000, clip_length, clips_per_episode, rng, progress),
        test=mixed_quality_clips(embodiment, test_episodes, seed * 100_000 + 50_000, clip_length, clips_per_episode, rng, progress),
    )
