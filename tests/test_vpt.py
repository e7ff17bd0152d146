import json

import numpy as np
import pytest

from embodied_pref.data.video import VideoFrames, write_video
from embodied_pref.data.vpt import (
    BUTTONS,
    RecordingError,
    VPTImportConfig,
    import_recordings,
    read_recording_actions,
    recording_trajectory,
    recording_videos,
)
from embodied_pref.store import PreferenceDataset
from envs.basalt import BUTTONS as MINERL_BUTTONS
from envs.basalt import FLAT_SIZE, flatten_action

HEIGHT, WIDTH = 72, 128


def _tick(keys=(), dx=0.0, dy=0.0, buttons=(), new_buttons=(), hotbar=0, gui=False, x=0.0, y=0.0):
    return {
        "mouse": {"x": x, "y": y, "dx": dx, "dy": dy, "scaledX": x - 640, "scaledY": y - 360,
                  "dwheel": 0.0, "buttons": list(buttons), "newButtons": list(new_buttons)},
        "keyboard": {"keys": list(keys), "newKeys": [], "chars": ""},
        "isGuiOpen": gui,
        "isGuiInventory": gui,
        "hotbar": hotbar,
        "yaw": 0.0,
        "pitch": 0.0,
        "xpos": 0.0, "ypos": 64.0, "zpos": 0.0,
        "tick": 0,
        "milli": 0,
        "inventory": [],
        "serverTick": 0,
        "serverTickDurationMs": 50.0,
        "stats": {},
    }


def _write_jsonl(path, ticks):
    path.write_text("".join(json.dumps(t) + "\n" for t in ticks))
    return path


