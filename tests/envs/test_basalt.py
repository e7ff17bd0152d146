import sys
import types

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from embodied_pref.data.video import VideoFrames
from embodied_pref.rollout import record_pixel_episode
from envs.basalt import (
    BUTTONS,
    CAMERA_ZERO_BIN,
    FLAT_SIZE,
    TASKS,
    BasaltEnv,
    StandInBasaltEnv,
    action_space,
    bins_to_camera,
    camera_to_bins,
    env_id,
    flat_action_space,
    flatten_action,
    noop_action,
    observation_space,
    resize_pov,
    unflatten_action,
)

# VPT's agent.py TARGET_ACTION_SPACE, which VPT checks a MineRL 1.0 env against.
TARGET_ACTION_SPACE = {
    "ESC": spaces.Discrete(2),
    "attack": spaces.Discrete(2),
    "back": spaces.Discrete(2),
    "camera": spaces.Box(low=-180.0, high=180.0, shape=(2,)),
    "drop": spaces.Discrete(2),
    "forward": spaces.Discrete(2),
    **{f"hotbar.{n}": spaces.Discrete(2) for n in range(1, 10)},
    "inventory": spaces.Discrete(2),
    "jump": spaces.Discrete(2),
    "left": spaces.Discrete(2),
    "pickItem": spaces.Discrete(2),
    "right": spaces.Discrete(2),
    "sneak": spaces.Discrete(2),
    "sprint": spaces.Discrete(2),
    "swapHands": spaces.Discrete(2),
    "use": spaces.Discrete(2),
}


def _action(**pressed) -> dict:
    action = noop_action()
    action.update(pressed)
    return action


def test_spaces_equal_minerl_basalt():
    assert action_space() == spaces.Dict(TARGET_ACTION_SPACE)
    assert action_space()["camera"].dtype == np.float32
    assert observation_space() == spaces.Dict(
        {"pov": spaces.Box(0, 255, shape=(360, 640, 3), dtype=np.uint8)}
    )
    assert {t.minerl_id: t.episode_steps for t in TASKS.values()} == {
        "MineRLBasaltFindCave-v0": 3600,
        "MineRLBasaltMakeWaterfall-v0": 6000,
        "MineRLBasaltCreateVillageAnimalPen-v0": 6000,
        "MineRLBasaltBuildVillageHouse-v0": 14400,
    }
    stand_in = StandInBasaltEnv("MineRLBasaltMakeWaterfall-v0")
    assert stand_in.action_space == action_space()
    assert stand_in.observation_space == observation_space()
    assert stand_in.task.max_episode_steps == 6000


def test_flat_actions_round_trip_single_and_batched():
    rng = np.random.default_rng(0)
    batch = {name: rng.integers(0, 2, size=7) for name in BUTTONS}
    batch["camera"] = rng.uniform(-180, 180, size=(7, 2)).astype(np.float32)
    flat = flatten_action(batch)
    assert flat.shape == (7, FLAT_SIZE) and flat.dtype == np.float32
    assert flat_action_space().contains(flat[0])
    np.testing.assert_array_equal(flat[:, BUTTONS.index("forward")], batch["forward"])
    np.testing.assert_array_equal(flat[:, -2:], batch["camera"])
    back = unflatten_action(flat)
    for name in BUTTONS:
        np.testing.assert_array_equal(back[name], batch[name])
    np.testing.assert_array_equal(back["camera"], batch["camera"])
    np.testing.assert_array_equal(flatten_action(unflatten_action(flat[3])), flat[3])
    assert action_space().contains({k: np.asarray(v) for k, v in unflatten_action(flat[0]).items()})


def test_flat_decoding_thresholds_buttons_and_clips_camera():
    flat = np.zeros(FLAT_SIZE, dtype=np.float32)
    flat[BUTTONS.index("jump")] = 0.51
    flat[BUTTONS.index("use")] = 0.49
    flat[-2:] = (-500.0, 12.5)
    action = unflatten_action(flat)
    assert action["jump"] == 1 and action["use"] == 0
    np.testing.assert_array_equal(action["camera"], [-180.0, 12.5])
    with pytest.raises(KeyError, match="camera"):
        flatten_action({name: 0 for name in BUTTONS})
    with pytest.raises(ValueError, match="expected shape"):
        unflatten_action(np.zeros(FLAT_SIZE - 1))


