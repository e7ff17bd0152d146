import math

import numpy as np
import pytest
import trueskill
from scipy.stats import norm

from embodied_pref.agent_ranking import (
    Comparison,
    choose_pairs,
    expected_sigma_decrease,
    leaderboard,
    leaderboard_csv,
    leaderboard_markdown,
    pair_key,
    plot_leaderboard,
    rate,
    ranking_env,
    score,
    update,
    win_probability,
)
from embodied_pref.ranking_simulation import (
    NoisyJudge,
    comparisons_to_reach,
    plot_ranking_curves,
    ranking_curves,
    ranking_tau,
)

SKILLS = {f"agent{i}": float(i) for i in range(5)}


def closed_form_1vs1(winner, loser, env):
    """TrueSkill's exact two-player update (Herbrich et al.), written out independently."""
    var_w, var_l = winner.sigma**2 + env.tau**2, loser.sigma**2 + env.tau**2
    c = math.sqrt(2 * env.beta**2 + var_w + var_l)
    margin = norm.ppf((env.draw_probability + 1) / 2) * math.sqrt(2) * env.beta
    t, e = (winner.mu - loser.mu) / c, margin / c
    v = norm.pdf(t - e) / norm.cdf(t - e)
    w = v * (v + t - e)
    return var_w * (1 - var_w / c**2 * w), var_l * (1 - var_l / c**2 * w)


def test_pair_score_matches_a_hand_computed_value():
    env = ranking_env()
    a, b = env.create_rating(30.0, 4.0), env.create_rating(25.0, 6.0)
    p_a = norm.cdf(5.0 / math.sqrt(2 * (25 / 6) ** 2 + 16 + 36))
    assert win_probability(a, b, env) == pytest.approx(p_a)
    before = 16 + 36
    a_wins = sum(closed_form_1vs1(a, b, env))
    b_wins = sum(closed_form_1vs1(b, a, env))
    expected = p_a * (before - a_wins) + (1 - p_a) * (before - b_wins)
    assert expected_sigma_decrease(a, b, env) == pytest.approx(expected, rel=1e-3)


def test_draws_pull_ratings_together_and_a_win_separates_them():
    env = ranking_env()
    drawn = rate([Comparison("t", "x", "y", 1, "draw")], env)["t"]
    (x,), (y,) = env.rate([(env.create_rating(),), (env.create_rating(),)], ranks=[0, 0])
    assert (drawn["x"].mu, drawn["x"].sigma) == pytest.approx((x.mu, x.sigma))
    assert drawn["x"].mu == pytest.approx(drawn["y"].mu) and drawn["x"].sigma < env.sigma
    ratings = {"strong": env.create_rating(30, 3), "weak": env.create_rating(20, 3)}
    update(ratings, Comparison("t", "weak", "strong", 1, "draw"), env)
    assert ratings["strong"].mu < 30 and ratings["weak"].mu > 20
    won = rate([Comparison("t", "x", "y", 1, "b")], env, agents={"t": ["x", "y", "idle"]})["t"]
    assert won["y"].mu > won["x"].mu and won["idle"].mu == env.mu
    assert score(won["y"]) == pytest.approx(won["y"].mu - 3 * won["y"].sigma)


def test_the_global_trueskill_environment_is_neither_used_nor_changed():
    trueskill.setup(mu=100.0, sigma=1.0)
    try:
        ratings = rate([Comparison("t", "x", "y", 1, "a")])["t"]
        assert 25 < ratings["x"].mu < 35
        assert trueskill.global_env().mu == 100.0
    finally:
        trueskill.setup()


def test_comparison_fields_are_checked():
    with pytest.raises(ValueError, match="field 'outcome'"):
        Comparison("t", "x", "y", 1, "left")
    with pytest.raises(ValueError, match="field 'agent_b'"):
        Comparison("t", "x", "x", 1, "a")
    with pytest.raises(ValueError, match="field 'seed'"):
        Comparison("t", "x", "y", "1", "a")


