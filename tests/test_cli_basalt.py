"""`import-vpt` and `rank-agents` on recordings of the BASALT stand-in, run in-process."""

import json

import gymnasium
import numpy as np

import envs.basalt  # noqa: F401  (registers the ids)
from embodied_pref.cli import main
from embodied_pref.rollout import record_pixel_episode
from embodied_pref.store import PreferenceDataset
from envs.basalt import FLAT_SIZE, flatten_action, noop_action

STEPS = 12


def _walker(turn: float):
    action = dict(noop_action(), forward=1, camera=np.array([0.0, turn], dtype=np.float32))
    return lambda frame: flatten_action(action)


def _episode(path, turn, seed):
    env = gymnasium.make("embodied_pref/BasaltFindCaveStandIn-v0", pov_size=(36, 64),
                         flat_actions=True, episode_steps=STEPS)
    path.parent.mkdir(parents=True, exist_ok=True)
    return record_pixel_episode(env, _walker(turn), seed, video=path, fps=20, record_rewards=False)


def test_import_vpt_stores_a_recording_with_its_mp4(tmp_path, capsys):
    recordings = tmp_path / "recordings"
    episode = _episode(recordings / "walk.mp4", turn=3.0, seed=0)
    tick = {"mouse": {"x": 640.0, "y": 360.0, "dx": 20.0, "dy": 0.0, "buttons": [], "newButtons": []},
            "keyboard": {"keys": ["key.keyboard.w"]}, "isGuiOpen": False, "hotbar": 0}
    (recordings / "walk.jsonl").write_text((json.dumps(tick) + "\n") * (len(episode.frames)))
    dataset = tmp_path / "ds"
    main(["import-vpt", "--recordings", str(recordings), "--dataset", str(dataset),
          "--clip-length", "4", "--size", "18", "32", "--no-progress"])
    assert "1 recordings stored, 3 clips cut" in capsys.readouterr().out
    with PreferenceDataset.open(dataset) as store:
        stored = store.trajectory("walk")
        assert stored.actions.shape == (STEPS, FLAT_SIZE)
        assert np.all(stored.actions[:, envs.basalt.BUTTONS.index("forward")] == 1)
        np.testing.assert_allclose(stored.actions[:, -1], 20 * 360 / 2400)  # yaw from dx
        assert np.asarray(stored.frames).shape == (STEPS + 1, 18, 32, 3)
        assert len(store.clips()) == 3


def test_rank_agents_imports_episodes_and_writes_the_leaderboard(tmp_path, capsys):
    episodes = tmp_path / "episodes"
    for agent, turn in (("left", -5.0), ("right", 5.0)):
        for seed in (0, 1):
            _episode(episodes / "FindCave" / agent / f"{seed}.mp4", turn, seed)
    out = tmp_path / "eval"
    main(["rank-agents", "--episodes", str(episodes), "--out-dir", str(out), "--preview-height", "18"])
    printed = capsys.readouterr().out
    assert "left" in printed and "right" in printed
    assert {p.name for p in out.iterdir()} >= {"dataset", "leaderboard.md", "leaderboard.csv",
                                               "leaderboard.png", "updated_human_answers.json"}
    with PreferenceDataset.open(out / "dataset") as store:
        assert len(store.trajectory_ids()) == 4 and len(store.clips()) == 4
        assert all(store.preview_path(c.id).is_file() for c in store.clips())
