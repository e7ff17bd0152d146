"""Cutting trajectories into clips, and stacking clip contents into arrays for learning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from embodied_pref.data import Clip, Label, Segment, Trajectory
from embodied_pref.store import PreferenceDataset


def cut_clips(
    trajectories: Sequence[Trajectory], length: int, per_trajectory: int, rng: np.random.Generator
) -> list[Clip]:
    """`per_trajectory` clips of `length` steps at uniformly random starts in each trajectory."""
    clips = []
    for trajectory in trajectories:
        if trajectory.length < length:
            raise ValueError(
                f"trajectory {trajectory.id}: length {trajectory.length} is shorter than the clip "
                f"length {length}"
            )
        starts = rng.integers(0, trajectory.length - length + 1, size=per_trajectory)
        clips += [Clip(trajectory.id, int(s), length) for s in starts]
    return clips


def consecutive_clips(trajectory_id: str, length: int, clip_length: int) -> list[Clip]:
    """Consecutive, non-overlapping clips of a trajectory of `length` steps (none if it is
    shorter than one clip): how recordings are cut for labelling."""
    return [Clip(trajectory_id, start, clip_length) for start in range(0, length - clip_length + 1, clip_length)]


@dataclass(frozen=True)
class SegmentBatch:
    """N segments of equal length L, stacked.

    observations (N, L+1, D) float32 — s_0 .. s_L; actions (N, L, A) float32;
    gt_rewards (N, L) float32 or None.
    """

    observations: np.ndarray
    actions: np.ndarray
    gt_rewards: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def concatenate(self, other: "SegmentBatch") -> "SegmentBatch":
        """This batch followed by `other` (same L, D, A)."""
        rewards = None
        if self.gt_rewards is not None and other.gt_rewards is not None:
            rewards = np.concatenate([self.gt_rewards, other.gt_rewards])
        return SegmentBatch(
            np.concatenate([self.observations, other.observations]),
            np.concatenate([self.actions, other.actions]),
            rewards,
        )

    def __getitem__(self, index) -> "SegmentBatch":
        return SegmentBatch(
            self.observations[index],
            self.actions[index],
            None if self.gt_rewards is None else self.gt_rewards[index],
        )

    @property
    def gt_returns(self) -> np.ndarray:
        """(N,) summed ground-truth reward."""
        if self.gt_rewards is None:
            raise ValueError("SegmentBatch.gt_rewards: this domain recorded no ground-truth reward")
        return self.gt_rewards.sum(-1)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """(obs (N, L, D), acts (N, L, A), next_obs (N, L, D)) as float32 tensors."""
        obs = torch.as_tensor(self.observations, dtype=torch.float32, device=device)
        acts = torch.as_tensor(self.actions, dtype=torch.float32, device=device)
        return obs[:, :-1], acts, obs[:, 1:]


def stack_segments(segments: Sequence[Segment]) -> SegmentBatch:
    """Stack equal-length segments; all or none must carry ground-truth rewards."""
    lengths = {len(s.actions) for s in segments}
    if len(lengths) != 1:
        raise ValueError(f"segments: expected one common length, found lengths {sorted(lengths)}")
    has_rewards = {s.rewards is not None for s in segments}
    rewards = np.stack([s.rewards for s in segments]) if has_rewards == {True} else None
    return SegmentBatch(
        np.stack([s.observations for s in segments]).astype(np.float32),
        np.stack([s.actions for s in segments]).astype(np.float32),
        None if rewards is None else rewards.astype(np.float32),
    )


@dataclass(frozen=True)
class PreferencePairs:
    """Labelled segment pairs: `targets` (N,) is P(first ≻ second): 1, 0, or 0.5 for a tie.

    `groups` (N,) str, optional: the query each pair comes from. Pairs of one query (several
    annotators, or the three pairs a triplet ranking implies) stay on one side of a
    train/validation split.
    """

    first: SegmentBatch
    second: SegmentBatch
    targets: np.ndarray
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not len(self.first) == len(self.second) == len(self.targets):
            raise ValueError(
                f"PreferencePairs: first/second/targets lengths differ: "
                f"{len(self.first)}/{len(self.second)}/{len(self.targets)}"
            )
        if self.groups is not None and len(self.groups) != len(self.targets):
            raise ValueError(
                f"PreferencePairs: groups has {len(self.groups)} entries for {len(self.targets)} pairs"
            )

    def __len__(self) -> int:
        return len(self.targets)

    def concatenate(self, other: "PreferencePairs") -> "PreferencePairs":
        """These pairs followed by `other`'s (groups kept only if both have them)."""
        groups = None
        if self.groups is not None and other.groups is not None:
            groups = np.concatenate([self.groups, other.groups])
        return PreferencePairs(
            self.first.concatenate(other.first),
            self.second.concatenate(other.second),
            np.concatenate([self.targets, other.targets]),
            groups,
        )

    def __getitem__(self, index) -> "PreferencePairs":
        return PreferencePairs(self.first[index], self.second[index], self.targets[index],
                               None if self.groups is None else self.groups[index])


def pair_sets(pairs: PreferencePairs | Sequence[PreferencePairs]) -> list[PreferencePairs]:
    """One set of pairs, or several (e.g. of clips and of whole episodes), as a list of sets."""
    return [pairs] if isinstance(pairs, PreferencePairs) else list(pairs)


def clip_batch(dataset: PreferenceDataset, clip_ids: Sequence[str]) -> SegmentBatch:
    """The clips' contents, stacked in the given order."""
    return stack_segments([dataset.segment(clip_id) for clip_id in clip_ids])


def clip_pool(dataset: PreferenceDataset) -> SegmentBatch:
    """Every clip of the dataset, stacked in insertion order."""
    return clip_batch(dataset, [clip.id for clip in dataset.clips()])


def labelled_pairs(dataset: PreferenceDataset) -> PreferencePairs:
    """Every label with a training signal, as stacked pairs grouped by query: a pairwise
    left/right/equal label gives one pair, a ranking every pair it orders (ties as 0.5).

    A query labelled by several annotators contributes one pair per label.
    """
    return pairs_and_labels(dataset)[0]


def pairs_and_labels(dataset: PreferenceDataset) -> tuple[PreferencePairs, list[Label]]:
    """`labelled_pairs`, and the label each pair comes from (e.g. for its annotator)."""
    queries = {q.id: q for q in dataset.queries()}
    firsts, seconds, targets, groups, sources = [], [], [], [], []
    for label in dataset.labels():
        query = queries[label.query_id]
        for i, j, target in label.implied_preferences(len(query.clip_ids)):
            firsts.append(query.clip_ids[i])
            seconds.append(query.clip_ids[j])
            targets.append(target)
            groups.append(query.id)
            sources.append(label)
    if not targets:
        raise ValueError(f"{dataset.path}: no labels with a preference (left/right/equal or a ranking)")
    pairs = PreferencePairs(
        clip_batch(dataset, firsts), clip_batch(dataset, seconds), np.asarray(targets, np.float32),
        np.asarray(groups),
    )
    return pairs, sources
