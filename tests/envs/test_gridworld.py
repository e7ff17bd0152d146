import json

import numpy as np
import pytest

from envs.gridworld import (
    GAMMA,
    SHARED_MDP_IDS,
    DeliveryMDP,
    load_mdp,
    load_segment_pairs,
    load_shared_mdp,
    load_shared_transitions,
    policy_evaluation,
    random_mdp,
    return_scale,
    scaled_return,
    solve_optimal,
    uniform_policy,
    value_iteration,
)
from envs.gridworld.delivery import ACTIONS, COIN, GOAL, HOUSE, MUD_GOAL, ROADBLOCK, SHEEP


def corridor(length: int = 5, goal_weight: float = 10.0) -> DeliveryMDP:
    """One row of blank cells ending in a goal; weights: gas −1, goal `goal_weight`."""
    board = np.zeros((1, length), dtype=int)
    board[0, -1] = GOAL
    return DeliveryMDP(board, np.array([-1.0, goal_weight, -50.0, 1.0, -5.0, -2.0]), GAMMA, name="corridor")


@pytest.mark.parametrize("mdp_id", SHARED_MDP_IDS)
def test_transitions_equal_the_shared_table(mdp_id):
    mdp, table = load_shared_mdp(mdp_id), load_shared_transitions(mdp_id)
    np.testing.assert_array_equal(mdp.next_state, table["next_state"])
    np.testing.assert_array_equal(mdp.features, table["features"])
    np.testing.assert_allclose(mdp.reward, table["reward"])
    np.testing.assert_array_equal(mdp.done, table["done"])


def test_value_iteration_matches_the_closed_form_of_a_corridor():
    mdp = corridor()
    # From column c the goal is d = 4 − c moves away: d − 1 gas steps, then the goal's reward.
    d = 4 - np.arange(4)
    expected = -(1 - GAMMA ** (d - 1)) / (1 - GAMMA) + GAMMA ** (d - 1) * 10.0
    for solution in (value_iteration(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing, tol=1e-12),
                     solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing)):
        np.testing.assert_allclose(solution.values[:4], expected, rtol=0, atol=1e-9)
        assert solution.values[4] == 0.0  # the goal absorbs
        np.testing.assert_array_equal(solution.policy[:4], 3)  # right
        np.testing.assert_allclose(solution.advantage[np.arange(4), 3], 0.0, atol=1e-9)
        # Moving left from column 2 costs a step away and back.
        assert solution.advantage[2, 2] == pytest.approx(-1 + GAMMA * expected[1] - expected[2], abs=1e-9)


def test_value_iteration_and_policy_iteration_agree_on_shared_mdps():
    for mdp_id in SHARED_MDP_IDS[:10]:
        mdp = load_shared_mdp(mdp_id)
        exact = solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing)
        iterated = value_iteration(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing, tol=1e-11)
        np.testing.assert_allclose(exact.values, iterated.values, atol=1e-6)
        assert (exact.advantage <= 0).all()


def test_policy_evaluation_of_a_policy_that_walks_into_the_wall():
    mdp = corridor()
    left = np.full(mdp.n_states, 2)  # never reaches the goal: −1 forever
    values = policy_evaluation(mdp.next_state, mdp.reward, mdp.gamma, left, mdp.absorbing)
    np.testing.assert_allclose(values[:4], -1 / (1 - GAMMA))
    # Probabilities and action indices give the same values.
    np.testing.assert_allclose(values, policy_evaluation(mdp.next_state, mdp.reward, mdp.gamma,
                                                         np.eye(4)[left], mdp.absorbing))


def test_scaled_return_is_one_for_optimal_and_zero_for_uniform():
    mdp = load_shared_mdp(100)
    scale = return_scale(mdp.next_state, mdp.reward, mdp.gamma, mdp.start_states, mdp.absorbing)
    assert scale.optimal > scale.random
    optimal = solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing).policy
    args = (mdp.next_state, mdp.reward, mdp.gamma)
    assert scaled_return(*args, optimal, mdp.start_states, mdp.absorbing) == pytest.approx(1.0)
    assert scaled_return(*args, uniform_policy(mdp.n_states, 4), mdp.start_states, mdp.absorbing,
                         scale=scale) == pytest.approx(0.0, abs=1e-12)
    assert scaled_return(*args, np.zeros(mdp.n_states, dtype=int), mdp.start_states, mdp.absorbing) < 1