def test_camera_quantization_matches_hand_computed_mu_law():
    # bin = round((10 * sign(x) * ln(1 + 10|x|/10) / ln 11 + 10) / 2) for x clipped to ±10.
    degrees = np.array([0.0, 1.0, -1.0, 5.0, 10.0, -10.0, 45.0, -180.0, 0.2705, 0.2715])
    bins = camera_to_bins(np.stack([degrees, -degrees], axis=-1))
    assert bins.dtype == np.int64
    # 1° -> 6.445; 5° -> 8.736; the 5|6 edge lies at 11**0.1 - 1 = 0.270982°.
    np.testing.assert_array_equal(bins[:, 0], [5, 6, 4, 9, 10, 0, 10, 0, 5, 6])
    np.testing.assert_array_equal(bins[:, 1], [5, 4, 6, 1, 0, 10, 0, 10, 5, 4])
    assert camera_to_bins(np.zeros(2)).tolist() == [CAMERA_ZERO_BIN] * 2
    # bin b -> ±(11**(|b - 5| / 5) - 1) degrees.
    centres = bins_to_camera(np.arange(11))
    expected = [-10.0, -5.8094831, -3.2153691, -1.6094986, -0.6153943, 0.0,
                0.6153943, 1.6094986, 3.2153691, 5.8094831, 10.0]
    np.testing.assert_allclose(centres, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(camera_to_bins(centres), np.arange(11))
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        bins_to_camera(np.array([11]))


def test_resize_samples_like_opencv_inter_linear():
    frame = np.zeros((2, 4, 3), dtype=np.uint8)
    frame[..., 0] = [[0, 10, 20, 30], [40, 50, 60, 70]]
    # Halving: each output pixel centre falls between four source pixels: their mean.
    np.testing.assert_array_equal(resize_pov(frame, (1, 2))[..., 0], [[25, 45]])
    row = np.zeros((1, 2, 3), dtype=np.uint8)
    row[..., 1] = [0, 100]
    # Doubling: centres at source x = -0.25 (edge), 0.25, 0.75, 1.25 (edge).
    np.testing.assert_array_equal(resize_pov(row, (1, 4))[..., 1], [[0, 25, 75, 100]])
    batch = np.stack([frame, 255 - frame])
    resized = resize_pov(batch, (1, 2))
    assert resized.shape == (2, 1, 2, 3) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized[1, ..., 0], [[230, 210]])


def test_stand_in_speaks_minerl_old_gym_api():
    env = StandInBasaltEnv("FindCave", episode_steps=3)
    env.seed(4)
    obs = env.reset()
    assert set(obs) == {"pov"} and observation_space()["pov"].contains(obs["pov"])
    for step in range(3):
        obs, reward, done, info = env.step(env.noop_action())
        assert reward == 0.0 and info == {} and done == (step == 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.noop_action())
    env.reset()
    _, _, done, _ = env.step(_action(ESC=1))
    assert done
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.noop_action())


def test_stand_in_frames_are_seeded_and_react_to_actions():
    env = StandInBasaltEnv("FindCave")
    env.seed(7)
    first = env.reset()["pov"]
    panned = env.step(_action(camera=np.array([0.0, 5.0], dtype=np.float32)))[0]["pov"]
    # Turning right by 5° moves the pillars on the horizon left by 5 * 6.4 = 32 pixels.
    np.testing.assert_array_equal(panned[150, :-32], first[150, 32:])
    assert not np.array_equal(panned[150], first[150])
    walked = env.step(_action(forward=1))[0]["pov"]
    assert not np.array_equal(walked[250:300], panned[250:300])
    looked_down = env.step(_action(camera=np.array([10.0, 0.0], dtype=np.float32)))[0]["pov"]
    assert not np.array_equal(looked_down[100:180], walked[100:180])
    env.seed(7)
    np.testing.assert_array_equal(env.reset()["pov"], first)
    env.seed(8)
    assert not np.array_equal(env.reset()["pov"], first)


def test_adapter_episode_ends_on_esc_and_then_raises():
    env = gymnasium.make(env_id("MakeWaterfall", stand_in=True), pov_size=(72, 128))
    obs, info = env.reset(seed=1)
    assert obs.shape == (72, 128, 3) and obs.dtype == np.uint8
    assert info == {"task": "MineRLBasaltMakeWaterfall-v0", "step": 0}
    for step in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(_action(forward=1))
        assert (reward, terminated, truncated, info["step"]) == (0.0, False, False, step)
    obs, reward, terminated, truncated, info = env.step(_action(ESC=1))
    assert terminated and not truncated and info["step"] == 4
    with pytest.raises(RuntimeError, match="reset"):
        env.step(noop_action())
    env.reset(seed=1)
    assert not env.step(noop_action())[2]


