"""Ranking agents from a folder of their episode videos, BASALT-style.

```
<episodes>/<task>/<agent>/<seed>.mp4      one episode of <agent> on world <seed> of <task>
```
Task and agent are folder names; a seed is a file name of decimal digits with the ``.mp4``
suffix; names starting with ``.`` are ignored and anything else is an error naming the path.
Agents need not all play the same seeds: pairs are only drawn on seeds both agents played.

```
episodes ──import──▶ dataset (<out>/dataset): one trajectory + one clip + one preview per episode
                       │ campaign meta: the labeling queue asks TrueSkill's next pairs
people in human_ui ────┤ or a NoisyJudge (labels through the same queue)
                       ▼
labels ──▶ comparisons (+ BEDD imports, rated first) ──▶ TrueSkill ──▶ <out>/leaderboard.{md,csv,png}
                                                                       <out>/updated_human_answers.json (BEDD)
```
A trajectory's frames are a ``VideoFrames`` over the mp4; its observations are (T+1, 0) and
its actions (T, 0) float32 (videos carry no state); metadata ``{task, agent, seed}``. Running
again imports only new episodes, keeps every stored label and asks no pair twice.

Previews: the labeling app plays ``previews/<clip_id>.mp4``. Decoding and re-encoding a
640×360 episode took 14 ms a frame here (400 frames: 2.5 s decode + 2.9 s encode), half size
7 ms (1.7 s + 1.2 s), so a 5-minute BASALT episode (6,000 frames) costs ~80 s at full size
and ~40 s at half; ``preview_height`` trades picture size for that time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied_pref.agent_ranking import (
    BUFFER_SIZE,
    CAMPAIGN_META_KEY,
    Comparison,
    LABEL_OUTCOMES,
    EpisodeRef,
    Leaderboard,
    campaign_clips,
    campaign_comparisons,
    campaign_trajectories,
    leaderboard,
    leaderboard_csv,
    leaderboard_markdown,
    plot_leaderboard,
    rate,
)
from embodied_pref.data import Clip, Trajectory
from embodied_pref.data.bedd import ANSWERS_FILE, read_bedd, write_bedd
from embodied_pref.data.video import VideoFrames
from embodied_pref.durable import write_atomic
from embodied_pref.ranking_simulation import NoisyJudge
from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.queue import LabelQueue

_SEED_FILE = re.compile(r"(\d+)\.mp4")
_ANSWERS = {comparison: outcome.value for outcome, comparison in LABEL_OUTCOMES.items()}
"""A judge's comparison outcome -> the label outcome the queue stores."""


