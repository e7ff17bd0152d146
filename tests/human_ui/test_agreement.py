import math

import pytest

from embodied_pref.data import Label
from human_ui.agreement import (
    agreement_report,
    answer_category,
    cohen_kappa,
    fleiss_kappa,
    model_agreement,
    percent_agreement,
)
from human_ui.instructions import render_markdown


def test_cohen_kappa_matches_hand_computed_table():
    # 2x2 table: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))  # chance agreement 1: undefined
    with pytest.raises(ValueError, match="second"):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_kappa_matches_hand_computed_values():
    # Fleiss (1971)-style table: 10 items, 14 raters, 5 categories; kappa = 0.2099
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[str(c) for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-4)
    # two raters: P = (1 + 0 + 1 + 1) / 4, p_a = 5/8, p_b = 3/8 -> (0.75 - 34/64) / (1 - 34/64)
    two = [["a", "a"], ["a", "b"], ["b", "b"], ["a", "a"]]
    assert fleiss_kappa(two) == pytest.approx((0.75 - 34 / 64) / (1 - 34 / 64))
    assert math.isnan(fleiss_kappa([["a"]]))


def test_percent_agreement_and_report_on_labels():
    assert percent_agreement([["a", "a"], ["a", "b"], ["a", "a", "b"]]) == pytest.approx((1 + 0 + 1 / 3) / 3)
    labels = [
        Label("q1", "left", annotator="ann"), Label("q1", "left", annotator="bob"),
        Label("q2", "right", annotator="ann"), Label("q2", "equal", annotator="bob"),
        Label("q3", "left", annotator="ann"),  # one annotator only: no overlap
        Label("q4", "skip", annotator="ann"), Label("q4", "left", annotator="bob"),  # skip: no answer
    ]
    report = agreement_report(labels)
    assert report["overlapping_queries"] == 2
    assert report["percent_agreement"] == pytest.approx(0.5)
    (pair,) = report["pairs"]
    assert pair["annotators"] == ["ann", "bob"] and pair["n"] == 2
    # ann: left, right; bob: left, equal -> p_o 0.5, p_e 0.25 -> kappa 1/3
    assert pair["cohen_kappa"] == pytest.approx(1 / 3, abs=1e-6)


def test_ranking_category_and_model_agreement():
    tied = Label("q", "ranking", ranking=(2, 0, 1), ties=(0,))
    assert answer_category(tied) == "2=0>1"
    assert answer_category(Label("q", "ranking", ranking=(1, 2, 0))) == "1>2>0"
    assert answer_category(Label("q", "skip")) is None
    labels = [Label("a", "left", annotator="x"), Label("b", "right", annotator="x"),
              Label("c", "equal", annotator="x"), Label("a", "right", annotator="y")]
    result = model_agreement(labels, {"a": 0.9, "b": 0.8, "c": 0.5})
    assert result["x"] == {"n": 2, "agree": 1, "agreement": 0.5}
    assert result["y"]["agreement"] == 0.0


def test_instructions_markdown_is_escaped():
    html = render_markdown("# Title\n\nPick **this** <script>alert(1)</script>\n\n- [ok](https://x.org/a)\n"
                           "- [bad](javascript:alert(1))\n1. one\n")
    assert "<h2>Title</h2>" in html and "<strong>this</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<a href="https://x.org/a"' in html and 'href="javascript' not in html
    assert "<ul>" in html and "<ol>\n<li>one</li>\n</ol>" in html