def test_dynamics_of_houses_mud_and_coins():
    board = np.array([[0, COIN, HOUSE], [MUD_GOAL, ROADBLOCK, SHEEP]])
    mdp = DeliveryMDP(board, np.array([-1.0, 5, -50, 1, -5, -2]))
    assert mdp.next_state[1, 3] == 1  # the house blocks: stay put, gas only
    np.testing.assert_array_equal(mdp.features[1, 3], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(mdp.features[0, 1], [0, 1, 0, 0, 0, 1])  # into mud+goal: no gas
    np.testing.assert_array_equal(mdp.features[4, 0], [1, 0, 0, 1, 0, 0])  # roadblock -> coin
    np.testing.assert_array_equal(mdp.features[1, 1], [1, 0, 0, 0, 1, 0])  # coin -> roadblock
    np.testing.assert_array_equal(mdp.features[[2, 3, 5]], 0)  # house and terminals absorb
    assert mdp.reward[0, 3] == 0.0  # gas −1 + coin 1; coins are never used up
    assert mdp.absorbing.tolist() == [False, False, True, True, False, True]
    np.testing.assert_array_equal(mdp.start_states, [0, 1, 4])


def test_random_mdps_are_seeded_and_have_one_goal():
    first = random_mdp(np.random.default_rng(3), mud_probability=0.2, house_probability=0.1)
    again = random_mdp(np.random.default_rng(3), mud_probability=0.2, house_probability=0.1)
    np.testing.assert_array_equal(first.board, again.board)
    np.testing.assert_array_equal(first.reward_weights, again.reward_weights)
    for seed in range(20):
        mdp = random_mdp(np.random.default_rng(seed))
        assert np.isin(mdp.board, [GOAL, MUD_GOAL]).sum() == 1
        scale = return_scale(mdp.next_state, mdp.reward, mdp.gamma, mdp.start_states, mdp.absorbing)
        assert scale.optimal >= scale.random


def test_segment_pairs_roll_out_inside_the_board():
    mdp = load_shared_mdp(110)
    starts, actions = load_segment_pairs(110)
    assert starts.shape == (24802, 2) and actions.shape == (24802, 2, 3)
    assert starts.min() >= 0 and starts.max() < mdp.n_states and set(np.unique(actions)) <= {0, 1, 2, 3}
    states = mdp.segment_states(starts[:100], actions[:100])
    assert states.shape == (100, 2, 4)
    x, y = mdp.cell(states[:, :, 0])
    moved = np.stack(mdp.cell(states[:, :, 1]), -1) - np.stack([x, y], -1)
    # A step either moves by its action or stays put.
    stayed = (moved == 0).all(-1)
    assert ((moved == ACTIONS[actions[:100, :, 0]]).all(-1) | stayed).all()


def test_malformed_mdp_files_name_the_file_and_field(tmp_path):
    good = json.loads((load_shared_mdp.__globals__["shared_data_dir"]() / "MDP_100.json").read_text())
    del good["transitions"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "reward_weights"}))
    with pytest.raises(ValueError, match=r"bad\.json: missing field 'reward_weights'"):
        load_mdp(path)
    path.write_text(json.dumps({**good, "board": good["board"][:-1]}))
    with pytest.raises(ValueError, match=r"bad\.json: field 'board'"):
        load_mdp(path)
    path.write_text(json.dumps({**good, "reward_weights": [1, 2]}))
    with pytest.raises(ValueError, match=r"bad\.json: .*field 'reward_weights'"):
        load_mdp(path)
    with pytest.raises(FileNotFoundError, match="delivery MDPs are missing"):
        load_shared_mdp(100, root=tmp_path / "nowhere")


def test_gymnasium_env_follows_the_tables():
    import gymnasium

    from envs.gridworld import ENV_ID

    env = gymnasium.make(ENV_ID, mdp_id=110)
    mdp = env.unwrapped.mdp
    solution = solve_optimal(mdp.next_state, mdp.reward, mdp.gamma, mdp.absorbing)
    for seed in range(5):
        start, _ = env.reset(seed=seed)
        assert start in mdp.start_states
        state, total, discount, terminated = start, 0.0, 1.0, False
        while not terminated:
            state, reward, terminated, truncated, info = env.step(int(solution.policy[state]))
            assert reward == pytest.approx(info["features"] @ mdp.reward_weights) and not truncated
            total, discount = total + discount * reward, discount * mdp.gamma
        # Acting optimally from the start collects V*(start).
        assert total == pytest.approx(solution.values[start], abs=1e-9)
    with pytest.raises(ValueError, match="expected an action"):
        env.unwrapped.step(7)