@dataclass(frozen=True)
class AgentRankingConfig:
    """Where the episodes are, where results go, and how pairs are asked."""

    episodes: Path
    """Folder laid out as ``<task>/<agent>/<seed>.mp4``."""
    out_dir: Path
    """Output folder: ``dataset/`` (the labeling campaign), ``leaderboard.md``,
    ``leaderboard.csv``, ``leaderboard.png`` and every comparison rated as BEDD's
    ``updated_human_answers.json``."""
    fps: float = 20.0
    """Frame rate of the previews (MineRL records at 20)."""
    preview_height: int | None = None
    """Height of the previews (width scaled to match, rounded to even); None: the episode's
    own size."""
    buffer_size: int = BUFFER_SIZE
    """Pairs selected each time the labeling queue runs dry, served highest expected σ²
    decrease first (BASALT's server kept 25)."""
    bedd_answers: Path | None = None
    """A BEDD ``updated_human_answers.json`` whose comparisons are rated before the
    dataset's own."""
    bedd_banned: Path | None = None
    """BEDD's ``banned_workers.json``: those workers' answers are dropped."""
    seed: int = 0
    """Seeds the pair choice's draws of seeds and left/right order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "episodes", Path(self.episodes))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if not self.fps > 0:
            raise ValueError(f"field 'fps': expected a positive frame rate, found {self.fps!r}")
        if self.preview_height is not None and not (
                isinstance(self.preview_height, int) and self.preview_height >= 2):
            raise ValueError(f"field 'preview_height': expected an int >= 2 or None, found "
                             f"{self.preview_height!r}")
        if isinstance(self.buffer_size, bool) or not isinstance(self.buffer_size, int) \
                or self.buffer_size < 1:
            raise ValueError(f"field 'buffer_size': expected an int >= 1, found {self.buffer_size!r}")
        if self.bedd_banned is not None and self.bedd_answers is None:
            raise ValueError("field 'bedd_banned': given without 'bedd_answers'")


@dataclass(frozen=True)
class EpisodeFile:
    """One episode video found in the folder."""

    episode: EpisodeRef
    path: Path


@dataclass(frozen=True)
class RankingResult:
    """What a run produced."""

    leaderboard: Leaderboard
    comparisons: list[Comparison]
    """Every comparison rated, imported ones first."""
    files: dict[str, Path] = field(default_factory=dict)
    """Output name (``markdown``, ``csv``, ``plot``, ``bedd``) -> path."""


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def scan_episodes(folder: str | os.PathLike[str]) -> list[EpisodeFile]:
    """Every ``<task>/<agent>/<seed>.mp4`` under ``folder``, sorted; ``ValueError`` naming
    the path for anything else, an agent folder without episodes or a task with fewer than
    two agents."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of <task>/<agent>/<seed>.mp4 episodes")
    found = []
    for task_dir in _entries(folder):
        if not task_dir.is_dir():
            raise ValueError(f"{task_dir}: expected a task folder (<task>/<agent>/<seed>.mp4)")
        agents = _entries(task_dir)
        if len(agents) < 2:
            raise ValueError(f"{task_dir}: expected at least 2 agent folders to compare, found "
                             f"{len(agents)}")
        for agent_dir in agents:
            if not agent_dir.is_dir():
                raise ValueError(f"{agent_dir}: expected an agent folder (<agent>/<seed>.mp4)")
            videos = _entries(agent_dir)
            if not videos:
                raise ValueError(f"{agent_dir}: no episodes (<seed>.mp4)")
            for video in videos:
                match = _SEED_FILE.fullmatch(video.name)
                if match is None or not video.is_file():
                    raise ValueError(f"{video}: expected an episode file named <seed>.mp4 with "
                                     "a decimal seed")
                found.append(EpisodeFile(
                    EpisodeRef(task_dir.name, agent_dir.name, int(match.group(1))), video))
    if not found:
        raise ValueError(f"{folder}: no episodes (<task>/<agent>/<seed>.mp4)")
    return found


def import_episodes(dataset: PreferenceDataset, files: list[EpisodeFile],
                    config: AgentRankingConfig) -> dict[EpisodeRef, str]:
    """Store each episode not stored yet as a trajectory with one clip spanning it, write
    missing previews, and return ``{episode: clip_id}`` for all of them."""
    stored = {e: c for c, e in campaign_clips(dataset).items()}
    trajectories = {e: t for t, e in campaign_trajectories(dataset).items()}
    for file in files:
        episode = file.episode
        if episode not in stored:
            trajectory_id = trajectories.get(episode)
            if trajectory_id is None:  # a run stopped before its clip is stored keeps its trajectory
                frames = VideoFrames(file.path)
                steps = len(frames) - 1
                if steps < 1:
                    raise ValueError(f"{file.path}: expected at least 2 frames, found {len(frames)}")
                trajectory_id = dataset.add_trajectory(Trajectory(
                    observations=np.zeros((steps + 1, 0), np.float32),
                    actions=np.zeros((steps, 0), np.float32), rewards=None, frames=frames,
                    env_id=episode.task, seed=episode.seed,
                    metadata={"task": episode.task, "agent": episode.agent,
                              "seed": episode.seed, "video": file.path.name},
                ))
            length = dataset.trajectory_info(trajectory_id)["length"]
            clip = Clip(trajectory_id, 0, length)
            dataset.add_clips([clip])
            stored[episode] = clip.id
        if not dataset.preview_path(stored[episode]).is_file():
            dataset.write_preview(stored[episode], fps=config.fps, height=config.preview_height)
    return stored


