import csv
import json

import numpy as np
import pytest

from embodied_pref.agent_ranking import (
    CAMPAIGN_SELECTOR,
    Comparison,
    campaign_clips,
    campaign_comparisons,
)
from embodied_pref.ranking_simulation import NoisyJudge
from embodied_pref.data.bedd import read_bedd, write_bedd
from embodied_pref.data.video import VideoFrames, write_video
from embodied_pref.experiments.agent_ranking import (
    AgentRankingConfig,
    export_bedd,
    open_campaign,
    rank_agents,
    scan_episodes,
)
from embodied_pref.store import PreferenceDataset

SKILLS = {"a0": 0.0, "a1": 1.0, "a2": 2.0, "a3": 3.0, "w0": 0.0, "w1": 1.0}
# FindCave: four agents on seeds 1-3, a3 missed seed 3; MakeWaterfall: two agents, 2 seeds.
LAYOUT = {("FindCave", agent): (1, 2, 3) for agent in ("a0", "a1", "a2")}
LAYOUT.update({("FindCave", "a3"): (1, 2), ("MakeWaterfall", "w0"): (5, 6),
               ("MakeWaterfall", "w1"): (5, 6)})
PAIRS = 3 * 3 + 3 * 2 + 2  # same-seed pairs: among a0-a2, with a3, on MakeWaterfall


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    for (task, agent), seeds in LAYOUT.items():
        (root / task / agent).mkdir(parents=True)
        for seed in seeds:
            shade = int(40 * SKILLS[agent] + seed)
            frames = [np.full((16, 24, 3), shade + 5 * t, np.uint8) for t in range(4)]
            write_video(frames, root / task / agent / f"{seed}.mp4", fps=10)
    return root


def test_a_folder_of_episodes_is_ranked_and_a_rerun_continues(episodes, tmp_path):
    config = AgentRankingConfig(episodes, tmp_path / "out", fps=10, buffer_size=4)
    judge = NoisyJudge(SKILLS, noise=0.05)
    first = rank_agents(config, judge, comparisons=6)
    assert len(first.comparisons) == 6
    assert all(path.is_file() for path in first.files.values())
    assert first.files["plot"].read_bytes()[:4] == b"\x89PNG"
    with PreferenceDataset.open(config.out_dir / "dataset") as dataset:
        clips = campaign_clips(dataset)
        assert len(clips) == sum(len(s) for s in LAYOUT.values())
        assert all(dataset.preview_path(c).is_file() for c in clips)
        trajectory = dataset.trajectory(dataset.clip(next(iter(clips))).trajectory_id)
        assert trajectory.observations.shape == (4, 0) and trajectory.actions.shape == (3, 0)
        assert set(trajectory.metadata) >= {"task", "agent", "seed"}
        first_labels = [label.id for label in dataset.labels()]

    second = rank_agents(config, judge, comparisons=1000)  # runs until every pair was asked
    assert len(second.comparisons) == PAIRS and second.comparisons[:6] == first.comparisons
    with PreferenceDataset.open(config.out_dir / "dataset") as dataset:
        clips = campaign_clips(dataset)
        assert [label.id for label in dataset.labels()][:6] == first_labels
        queries = dataset.queries()
        assert len(queries) == PAIRS and all(q.selector == CAMPAIGN_SELECTOR for q in queries)
        asked = [frozenset(q.clip_ids) for q in queries]
        assert len(set(asked)) == len(asked)
        for query in queries:
            a, b = (clips[c] for c in query.clip_ids)
            assert (a.task, a.seed) == (b.task, b.seed) and a.agent != b.agent
        assert read_bedd(export_bedd(dataset, tmp_path / "export.json")) == \
            campaign_comparisons(dataset)

    board = second.leaderboard
    assert [r.agent for r in board.tasks["FindCave"]] == ["a3", "a2", "a1", "a0"]
    assert [r.agent for r in board.tasks["MakeWaterfall"]] == ["w1", "w0"]
    rows = list(csv.DictReader(second.files["csv"].open()))
    assert {(r["task"], r["agent"]) for r in rows if r["task"] != "overall"} == set(LAYOUT)
    assert "| 1 | a3 |" in second.files["markdown"].read_text()
    assert read_bedd(second.files["bedd"]) == second.comparisons

    third = rank_agents(config)  # nothing new to ask: the same ratings, nothing lost
    assert third.comparisons == second.comparisons


def test_bedd_comparisons_are_rated_first(episodes, tmp_path):
    bedd = write_bedd([Comparison("FindCave", "a0", "Human1", 1, "b", "W1"),
                       Comparison("FindCave", "a1", "Human1", 2, "b", "W2")],
                      tmp_path / "updated_human_answers.json",
                      banned_workers=["W2"], banned=tmp_path / "banned_workers.json")
    config = AgentRankingConfig(episodes, tmp_path / "out", fps=10, bedd_answers=bedd,
                                bedd_banned=tmp_path / "banned_workers.json")
    result = rank_agents(config, NoisyJudge(SKILLS, noise=0.05), comparisons=3)
    assert result.comparisons[0].worker == "W1" and len(result.comparisons) == 4
    assert "Human1" in {r.agent for r in result.leaderboard.tasks["FindCave"]}
    exported = json.loads(result.files["bedd"].read_text())
    assert exported[-1]["worker_id"] == "W1"  # oldest last, as published


def test_reduced_previews(episodes, tmp_path):
    config = AgentRankingConfig(episodes, tmp_path / "out", fps=10, preview_height=8)
    with open_campaign(config) as dataset:
        preview = dataset.preview_path(next(iter(campaign_clips(dataset))))
        assert VideoFrames(preview).shape == (4, 8, 12, 3)


def test_layout_errors_name_the_path(episodes, tmp_path):
    assert len(scan_episodes(episodes)) == sum(len(s) for s in LAYOUT.values())
    bad = tmp_path / "bad"
    (bad / "T" / "x").mkdir(parents=True)
    write_video([np.zeros((8, 8, 3), np.uint8)] * 2, bad / "T" / "x" / "1.mp4", fps=10)
    with pytest.raises(ValueError, match=r"T: expected at least 2 agent folders"):
        scan_episodes(bad)
    (bad / "T" / "y").mkdir()
    with pytest.raises(ValueError, match=r"y: no episodes"):
        scan_episodes(bad)
    (bad / "T" / "y" / "seed_1.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"seed_1.mp4: expected an episode file named <seed>"):
        scan_episodes(bad)
    with pytest.raises(ValueError, match="no such|not a folder"):
        scan_episodes(tmp_path / "missing")

