"""Crafter adapter: spaces, seeding as far as crafter allows, info, ground-truth rewards, the
score, the scripted player's quality ordering."""

import crafter
import gymnasium
import numpy as np
import pytest

import envs.crafter as cr
from envs.crafter.game import COUNT_SCALE, SEMANTIC_CLASSES, VIEW_RADIUS, placement_waste

STATE_ID = cr.env_id("achieve", "state")


def run(env, actions, seed, render=False):
    """Observations, rewards and semantic maps of one episode under fixed actions."""
    obs, info = env.reset(seed=seed)
    observations, rewards, semantic = [obs], [], [info["semantic"]]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(np.array([action]))
        if render:
            env.render()
        observations.append(obs)
        rewards.append(reward)
        semantic.append(info["semantic"])
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), np.array(semantic)


def test_ids_spaces_and_info():
    assert cr.env_id("thrift", "pixels") == "embodied_pref/Crafter-Thrift-Pixels-v0"
    with pytest.raises(ValueError, match="task"):
        cr.env_id("mine", "state")
    env = gymnasium.make(STATE_ID)
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (cr.STATE_DIM,) == obs.shape and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert env.action_space == gymnasium.spaces.MultiDiscrete([17]) and len(cr.ACTIONS) == 17
    assert cr.STATE_DIM == 16 + 22 + 22 + 22 + 22 + 16 + 4 + 1 + 1 + 18 + 3 * 18
    # The nearest player is the player itself, at offset 0; health is full; the cell faced
    # is the one crafter says.
    nearest = obs[cr.STATE_LAYOUT["nearest"]].reshape(SEMANTIC_CLASSES, 3)
    assert nearest[13 - 1].tolist() == [1.0, 0.0, 0.0]
    assert obs[cr.STATE_LAYOUT["inventory"]][0] == 1.0
    game = env.unwrapped.game
    faced = info["semantic"][tuple(game._player.pos + game._player.facing)]
    assert obs[cr.STATE_LAYOUT["facing_cell"]].argmax() + 1 == faced
    # The nearest cell of each class present lies where the offset says.
    for cls in np.flatnonzero(nearest[:, 0]):
        dx, dy = np.rint(nearest[cls, 1:] * VIEW_RADIUS).astype(int)
        assert info["semantic"][game._player.pos[0] + dx, game._player.pos[1] + dy] == cls + 1
    obs, reward, terminated, truncated, info = env.step(np.array([0]))
    for key in ("inventory", "achievements", "discount", "semantic", "player_pos", "gt_reward", "eval_score", "unlocked"):
        assert key in info
    assert len(info["achievements"]) == 22 and info["embodiment"] == "Player" and info["gt_reward"] == reward
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([17]))

    pixels = gymnasium.make(cr.env_id("achieve", "pixels"), render_mode="rgb_array", render_size=256)
    frame, _ = pixels.reset(seed=0)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert pixels.render().shape == (256, 256, 3)


def test_episode_truncates_at_its_length_and_refuses_more_steps():
    env = gymnasium.make(STATE_ID, length=5)
    env.reset(seed=3)
    ends = [env.step(np.array([0]))[2:4] for _ in range(5)]
    assert ends == [(False, False)] * 4 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0]))


def test_reset_with_a_seed_generates_crafters_world_for_that_seed():
    env = gymnasium.make(cr.env_id("achieve", "pixels"))
    raw = crafter.Env(seed=7)
    assert np.array_equal(env.reset(seed=7)[0], raw.reset())
    assert np.array_equal(env.reset()[0], raw.reset())  # the seed's next episode, as crafter's


def test_same_seed_and_actions_give_the_same_episode_through_the_night():
    actions = np.random.default_rng(0).integers(0, 17, size=400)
    first = run(gymnasium.make(STATE_ID), actions, seed=5)
    second = run(gymnasium.make(STATE_ID), actions, seed=5)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0][:50], run(gymnasium.make(STATE_ID), actions[:49], seed=6)[0])


def test_larger_renders_and_the_observation_type_leave_the_dynamics_alone():
    """Crafter's night noise draws from the world's generator; extra frames must not shift it."""
    actions = np.random.default_rng(1).integers(0, 5, size=260)  # moves only: survives into the night
    plain = run(gymnasium.make(STATE_ID), actions, seed=2)
    rendered = run(gymnasium.make(STATE_ID, render_size=128), actions, seed=2, render=True)
    pixels = run(gymnasium.make(cr.env_id("achieve", "pixels")), actions, seed=2)
    assert len(plain[2]) > 160  # reached the night (daylight < 0.5 from step 145)
    assert np.array_equal(plain[0], rendered[0]) and np.array_equal(plain[2], pixels[2])


def test_balancing_visits_creatures_in_order_of_position_whatever_the_set_order(monkeypatch):
    seen = []
    monkeypatch.setattr(crafter.Env, "_balance_chunk", lambda self, chunk, objs: seen.append([tuple(o.pos) for o in objs]))
    game = cr.CrafterEnv().game
    creatures = [type("Creature", (), {"pos": np.array(p)})() for p in ((3, 1), (0, 2), (0, 1))]
    game._balance_chunk((0, 12, 0, 12), set(creatures))
    game._balance_chunk((0, 12, 0, 12), set(reversed(creatures)))
    assert seen == [[(0, 1), (0, 2), (3, 1)]] * 2