def test_pair_choice_prefers_uncertain_close_pairs_on_shared_unasked_seeds():
    env = ranking_env()
    ratings = {"sure_high": env.create_rating(40, 1), "sure_low": env.create_rating(10, 1),
               "new1": env.create_rating(), "new2": env.create_rating()}
    seeds = {"sure_high": [1, 2], "sure_low": [1, 2], "new1": [1, 2, 3], "new2": [2, 3]}
    asked = {pair_key("t", "new1", "new2", 2)}
    buffer = choose_pairs(ratings, seeds, np.random.default_rng(0), task="t", asked=asked, env=env)
    assert len(buffer) == 6
    assert {buffer[0].agent_a, buffer[0].agent_b} == {"new1", "new2"} and buffer[0].seed == 3
    assert [p.score for p in buffer] == sorted((p.score for p in buffer), reverse=True)
    for pair in buffer:
        assert pair.seed in set(seeds[pair.agent_a]) & set(seeds[pair.agent_b])
    assert len(choose_pairs(ratings, seeds, np.random.default_rng(0), top_k=2)) == 2


def test_trueskill_recovers_a_known_ranking_from_noisy_comparisons():
    rng = np.random.default_rng(0)
    judge = NoisyJudge(SKILLS, noise=1.0, model="bradley_terry", draw_margin=0.2)
    agents = sorted(SKILLS)
    comparisons = []
    for _ in range(150):
        i, j = rng.choice(5, 2, replace=False)
        comparisons.append(Comparison("t", agents[i], agents[j], int(rng.integers(10)),
                                      judge.compare(agents[i], agents[j], rng)))
    assert any(c.outcome == "draw" for c in comparisons)
    ratings = rate(comparisons)
    assert ranking_tau(ratings["t"], SKILLS) >= 0.8
    board = leaderboard(ratings, comparisons)
    assert [r.agent for r in board.tasks["t"]][:2] == ["agent4", "agent3"]
    assert sum(r.comparisons for r in board.tasks["t"]) == 300


def test_active_pair_choice_needs_fewer_comparisons_than_uniform(tmp_path):
    checkpoints = list(range(5, 201, 5))
    judge = NoisyJudge(SKILLS, noise=1.0)
    curves = ranking_curves(judge, checkpoints, seeds=(0, 1, 2))
    assert {name: taus.shape for name, taus in curves.items()} == {
        "active": (3, 40), "uniform": (3, 40)}
    active = comparisons_to_reach(checkpoints, curves["active"], 0.8)
    uniform = comparisons_to_reach(checkpoints, curves["uniform"], 0.8)
    assert active < uniform < math.inf
    png = plot_ranking_curves(checkpoints, curves, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_over_tasks_uses_mean_z_scores(tmp_path):
    env = ranking_env()
    ratings = {"t1": {"x": env.create_rating(30, 1), "y": env.create_rating(20, 1)},
               "t2": {"x": env.create_rating(10, 1), "y": env.create_rating(12, 1),
                      "z": env.create_rating(14, 1)}}
    board = leaderboard(ratings)
    assert [r.agent for r in board.tasks["t2"]] == ["z", "y", "x"]
    z_x = (np.array([1.0, -1.22474487])).mean()  # +1 on t1, z-score of 7 in (7, 9, 11) on t2
    overall = {agent: (z, n) for agent, z, n in board.overall}
    assert overall["x"][0] == pytest.approx(z_x) and overall["x"][1] == 2
    assert overall["z"] == (pytest.approx(1.22474487), 1)
    assert "| 1 | z |" in leaderboard_markdown(board)
    csv_rows = leaderboard_csv(board).splitlines()
    assert csv_rows[0].startswith("task,rank,agent,score") and len(csv_rows) == 1 + 5 + 3
    png = plot_leaderboard(board, tmp_path / "board.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
