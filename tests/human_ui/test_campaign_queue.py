import numpy as np
import pytest

from embodied_pref.agent_ranking import CAMPAIGN_META_KEY, CAMPAIGN_SELECTOR, campaign_clips
from embodied_pref.data import Clip, Trajectory
from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.queue import LabelQueue

# Three agents on seeds 1 and 2 of one task; "late" played seed 2 only; a second task.
EPISODES = [("FindCave", agent, seed) for agent in ("x", "y") for seed in (1, 2)] + [
    ("FindCave", "late", 2), ("MakeWaterfall", "x", 7), ("MakeWaterfall", "y", 7)]
SAME_SEED_PAIRS = 2 + 2 + 1  # x-y on seeds 1 and 2, late-x and late-y on seed 2, MakeWaterfall


def episodes_dataset(path, campaign):
    dataset = PreferenceDataset.create(path)
    for task, agent, seed in EPISODES:
        tid = dataset.add_trajectory(Trajectory(
            observations=np.zeros((4, 0), np.float32), actions=np.zeros((3, 0), np.float32),
            rewards=None, frames=np.full((4, 8, 8, 3), 30 * seed, np.uint8), seed=seed,
            metadata={"task": task, "agent": agent, "seed": seed}))
        clip = Clip(tid, 0, 3)
        dataset.add_clips([clip])
        dataset.write_preview(clip.id)
    if campaign:
        dataset.set_meta(CAMPAIGN_META_KEY, {"buffer_size": 3})
    return dataset


@pytest.fixture
def campaign(tmp_path):
    with episodes_dataset(tmp_path / "ds", campaign=True) as dataset:
        yield dataset


def test_a_campaign_serves_same_seed_pairs_of_two_agents_until_all_are_asked(campaign):
    queue = LabelQueue(campaign, UIConfig(overlap=0.0, batch_size=8))
    episodes = campaign_clips(campaign)
    served = []
    while (query := queue.next_query("ann")) is not None:
        served.append(query)
        queue.add_label("ann", query.id, "left")
    assert len(served) == SAME_SEED_PAIRS
    assert len({frozenset(q.clip_ids) for q in served}) == SAME_SEED_PAIRS
    for query in served:
        a, b = (episodes[c] for c in query.clip_ids)
        assert (a.task, a.seed) == (b.task, b.seed) and a.agent != b.agent
        assert query.selector == CAMPAIGN_SELECTOR and query.score > 0
    first_buffer = served[:3]  # the campaign's buffer_size, not the queue's batch_size
    assert [q.score for q in first_buffer] == sorted((q.score for q in first_buffer), reverse=True)


def test_a_dataset_without_the_campaign_mark_keeps_uniform_selection(tmp_path):
    with episodes_dataset(tmp_path / "ds", campaign=False) as dataset:
        query = LabelQueue(dataset, UIConfig(overlap=0.0)).next_query("ann")
        assert query.selector == "uniform"