def test_adapter_truncates_at_time_limit_with_flat_actions():
    env = gymnasium.make(
        env_id("BuildVillageHouse", stand_in=True), episode_steps=5, flat_actions=True,
        pov_size=(64, 64),
    )
    assert env.action_space == flat_action_space()
    env.reset(seed=0)
    forward = np.zeros(FLAT_SIZE, dtype=np.float32)
    forward[BUTTONS.index("forward")] = 1.0
    ends = [env.step(forward)[2:4] for _ in range(5)]
    assert ends == [(False, False)] * 4 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(forward)
    env.reset(seed=0)
    escape = forward.copy()
    escape[BUTTONS.index("ESC")] = 0.9
    assert env.step(escape)[2:4] == (True, False)


# Flat camera actions are in degrees (±180), not the [-1, 1] the checker recommends.
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized")
def test_adapter_passes_gymnasium_env_checker_and_resizes_the_pov():
    env = BasaltEnv("FindCave", stand_in=True, flat_actions=True, pov_size=(90, 160))
    check_env(env, skip_render_check=True)
    native = BasaltEnv("FindCave", stand_in=True)
    full, _ = native.reset(seed=2)
    small, _ = env.reset(seed=2)
    assert full.shape == (360, 640, 3)
    np.testing.assert_array_equal(small, resize_pov(full, (90, 160)))
    np.testing.assert_array_equal(env.render(), small)


def test_adapter_rejects_bad_actions():
    env = BasaltEnv("FindCave", stand_in=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="unknown keys"):
        env.step({"fly": 1})
    with pytest.raises(ValueError, match="'jump' must be 0 or 1"):
        env.step({"jump": 2})
    with pytest.raises(ValueError, match="flat_actions"):
        env.step(np.zeros(FLAT_SIZE))


def test_real_ids_run_through_minerl_gym_make(monkeypatch):
    made = []

    def make(minerl_id):
        made.append(minerl_id)
        return StandInBasaltEnv(minerl_id, episode_steps=2)

    monkeypatch.setitem(sys.modules, "minerl", types.ModuleType("minerl"))
    monkeypatch.setitem(sys.modules, "gym", types.SimpleNamespace(make=make))
    env = gymnasium.make(env_id("CreateVillageAnimalPen"), episode_steps=2)
    assert made == ["MineRLBasaltCreateVillageAnimalPen-v0"]
    env.reset(seed=3)
    env.step(noop_action())
    assert env.step(noop_action())[2:4] == (False, True)


def test_missing_minerl_names_the_install_steps(monkeypatch):
    monkeypatch.setitem(sys.modules, "minerl", None)
    with pytest.raises(ModuleNotFoundError) as raised:
        gymnasium.make(env_id("FindCave"))
    message = str(raised.value)
    assert "MineRLBasaltFindCave-v0" in message
    assert "openjdk-8-jdk" in message and "github.com/minerllabs/minerl" in message
    assert "embodied_pref/BasaltFindCaveStandIn-v0" in message


def test_recorded_stand_in_episode_streams_frames_to_video(tmp_path):
    env = BasaltEnv("FindCave", stand_in=True, flat_actions=True, pov_size=(72, 128), episode_steps=12)
    turn_and_walk = np.zeros(FLAT_SIZE, dtype=np.float32)
    turn_and_walk[BUTTONS.index("forward")] = 1.0
    turn_and_walk[-1] = 3.0
    in_memory = record_pixel_episode(env, lambda obs: turn_and_walk, seed=5, record_rewards=False)
    assert in_memory.length == 12 and not in_memory.terminated and in_memory.rewards is None
    assert in_memory.observations.shape == (13, 0) and in_memory.frames.shape == (13, 72, 128, 3)
    np.testing.assert_array_equal(in_memory.actions, np.tile(turn_and_walk, (12, 1)))
    assert not np.array_equal(in_memory.frames[0], in_memory.frames[1])

    streamed = record_pixel_episode(
        env, lambda obs: turn_and_walk, seed=5, video=tmp_path / "episode.mp4", record_rewards=False
    )
    assert isinstance(streamed.frames, VideoFrames) and streamed.frames.shape == (13, 72, 128, 3)
    # H.264 is lossy: each decoded frame is nearest to the frame it was encoded from.
    decoded = np.asarray(streamed.frames, dtype=np.float32).reshape(13, 1, -1)
    distances = np.abs(decoded - in_memory.frames.reshape(1, 13, -1)).mean(axis=-1)
    np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(13))

    escape = np.zeros(FLAT_SIZE, dtype=np.float32)
    escape[BUTTONS.index("ESC")] = 1.0
    ended = record_pixel_episode(env, lambda obs: escape, seed=5)
    assert ended.length == 1 and ended.terminated and ended.rewards.tolist() == [0.0]
    assert ended.env_id == "BasaltEnv"