def test_ground_truth_rewards_on_hand_built_transitions():
    assert cr.preference_reward("achieve", newly_unlocked=2, health_lost=3, wasted=5) == 2 - 3 * cr.HEALTH_PENALTY
    assert cr.preference_reward("thrift", newly_unlocked=1, health_lost=3, wasted=2) == 1 - 2 * cr.WASTE_PENALTY
    zero = dict.fromkeys(cr.ACHIEVEMENTS, 0)
    assert placement_waste(zero, {**zero, "place_table": 1}) == 0  # the first table is needed
    assert placement_waste({**zero, "place_table": 1}, {**zero, "place_table": 2, "place_stone": 1}) == 1
    assert placement_waste({**zero, "place_stone": 2}, {**zero, "place_stone": 4}) == 2

    # In the game: collect wood until the first table, then place tables; only the second costs.
    env = gymnasium.make(cr.env_id("thrift", "state"))
    env.reset(seed=0)
    game = env.unwrapped.game
    game._player.inventory["wood"] = 6
    rewards, states = [], []
    for direction in ("move_left", "move_right", "move_up"):
        env.step(np.array([cr.ACTIONS.index(direction)]))
        if game._world[game._player.pos + game._player.facing][0] in ("grass", "sand", "path"):
            obs, reward, *_ = env.step(np.array([cr.ACTIONS.index("place_table")]))
            rewards.append(reward)
            states.append(obs)
    assert rewards[:2] == [1.0, -cr.WASTE_PENALTY]
    # The state records the step's events: the first table is newly unlocked, the second only achieved.
    table, wood = cr.ACHIEVEMENTS.index("place_table"), cr.ITEMS.index("wood")
    for obs, newly in zip(states[:2], (1.0, 0.0)):
        assert obs[cr.STATE_LAYOUT["achieved"]][table] == 1.0 and obs[cr.STATE_LAYOUT["newly_unlocked"]][table] == newly
        assert obs[cr.STATE_LAYOUT["inventory_change"]][wood] == pytest.approx(-2 / 9)
    assert cr.violates_preference("thrift", np.stack(states[:2]))


def test_health_lost_costs_in_achieve():
    env = gymnasium.make(STATE_ID)
    env.reset(seed=0)
    env.unwrapped.game._player.health = 6  # as if hit: 3 points lost this step
    obs, reward, _, _, info = env.step(np.array([0]))
    assert info["health_lost"] == 3 and reward == -3 * cr.HEALTH_PENALTY
    assert obs[cr.STATE_LAYOUT["inventory_change"]][0] == pytest.approx(-3 / 9)


def test_crafter_score_against_hand_computed_values():
    everything = dict.fromkeys(cr.ACHIEVEMENTS, 100.0)
    assert cr.crafter_score(everything) == pytest.approx(100.0)
    assert cr.crafter_score(dict.fromkeys(cr.ACHIEVEMENTS, 0.0)) == 0.0
    one = {**dict.fromkeys(cr.ACHIEVEMENTS, 0.0), "collect_wood": 100.0}
    assert cr.crafter_score(one) == pytest.approx(101 ** (1 / 22) - 1)  # 0.2335
    episodes = [{**dict.fromkeys(cr.ACHIEVEMENTS, 0), "collect_wood": 3}, dict.fromkeys(cr.ACHIEVEMENTS, 0)]
    rates = cr.success_rates(episodes)
    assert rates["collect_wood"] == 50.0 and rates["eat_cow"] == 0.0
    assert cr.crafter_score(rates) == pytest.approx(np.exp(np.log(51) / 22) - 1)
    with pytest.raises(ValueError, match="missing"):
        cr.crafter_score({"collect_wood": 1.0})


def episode_outcome(task, quality, violate, seed):
    env = gymnasium.make(cr.env_id(task, "state"))
    player = cr.ScriptedPlayer(env, quality, violate, seed)
    obs, _ = env.reset(seed=seed)
    observations, total, done = [obs], 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(player(obs))
        observations.append(obs)
        total += reward
        done = terminated or truncated
    return total, len(info["unlocked"]), cr.violates_preference(task, np.array(observations))


def test_scripted_player_quality_orders_achievements_and_violate_wastes():
    outcomes = {q: [episode_outcome("thrift", q, False, seed) for seed in (0, 1)] for q in (0.0, 0.5, 1.0)}
    unlocked = {q: np.mean([o[1] for o in runs]) for q, runs in outcomes.items()}
    assert unlocked[0.0] < unlocked[0.5] < unlocked[1.0] and unlocked[1.0] >= 10
    assert not any(o[2] for o in outcomes[1.0])
    wasteful = [episode_outcome("thrift", 1.0, True, seed) for seed in (0, 1)]
    assert all(o[2] for o in wasteful) and np.mean([o[1] for o in wasteful]) >= 8
    assert np.mean([o[0] for o in wasteful]) < np.mean([o[0] for o in outcomes[1.0]])


def test_violations_read_from_state_vectors():
    obs = np.zeros((2, cr.STATE_DIM), dtype=np.float32)
    assert not cr.violates_preference("thrift", obs) and not cr.violates_preference("achieve", obs)
    place_stone = cr.STATE_LAYOUT["achievement_counts"].start + cr.ACHIEVEMENTS.index("place_stone")
    obs[-1, place_stone] = np.log1p(1) / np.log1p(COUNT_SCALE)  # one stone: needed
    assert not cr.violates_preference("thrift", obs)
    obs[-1, place_stone] = np.log1p(2) / np.log1p(COUNT_SCALE)
    assert cr.violates_preference("thrift", obs)
    obs[0, cr.STATE_LAYOUT["sleeping"]] = 1.0
    assert not cr.violates_preference("achieve", obs)
    obs[0, cr.STATE_LAYOUT["nearest"].start + 3 * (15 - 1)] = 1.0  # a zombie in view
    assert cr.violates_preference("achieve", obs)
    with pytest.raises(ValueError, match="observations"):
        cr.violates_preference("achieve", np.zeros((3, 5)))
