import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.xmagical import (
    EMBODIMENTS,
    AvoidingSweeper,
    GroupingSweeper,
    ScriptedSweeper,
    SweepToTopEnv,
    avoid_state_reward,
    env_id,
    group_state_reward,
    make_demonstrator,
)
from envs.xmagical.variants import (
    SPREAD_PENALTY,
    SPREAD_TOLERANCE,
    ZONE_LRBT,
    ZONE_PENALTY,
)

VARIANTS = ("avoid", "group")
SEEDS = range(5)
STATE_REWARDS = {"avoid": avoid_state_reward, "group": group_state_reward}


def _returns(env, quality, violate, seeds=SEEDS):
    """GT preference return and last info of one episode per seed."""
    results = []
    for seed in seeds:
        policy = make_demonstrator(env, quality=quality, seed=seed, violate=violate)
        obs, _ = env.reset(seed=seed)
        total, truncated = 0.0, False
        while not truncated:
            obs, reward, _, truncated, info = env.step(policy(obs))
            total += reward
        results.append((total, info))
    return np.array([r for r, _ in results]), [i for _, i in results]


def _gap_beyond_noise(better, worse):
    stderr = np.sqrt(better.var(ddof=1) / len(better) + worse.var(ddof=1) / len(worse))
    return better.mean() - worse.mean() - 2 * stderr


@pytest.mark.parametrize("task", VARIANTS)
@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_env_checker_passes_without_warnings_in_state_mode(task, embodiment):
    env = gymnasium.make(env_id(embodiment, "state", task))
    assert env.unwrapped.task == task
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("task", VARIANTS)
def test_env_checker_passes_in_pixel_mode(task):
    env = gymnasium.make(env_id("Shortstick", "pixels", task), pixel_size=32)
    assert env.observation_space.shape == (32, 32, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_env_id_names_the_variants_and_keeps_the_sweep_default():
    assert env_id("Gripper", "state", "avoid") == "embodied_pref/XMagical-Avoid-Gripper-State-v0"
    assert (
        env_id("Longstick", "pixels", "group") == "embodied_pref/XMagical-Group-Longstick-Pixels-v0"
    )
    assert env_id("Gripper", "state") == env_id("Gripper", "state", "sweep")
    for task in VARIANTS:
        for embodiment in EMBODIMENTS:
            for observation in ("state", "pixels"):
                assert env_id(embodiment, observation, task) in gymnasium.registry
    with pytest.raises(ValueError, match="'sweep', 'avoid', 'group'"):
        env_id("Gripper", "state", "stack")


@pytest.mark.parametrize("task", VARIANTS)
def test_seeded_reset_and_trajectories_are_reproducible(task):
    env = SweepToTopEnv("Gripper", layout="random", task=task)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 3)).astype(np.float32)

    def trajectory(seed):
        obs, info = env.reset(seed=seed)
        steps = [(obs, info)]
        for action in actions:
            obs, _, _, _, info = env.step(action)
            steps.append((obs, info))
        return steps

    first, second = trajectory(3), trajectory(3)
    for (obs_a, info_a), (obs_b, info_b) in zip(first, second):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert info_a == info_b
    assert not np.array_equal(env.reset(seed=4)[0], first[0][0])


@pytest.mark.parametrize("task", VARIANTS)
def test_rendered_frames_change_with_actions(task):
    env = SweepToTopEnv(
        "Mediumstick", observation="pixels", pixel_size=32, render_size=96, task=task
    )
    obs, _ = env.reset(seed=0)
    before = env.render()
    for _ in range(5):
        obs_after = env.step(np.array([1.0, 0.5], dtype=np.float32))[0]
    after = env.render()
    assert before.shape == after.shape == (96, 96, 3)
    assert np.abs(after.astype(int) - before.astype(int)).sum() > 0
    assert not np.array_equal(obs, obs_after)


def _zone_pixels(frame: np.ndarray) -> np.ndarray:
    """The frame's pixels well inside the zone's rectangle: (h, w, 3)."""
    size = frame.shape[0]
    half = 1.1 * 1.02  # arena half-size times x-magical's zoom-out

    def col(x):
        return int((x + half) / (2 * half) * size)

    def row(y):
        return int((half - y) / (2 * half) * size)

    left, right, bottom, top = ZONE_LRBT
    return frame[row(top) + 3 : row(bottom) - 3, col(left) + 3 : col(right) - 3]


@pytest.mark.parametrize("observation", ["state", "pixels"])
def test_off_limits_zone_is_drawn_in_its_own_colour(observation):
    avoid = SweepToTopEnv(
        "Gripper", observation=observation, pixel_size=24, render_size=128, task="avoid"
    )
    sweep = SweepToTopEnv("Gripper", observation=observation, pixel_size=24, render_size=128)
    avoid.reset(seed=0)
    sweep.reset(seed=0)
    inside, background = _zone_pixels(avoid.render()), _zone_pixels(sweep.render())
    assert inside.size > 0
    # Plain SweepToTop shows uniform floor there; the variant a yellowish fill (R, G > B).
    assert len(np.unique(background.reshape(-1, 3), axis=0)) == 1
    colour = inside.reshape(-1, 3).astype(int).mean(0)
    assert np.abs(colour - background[0, 0]).sum() > 60
    assert colour[0] > colour[2] + 30 and colour[1] > colour[2] + 30