def open_campaign(config: AgentRankingConfig) -> PreferenceDataset:
    """Create (or reopen) the campaign dataset and import the folder's episodes into it."""
    files = scan_episodes(config.episodes)
    dataset = PreferenceDataset.create(
        config.out_dir / "dataset", exist_ok=True,
        description=f"Agent ranking: pairwise comparisons of the episodes in {config.episodes}",
        instructions="Watch both videos of the same task and world, then pick the agent that "
                     "solved the task better, or call a draw.",
    )
    try:
        import_episodes(dataset, files, config)
        dataset.set_meta(CAMPAIGN_META_KEY, {"buffer_size": config.buffer_size})
    except BaseException:
        dataset.close()
        raise
    return dataset


def label_with_judge(dataset: PreferenceDataset, judge: NoisyJudge, comparisons: int,
                     config: AgentRankingConfig, annotator: str = "noisy-judge") -> int:
    """Let a synthetic judge answer up to ``comparisons`` queries through the labeling
    queue (the path people's answers take); returns how many it answered (fewer when every
    same-seed pair was asked)."""
    queue = LabelQueue(dataset, UIConfig(overlap=0.0, seed=config.seed))
    episodes = campaign_clips(dataset)
    rng = np.random.default_rng(config.seed + queue.labelled(annotator))
    source = {"kind": "teacher", "name": "noisy_judge",
              "params": {"noise": judge.noise, "model": judge.model,
                         "draw_margin": judge.draw_margin}}
    answered = 0
    while answered < comparisons:
        query = queue.next_query(annotator)
        if query is None:
            break
        first, second = (episodes[c] for c in query.clip_ids)
        outcome = judge.compare(first.agent, second.agent, rng)
        queue.add_label(annotator, query.id, _ANSWERS[outcome], source=source)
        answered += 1
    return answered


def write_leaderboard(board: Leaderboard, comparisons: list[Comparison], out_dir: Path
                      ) -> dict[str, Path]:
    """Write the leaderboard (markdown, CSV, PNG) and the comparisons (BEDD) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "leaderboard.md", "csv": out_dir / "leaderboard.csv",
             "plot": out_dir / "leaderboard.png", "bedd": out_dir / ANSWERS_FILE}
    write_atomic(files["markdown"], leaderboard_markdown(board).encode("utf-8"))
    write_atomic(files["csv"], leaderboard_csv(board).encode("utf-8"))
    plot_leaderboard(board, files["plot"])
    write_bedd(comparisons, files["bedd"])
    return files


def rank_agents(config: AgentRankingConfig, judge: NoisyJudge | None = None,
                comparisons: int = 0) -> RankingResult:
    """Import the episodes, let ``judge`` (if given) answer up to ``comparisons`` more
    queries, rate every comparison (BEDD imports first, then the stored answers) and write
    the leaderboard files."""
    imported = (read_bedd(config.bedd_answers, config.bedd_banned)
                if config.bedd_answers is not None else [])
    with open_campaign(config) as dataset:
        if judge is not None and comparisons:
            label_with_judge(dataset, judge, comparisons, config)
        episodes = campaign_clips(dataset)
        rated = [*imported, *campaign_comparisons(dataset, episodes)]
    agents: dict[str, set[str]] = {}
    for episode in episodes.values():
        agents.setdefault(episode.task, set()).add(episode.agent)
    board = leaderboard(rate(rated, agents=agents), rated)
    return RankingResult(board, rated, write_leaderboard(board, rated, config.out_dir))


def export_bedd(dataset: PreferenceDataset, path: str | os.PathLike[str]) -> Path:
    """The dataset's stored comparisons as a BEDD ``updated_human_answers.json``."""
    return write_bedd(campaign_comparisons(dataset), path)
