"""Recorded episodes into a preference dataset: one trajectory per episode, its frames those of
the camera people will compare, cut into clips to label, and graded preferences a format
already carries (robomimic's operator-quality masks) stored as labels with their provenance.

Importing is resumable: an episode's trajectory id is derived from its source and name, so a
second run stores only what the first did not. Frames stay video-backed: an mp4 camera is
referenced (the dataset copies each source file once, however many episodes it holds), and
frames given as arrays (HDF5 images) are encoded to an mp4 first unless asked not to.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embodied_pref.data import Clip, Label, Outcome, Query, Trajectory
from embodied_pref.data.video import VideoFrames, write_video
from embodied_pref.recordings.episode import RecordedEpisode, RobotDataError, to_trajectory
from embodied_pref.segments import consecutive_clips
from embodied_pref.store import PreferenceDataset


@dataclass(frozen=True)
class RecordingImportConfig:
    """How recorded episodes become trajectories and clips."""

    camera: str | None = None
    """Camera whose frames people compare (and RAPL's encoder sees); None: the first camera
    in name order; "" stores no frames."""
    encoder_cameras: tuple[str, ...] = ()
    """Further cameras stored with each trajectory (`Trajectory.views`) for an encoder that
    sees several cameras (`train-rapl --cameras`); video-backed like `camera`'s."""
    clip_length: int = 50
    """Steps per clip; each episode is cut into consecutive clips of this length."""
    encode_frames: bool = True
    """Encode frames given as arrays (robomimic's HDF5 images) to an mp4 so that they stay
    video-backed; False stores them raw in the trajectory's npz."""
    lossless: bool = False
    """Encode those frames losslessly (exact round trips, larger files)."""
    embodiment: str = ""
    """Embodiment recorded with every trajectory (e.g. the robot's name)."""
    max_episodes: int | None = None
    """Import at most this many episodes (None: all)."""
    batch_episodes: int = 32
    """Episodes stored per transaction (one commit for the lot); a process killed mid-import
    loses at most the batch in flight, which the next run stores."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.clip_length < 1:
            raise ValueError(f"clip_length: expected >= 1, found {self.clip_length}")
        if self.max_episodes is not None and self.max_episodes < 0:
            raise ValueError(f"max_episodes: expected >= 0 or None, found {self.max_episodes}")
        if self.batch_episodes < 1:
            raise ValueError(f"batch_episodes: expected >= 1, found {self.batch_episodes}")


@dataclass(frozen=True)
class RecordingImportSummary:
    """What an import stored."""

    stored: tuple[str, ...]
    """Trajectory ids stored by this run."""
    already: tuple[str, ...]
    """Trajectory ids a previous run had stored."""
    clips: int
    """Clips added by this run."""
    trajectory_of: dict[str, str]
    """Episode name -> trajectory id, for every episode seen."""


def episode_trajectory_id(source_format: str, episode: RecordedEpisode) -> str:
    """A stable id for an episode: the same source and name give the same id on every run."""
    key = f"{source_format}\n{Path(episode.source).resolve() if episode.source else ''}\n{episode.name}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def import_episodes(episodes: Iterable[RecordedEpisode], dataset: PreferenceDataset, source_format: str,
                    config: RecordingImportConfig = RecordingImportConfig()) -> RecordingImportSummary:
    """Store each episode as a trajectory cut into clips, `config.batch_episodes` episodes per
    transaction (memory does not grow with the number of episodes); episodes stored before are
    left as they are. When an episode fails to read or convert, or the import is interrupted,
    the episodes read before it are stored before the error propagates."""
    stored_before = set(dataset.trajectory_ids())
    with_clips = {clip.trajectory_id for clip in dataset.clips()}
    stored, already, trajectory_of, clips = [], [], {}, 0
    pending: list[tuple[Trajectory, list[Clip]]] = []
    encoded: list[Path] = []
    """Frames encoded to scratch mp4s for the pending batch, removed once the dataset holds copies."""

    def store_pending() -> None:
        nonlocal clips
        batch = pending[:]
        pending.clear()  # taken even if storing fails, so that the failure is not retried
        if batch:
            stored.extend(dataset.add_trajectories(batch))
            clips += sum(len(own_clips) for _, own_clips in batch)
        for path in encoded:
            path.unlink(missing_ok=True)  # a file the failing episode never wrote
        encoded.clear()

    bar = tqdm(episodes, desc=f"{source_format or 'recording'} episodes", unit="episode", disable=not config.progress)
    with tempfile.TemporaryDirectory(prefix=".import-", dir=dataset.path) as scratch:
        try:
            for count, episode in enumerate(bar):
                if config.max_episodes is not None and count >= config.max_episodes:
                    break
                trajectory_id = episode_trajectory_id(source_format, episode)
                trajectory_of[episode.name] = trajectory_id
                if trajectory_id not in stored_before:
                    camera = _camera(episode, config.camera)
                    views = [name for name in config.encoder_cameras if name != camera]
                    for k, name in enumerate([camera, *views] if camera is not None else []):
                        in_memory = not isinstance(episode.cameras.get(name), (VideoFrames, type(None)))
                        if config.encode_frames and in_memory:
                            encoded.append(Path(scratch) / f"{trajectory_id}.{k}.mp4")
                            episode = _video_backed(episode, name, encoded[-1], config.lossless)
                    trajectory = to_trajectory(episode, camera, source_format, trajectory_id, config.embodiment, views)
                    own_clips = consecutive_clips(trajectory_id, trajectory.length, config.clip_length)
                    pending.append((trajectory, own_clips))
                    if len(pending) == config.batch_episodes:
                        store_pending()
                    continue
                already.append(trajectory_id)
                if trajectory_id not in with_clips:  # stored without clips (by another command, or too short)
                    length = dataset.trajectory_info(trajectory_id)["length"]
                    own_clips = consecutive_clips(trajectory_id, length, config.clip_length)
                    dataset.add_clips(own_clips)
                    clips += len(own_clips)
        finally:  # an episode that fails to read or convert keeps those read before it
            store_pending()
    return RecordingImportSummary(tuple(stored), tuple(already), clips, trajectory_of)


def _camera(episode: RecordedEpisode, camera: str | None) -> str | None:
    if camera == "" or not episode.cameras:
        return None
    if camera is None:
        return sorted(episode.cameras)[0]
    if camera not in episode.cameras:
        raise RobotDataError(f"{episode.source}: episode {episode.name!r}: field 'camera': no camera {camera!r} "
                             f"(it has {sorted(episode.cameras)})")
    return camera


def _video_backed(episode: RecordedEpisode, camera: str, path: Path, lossless: bool) -> RecordedEpisode:
    """The episode with `camera`'s frame arrays encoded to the mp4 `path`."""
    frames = np.asarray(episode.cameras[camera])
    write_video(frames, path, fps=episode.fps, lossless=lossless)
    cameras = {**episode.cameras, camera: VideoFrames(path, size=frames.shape[1:3])}
    return RecordedEpisode(episode.states, episode.actions, cameras, episode.fps, episode.rewards, episode.task,
                           episode.name, episode.source, episode.metadata)


@dataclass(frozen=True)
class GradedPair:
    """Episode `better` was judged better than episode `worse` (e.g. by operator quality)."""

    better: str
    """Episode name."""
    worse: str
    """Episode name."""
    provenance: dict
    """Where the judgement comes from, stored as the label's source."""


def add_graded_labels(dataset: PreferenceDataset, pairs: Sequence[GradedPair], trajectory_of: dict[str, str],
                      annotator: str, per_pair: int = 1) -> int:
    """For each graded pair of imported episodes, `per_pair` queries of two clips at the same
    place in both episodes (the better one's clip shown first), answered "left" by
    `annotator` with the pair's provenance. Returns the number of labels added; pairs
    labelled before (same clips, same annotator) are not asked again."""
    if per_pair < 1:
        raise ValueError(f"per_pair: expected >= 1, found {per_pair}")
    clips_of: dict[str, list[Clip]] = {}
    for clip in dataset.clips():
        clips_of.setdefault(clip.trajectory_id, []).append(clip)
    for clips in clips_of.values():
        clips.sort(key=lambda c: c.start)
    queries = {q.id: q for q in dataset.queries()}
    asked = {queries[label.query_id].clip_ids for label in dataset.labels() if label.annotator == annotator}
    added = 0
    for pair in pairs:
        for name in (pair.better, pair.worse):
            if name not in trajectory_of:
                raise RobotDataError(f"graded pair {pair.better!r} > {pair.worse!r}: episode {name!r} was not imported")
        better, worse = clips_of.get(trajectory_of[pair.better], []), clips_of.get(trajectory_of[pair.worse], [])
        shared = min(len(better), len(worse))
        for k in sorted({int(i) for i in np.linspace(0, shared - 1, min(per_pair, shared))}) if shared else []:
            clip_ids = (better[k].id, worse[k].id)
            if clip_ids in asked:
                continue
            query = Query(clip_ids, selector="graded")
            dataset.add_queries([query])
            dataset.add_label(Label(query.id, Outcome.LEFT, annotator=annotator, source=pair.provenance))
            added += 1
    return added