def test_zone_counts_steps_and_entries_and_penalises_the_robot_inside():
    env = SweepToTopEnv("Gripper", task="avoid")
    obs, info = env.reset(seed=0)
    assert (info["zone_steps"], info["zone_entries"], info["in_zone"]) == (0, 0, False)
    policy = AvoidingSweeper(env, violate=True)
    inside_steps = 0
    for _ in range(100):
        obs, reward, _, truncated, info = env.step(policy(obs))
        inside_steps += info["in_zone"]
        expected = info["task_progress"] - (ZONE_PENALTY if info["in_zone"] else 0.0)
        assert reward == pytest.approx(expected) and reward == info["gt_reward"]
        if truncated:
            break
    assert inside_steps > 0 and info["zone_steps"] == inside_steps
    assert info["zone_entries"] >= 1


def test_group_reports_the_spread_across_the_arena():
    env = SweepToTopEnv("Shortstick", task="group")
    _, info = env.reset(seed=0)
    # Demo layout: blocks at x = -0.5, 0, 0.5.
    assert info["spread"] == pytest.approx((0.5 + 0.5 + 1.0) / 3, abs=1e-5)
    assert info["gt_reward"] == pytest.approx(
        info["task_progress"] - SPREAD_PENALTY * (info["spread"] - SPREAD_TOLERANCE)
    )


@pytest.mark.parametrize("task", VARIANTS)
@pytest.mark.parametrize("embodiment", ["Gripper", "Longstick"])
def test_state_reward_reproduces_the_env_reward(task, embodiment):
    env = gymnasium.make(env_id(embodiment, "state", task))
    policy = make_demonstrator(env, quality=0.6, seed=2, violate=True)
    obs, _ = env.reset(seed=2)
    next_obs, rewards, truncated = [], [], False
    while not truncated:
        obs, reward, _, truncated, _ = env.step(policy(obs))
        next_obs.append(obs)
        rewards.append(reward)
    assert len(set(np.round(rewards, 4))) > 5
    np.testing.assert_allclose(STATE_REWARDS[task](np.array(next_obs)), rewards, atol=1e-5)


def test_demonstrators_check_the_task_and_knobs():
    with pytest.raises(TypeError, match="avoid"):
        AvoidingSweeper(SweepToTopEnv("Gripper", task="group"))
    with pytest.raises(TypeError, match="group"):
        GroupingSweeper(SweepToTopEnv("Gripper"))
    with pytest.raises(ValueError, match="violate"):
        make_demonstrator(SweepToTopEnv("Gripper"), violate=True)
    assert type(make_demonstrator(SweepToTopEnv("Gripper"))) is ScriptedSweeper
    env = SweepToTopEnv("Gripper", task="group")
    obs, _ = env.reset(seed=0)
    for quality in (1.0, 0.5, 0.0):
        for violate in (False, True):
            action = make_demonstrator(env, quality, 0, violate)(obs)
            assert action.dtype == np.float32 and action in env.action_space


ORDERED = [(task, e) for task in VARIANTS for e in EMBODIMENTS]


@pytest.mark.parametrize("task, embodiment", ORDERED)
def test_preference_reward_ranks_compliant_over_violating_noisy_and_random(task, embodiment):
    env = SweepToTopEnv(embodiment, task=task)
    compliant, compliant_info = _returns(env, 1.0, False)
    violating, violating_info = _returns(env, 1.0, True)
    noisy, _ = _returns(env, 0.5, False)
    random, _ = _returns(env, 0.0, False)
    table = {"compliant": compliant, "violating": violating, "noisy": noisy, "random": random}
    assert _gap_beyond_noise(compliant, violating) > 0, table
    assert _gap_beyond_noise(compliant, noisy) > 0, table
    assert _gap_beyond_noise(noisy, random) > 0, table
    # The violation knob does what it says.
    if task == "avoid":
        assert all(i["zone_steps"] == 0 for i in compliant_info)
        assert all(i["zone_entries"] >= 1 for i in violating_info)
    else:
        assert max(i["spread"] for i in compliant_info) < min(i["spread"] for i in violating_info)


def test_jitter_layout_moves_the_blocks_per_seed_and_keeps_the_middle_block_on_the_zone_path():
    env = gymnasium.make(env_id("Gripper", "state", "avoid"), layout="jitter")
    demo = gymnasium.make(env_id("Gripper", "state", "avoid"))
    starts = [env.reset(seed=seed)[0] for seed in range(6)]
    base = demo.reset(seed=0)[0]
    assert len({tuple(np.round(s, 4)) for s in starts}) == 6
    np.testing.assert_array_equal(env.reset(seed=3)[0], starts[3])
    for start in starts:
        offsets = start[2:8] - base[2:8]
        assert 0 < np.abs(offsets).max() <= 0.1 + 1e-6
        np.testing.assert_allclose(start[:2], base[:2])  # the robot is not moved
        assert abs(start[4]) < 0.12  # middle block x: still under the zone
    # The moved blocks are real bodies: a still step leaves them where the jitter put them.
    env.reset(seed=5)
    obs, *_ = env.step(np.zeros(3, np.float32))
    np.testing.assert_allclose(obs[2:8], starts[5][2:8], atol=1e-3)
