"""The worked robot-recording sample (datasets/franka_recordings.py): generated from the Franka
simulation in the LeRobot v3.0, LeRobot v2.1 and robomimic layouts, each imported by
`embodied-pref import-recordings` into a dataset that holds the same episodes (actions, states
and boundaries equal, frames within the codec's tolerance), robomimic's quality masks as
labels, and `export-recordings` giving the episodes back."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from embodied_pref.cli import main
from embodied_pref.data import Outcome
from embodied_pref.recordings.episode import from_trajectory
from embodied_pref.recordings.lerobot import read_lerobot
from embodied_pref.store import PreferenceDataset

ROOT = Path(__file__).resolve().parents[2]
CODEC_TOLERANCE = 6 / 255
"""Mean absolute error of a lossy H.264 frame of the sample against the rendered one."""


def _generator():
    spec = importlib.util.spec_from_file_location("franka_recordings", ROOT / "datasets" / "franka_recordings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    generator = _generator()
    out = tmp_path_factory.mktemp("franka_recordings")
    episodes = generator.franka_sample_episodes()
    return episodes, generator.write_sample(out, episodes)


def stored_episodes(dataset: Path) -> dict:
    with PreferenceDataset.open(dataset) as store:
        return {e.name: e for e in (from_trajectory(store.trajectory(i)) for i in store.trajectory_ids())}


def test_every_layout_imports_the_same_episodes(sample, tmp_path):
    rendered, paths = sample
    assert len(rendered) == 6 and {e.metadata["quality"] for e in rendered} == {"better", "okay", "worse"}
    imported = {}
    for layout, path in paths.items():
        main(["import-recordings", "--source", str(path), "--dataset", str(tmp_path / layout),
              "--camera", "observation.images.front", "--clip-length", "10", "--no-progress"])
        imported[layout] = stored_episodes(tmp_path / layout)
        assert len(imported[layout]) == 6
    by_order = {layout: sorted(episodes.values(), key=lambda e: int(e.name.split("_")[-1]))
                for layout, episodes in imported.items()}
    for layout, episodes in by_order.items():
        for original, back in zip(rendered, episodes):
            assert back.length == original.length == 51, layout
            np.testing.assert_array_equal(back.actions, original.actions)
            np.testing.assert_array_equal(back.states, original.states)
            np.testing.assert_array_equal(back.rewards, original.rewards)
            frames = np.asarray(back.cameras["observation.images.front"], dtype=np.float64)
            error = np.abs(frames - original.cameras["observation.images.front"]).mean() / 255
            assert error < CODEC_TOLERANCE, (layout, back.name, error)
    with PreferenceDataset.open(tmp_path / "lerobot_v3.0") as store:
        assert len({store.trajectory_info(i)["video_file"] for i in store.trajectory_ids()}) == 1
        assert len(store.clips()) == 6 * 5


def test_quality_masks_become_labels_and_export_round_trips(sample, tmp_path):
    _, paths = sample
    main(["import-recordings", "--source", str(paths["robomimic"]), "--dataset", str(tmp_path / "ds"),
          "--quality-labels", "--clip-length", "10", "--no-progress"])
    with PreferenceDataset.open(tmp_path / "ds") as store:
        labels = store.labels()
        assert len(labels) == 2 * 2 * 3  # better>okay, better>worse, okay>worse over two demos each
        assert {label.outcome for label in labels} == {Outcome.LEFT}
        assert {(label.source["better"], label.source["worse"]) for label in labels} == {
            ("better", "okay"), ("better", "worse"), ("okay", "worse")}
    main(["export-recordings", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "export")])
    exported = {e.name: e for e in read_lerobot(tmp_path / "export")}
    imported = stored_episodes(tmp_path / "ds")
    assert len(exported) == len(imported) == 6
    for original, back in zip(sorted(imported.values(), key=lambda e: e.name),
                              sorted(exported.values(), key=lambda e: e.metadata["episode_index"])):
        np.testing.assert_array_equal(back.actions, original.actions)
        np.testing.assert_array_equal(back.states, original.states)


def test_a_bad_source_is_named(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no recordings here")
    with pytest.raises(SystemExit, match=r"notes: field 'format': not a LeRobot dataset"):
        main(["import-recordings", "--source", str(tmp_path / "notes"), "--dataset", str(tmp_path / "ds")])
    assert not (tmp_path / "ds").exists()