def _frames(n):
    """Frame i: solid grey 20 * i + 10, except a dark 8x8 corner."""
    frames = np.zeros((n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames[:] = (20 * np.arange(n) + 10).astype(np.uint8)[:, None, None, None]
    frames[:, :8, :8] = 0
    return frames


def _recording(directory, name, ticks, n_frames=None):
    """Writes <name>.jsonl and a lossless <name>.mp4 of `n_frames` (default: one per tick)."""
    _write_jsonl(directory / f"{name}.jsonl", ticks)
    video = directory / f"{name}.mp4"
    write_video(_frames(len(ticks) if n_frames is None else n_frames), video, fps=20, lossless=True)
    return video


def test_ticks_become_minerl_actions(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [
        _tick(keys=["key.keyboard.w", "key.keyboard.escape", "key.keyboard.t"]),
        _tick(buttons=[0, 1, 2], new_buttons=[0, 1, 2]),
        _tick(dx=10.0, dy=-4.0),
        _tick(dx=1300.0, dy=-20.0),  # 1300 counts = 195 degrees: beyond ±180, so 0
        _tick(keys=["key.keyboard.left.shift", "key.keyboard.3", "key.keyboard.f"]),
    ])
    recording = read_recording_actions(path)
    actions = recording.actions
    assert set(actions) == {*MINERL_BUTTONS, "camera"} and BUTTONS == MINERL_BUTTONS
    assert all(actions[name].dtype == np.int64 and actions[name].shape == (5,) for name in BUTTONS)
    pressed = [{name for name in BUTTONS if actions[name][i]} for i in range(5)]
    assert pressed == [
        {"forward", "ESC"}, {"attack", "use", "pickItem"}, set(), set(),
        {"sneak", "hotbar.3", "swapHands"},
    ]
    assert actions["camera"].dtype == np.float32
    # [pitch, yaw] = [dy, dx] * 360 / 2400
    np.testing.assert_allclose(
        actions["camera"], [[0, 0], [0, 0], [-0.6, 1.5], [-3.0, 0.0], [0, 0]], atol=1e-6
    )
    np.testing.assert_array_equal(recording.ticks, np.arange(5))
    assert flatten_action(actions).shape == (5, FLAT_SIZE)


def test_null_ticks_are_dropped_and_frames_stay_aligned(tmp_path):
    null = {0, 2, 3, 6}
    ticks = [_tick() if i in null else _tick(dx=float(i)) for i in range(8)]
    video = _recording(tmp_path, "rec", ticks)
    recording = read_recording_actions(video.with_suffix(".jsonl"))
    kept = np.array([1, 4, 5, 7])
    np.testing.assert_array_equal(recording.ticks, kept)
    assert read_recording_actions(video.with_suffix(".jsonl"), drop_null=False).ticks.tolist() == list(range(8))

    trajectory = recording_trajectory(video, flatten_action, env_id="embodied_pref/BasaltFindCave-v0")
    assert trajectory.length == 3
    assert trajectory.observations.shape == (4, 0) and trajectory.rewards is None
    # The action of kept tick k is taken on frame k; the last kept tick's action is dropped.
    np.testing.assert_allclose(trajectory.actions[:, -1], kept[:-1] * 0.15, atol=1e-6)
    frames = np.asarray(trajectory.frames)
    assert frames.shape == (4, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(frames, _frames(8)[kept])
    assert trajectory.id == "rec" and trajectory.env_id == "embodied_pref/BasaltFindCave-v0"
    assert trajectory.metadata == {"source": "vpt", "recording": "rec", "ticks": 8}


def test_stuck_attack_is_removed_until_a_real_press(tmp_path):
    stuck = _write_jsonl(tmp_path / "stuck.jsonl", [
        _tick(buttons=[0], new_buttons=[0], dx=1.0),
        _tick(buttons=[0], dx=1.0),
        _tick(buttons=[0, 1], new_buttons=[1], dx=1.0),
        _tick(buttons=[0], new_buttons=[0], dx=1.0),  # a real press: attack from here on
        _tick(buttons=[0], dx=1.0),
        _tick(dx=1.0),
    ])
    actions = read_recording_actions(stuck).actions
    assert actions["attack"].tolist() == [0, 0, 0, 1, 1, 0]
    assert actions["use"].tolist() == [0, 0, 1, 0, 0, 0]
    # Without the pressed-at-start marker, attack is an ordinary button.
    held = _write_jsonl(tmp_path / "held.jsonl", [_tick(buttons=[0], new_buttons=[0, 1]), _tick(buttons=[0])])
    assert read_recording_actions(held).actions["attack"].tolist() == [1, 1]
    # A stuck attack alone is no action: that tick is null and dropped.
    alone = _write_jsonl(tmp_path / "alone.jsonl", [_tick(buttons=[0], new_buttons=[0]), _tick(dx=2.0)])
    assert read_recording_actions(alone).ticks.tolist() == [1]


def test_hotbar_changes_become_presses(tmp_path):
    path = _write_jsonl(tmp_path / "h.jsonl", [
        _tick(hotbar=2, dx=1.0),  # compared with slot 0 before the recording
        _tick(hotbar=2, dx=1.0),
        _tick(hotbar=5, dx=1.0),
        _tick(hotbar=7),          # a change on a null tick goes with the tick
        _tick(hotbar=7, dx=1.0),
        _tick(hotbar=0, dx=1.0),
    ])
    recording = read_recording_actions(path)
    assert recording.ticks.tolist() == [0, 1, 2, 4, 5]
    slots = [[n for n in range(1, 10) if recording.actions[f"hotbar.{n}"][i]] for i in range(5)]
    assert slots == [[3], [], [6], [], [1]]
    everything = read_recording_actions(path, drop_null=False).actions
    assert everything["hotbar.8"].tolist() == [0, 0, 0, 1, 0, 0]


def test_gui_cursor_positions_are_scaled_and_drawn(tmp_path):
    ticks = [
        _tick(dx=1.0, gui=False, x=100.0, y=100.0),
        _tick(keys=["key.keyboard.e"], gui=True, x=640.0, y=366.0),
        _tick(buttons=[0], new_buttons=[0, 1], gui=True, x=10.0, y=700.0),
        _tick(dx=1.0),
    ]
    video = _recording(tmp_path, "gui", ticks)
    recording = read_recording_actions(video.with_suffix(".jsonl"))
    cursor = recording.cursor
    assert np.isnan(cursor[[0, 3]]).all()
    np.testing.assert_array_equal(cursor[1:3], [[640.0, 366.0], [10.0, 700.0]])
    # Scaled by 72 / 720 and truncated to whole pixels; 16 pixels tall.
    pointer = recording.pointer(HEIGHT)
    np.testing.assert_array_equal(pointer[1:3], [[64.0, 36.0, 16.0], [1.0, 70.0, 16.0]])
    assert np.isnan(pointer[[0, 3], 0]).all()

    frames = np.asarray(recording_trajectory(video, flatten_action).frames)
    plain = np.asarray(VideoFrames(video))
    np.testing.assert_array_equal(frames[[0, 3]], plain[[0, 3]])
    changed = np.argwhere((frames[1] != plain[1]).any(axis=-1))
    assert len(changed) and changed.min(axis=0).tolist() == [36, 64]


@pytest.mark.parametrize(
    ("line", "text", "message"),
    [
        (3, '{"mouse": {', "line 3: not valid JSON"),
        (2, "[1, 2]", "line 2: expected a JSON object, found list"),
        (2, json.dumps({k: v for k, v in _tick().items() if k != "keyboard"}),
         "line 2: field 'keyboard': missing"),
        (3, json.dumps({**_tick(), "mouse": {**_tick()["mouse"], "dy": "up"}}),
         "line 3: field 'mouse.dy': expected a finite number, found 'up'"),
        (2, json.dumps({**_tick(), "hotbar": 9}), "line 2: field 'hotbar': expected an int in [0, 8]"),
        (2, json.dumps({**_tick(), "isGuiOpen": 1}), "line 2: field 'isGuiOpen': expected true or false"),
        (3, json.dumps({**_tick(gui=True), "mouse": {k: v for k, v in _tick()["mouse"].items() if k != "x"}}),
         "line 3: field 'mouse.x': missing"),
        (2, json.dumps({**_tick(), "keyboard": {"keys": ["key.keyboard.w", 3]}}),
         "line 2: field 'keyboard.keys': expected a list of strings"),
    ],
)
def test_malformed_lines_name_the_file_line_and_field(tmp_path, line, text, message):
    lines = [json.dumps(_tick(dx=1.0))] * 4
    lines[line - 1] = text
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError) as raised:
        read_recording_actions(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_empty_missing_and_too_short_recordings_are_named(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RecordingError, match=f"{empty}: no ticks"):
        read_recording_actions(empty)
    with pytest.raises(RecordingError, match="missing"):
        read_recording_actions(tmp_path / "absent.jsonl")
    video = _recording(tmp_path, "short", [_tick(dx=1.0), _tick(), _tick()])
    with pytest.raises(RecordingError, match=r"short.jsonl: 1 ticks with an action \(of 3\)"):
        recording_trajectory(video, flatten_action)


@pytest.mark.parametrize("n_frames", [5, 7])
def test_frame_count_must_equal_line_count(tmp_path, n_frames):
    video = _recording(tmp_path, "cut", [_tick(dx=1.0)] * 6, n_frames=n_frames)
    with pytest.raises(RecordingError) as raised:
        recording_trajectory(video, flatten_action)
    assert str(raised.value) == (
        f"{video}: {n_frames} frames, but {video.with_suffix('.jsonl')} has 6 lines (one per "
        "frame): a truncated recording?"
    )


def test_directory_import_stores_trajectories_and_clips(tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    _recording(recordings, "b-second", [_tick(dx=1.0)] * 9)
    _recording(recordings, "a-first", [_tick(dx=1.0), _tick()] * 6)  # 6 kept ticks
    config = VPTImportConfig(clip_length=2, size=(36, 64), env_id="envX", progress=False)
    with PreferenceDataset.create(tmp_path / "data") as dataset:
        summary = import_recordings(recordings, dataset, flatten_action, config)
        assert summary.trajectory_ids == ("a-first", "b-second")
        assert summary.clips == 2 + 4 and summary.skipped == {} and summary.already_stored == ()
        first = dataset.trajectory("a-first")
        assert first.length == 5 and first.actions.shape == (5, FLAT_SIZE)
        assert first.env_id == "envX" and np.asarray(first.frames).shape == (6, 36, 64, 3)
        assert isinstance(first.frames, VideoFrames)  # stored as the mp4, not decoded
        np.testing.assert_array_equal(first.frames.indices, [0, 2, 4, 6, 8, 10])
        assert sorted((c.trajectory_id, c.start) for c in dataset.clips()) == [
            ("a-first", 0), ("a-first", 2), ("b-second", 0), ("b-second", 2), ("b-second", 4),
            ("b-second", 6),
        ]
        again = import_recordings(recordings, dataset, flatten_action, config)
        assert again.trajectory_ids == () and again.already_stored == ("a-first", "b-second")
        assert len(dataset.clips()) == 6


def test_import_stopped_before_clips_cuts_them_when_run_again(tmp_path, monkeypatch):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    _recording(recordings, "only", [_tick(dx=1.0)] * 9)
    config = VPTImportConfig(clip_length=4, size=(36, 64), progress=False)

    def stop(*_):
        raise KeyboardInterrupt

    with PreferenceDataset.create(tmp_path / "data") as dataset:
        with monkeypatch.context() as patch:
            patch.setattr(PreferenceDataset, "add_clips", stop)
            with pytest.raises(KeyboardInterrupt):
                import_recordings(recordings, dataset, flatten_action, config)
        assert dataset.trajectory_ids() == ["only"] and dataset.clips() == []
        resumed = import_recordings(recordings, dataset, flatten_action, config)
        assert resumed.already_stored == ("only",) and resumed.clips == 2
        assert sorted(c.start for c in dataset.clips()) == [0, 4]
        assert import_recordings(recordings, dataset, flatten_action, config).clips == 0


def test_directory_import_raises_or_skips_bad_recordings(tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    _recording(recordings, "good", [_tick(dx=1.0)] * 4)
    _recording(recordings, "truncated", [_tick(dx=1.0)] * 4, n_frames=3)
    with PreferenceDataset.create(tmp_path / "data") as dataset:
        with pytest.raises(RecordingError, match="truncated.mp4: 3 frames"):
            import_recordings(recordings, dataset, flatten_action, VPTImportConfig(progress=False))
        assert dataset.trajectory_ids() == ["good"]
        summary = import_recordings(
            recordings, dataset, flatten_action, VPTImportConfig(skip_bad=True, progress=False)
        )
        assert summary.already_stored == ("good",) and list(summary.skipped) == ["truncated"]
        assert "3 frames" in summary.skipped["truncated"]
    (recordings / "lonely.jsonl").write_text(json.dumps(_tick()) + "\n")
    with pytest.raises(RecordingError, match="lonely.jsonl: no lonely.mp4 beside it"):
        recording_videos(recordings)
