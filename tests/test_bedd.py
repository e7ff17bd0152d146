import json

import pytest

from embodied_pref.agent_ranking import Comparison
from embodied_pref.data.bedd import BEDDError, read_banned_workers, read_bedd, write_bedd

COMPARISONS = [
    Comparison("FindCave", "BC-Baseline", "Human1", 14169, "b", "W1"),
    Comparison("FindCave", "Random", "BC-Baseline", 65101, "draw", "W2"),
    Comparison("MakeWaterfall", "Human1", "Random", 95674, "a", "W3"),
]


def test_a_written_file_round_trips_in_the_published_layout(tmp_path):
    answers = write_bedd(COMPARISONS, tmp_path / "updated_human_answers.json",
                         banned_workers=["W9"], banned=tmp_path / "banned_workers.json")
    records = json.loads(answers.read_text())
    assert records[0] == {  # newest first, as published
        "task": "MakeWaterfall",
        "episodes": [{"agent_name": "Human1", "seed": 95674},
                     {"agent_name": "Random", "seed": 95674}],
        "result": {"is_draw": False, "eval_metadata": {"win_player": "p1"}},
        "worker_id": "W3",
    }
    assert records[1]["result"]["is_draw"] is True
    assert read_bedd(answers, tmp_path / "banned_workers.json") == COMPARISONS
    assert read_banned_workers(tmp_path / "banned_workers.json") == {"W9"}


def test_banned_workers_answers_are_dropped(tmp_path):
    answers = write_bedd(COMPARISONS, tmp_path / "answers.json")
    banned = tmp_path / "banned.json"
    banned.write_text(json.dumps([{"workerId": "W1"}, "W3"]))  # both spellings
    assert read_bedd(answers, banned) == [COMPARISONS[1]]


def test_string_seeds_and_extra_fields_are_accepted(tmp_path):
    record = {"task": "FindCave", "episodes": [{"agent_name": "a", "seed": "7", "hash": "h"},
                                               {"agent_name": "b", "seed": "7"}],
              "result": {"is_draw": False, "eval_metadata": {"win_player": "p2", "q": 1}},
              "worker_id": "W"}
    path = tmp_path / "answers.json"
    path.write_text(json.dumps([record]))
    assert read_bedd(path) == [Comparison("FindCave", "a", "b", 7, "b", "W")]


@pytest.mark.parametrize("change, field", [
    (lambda r: r.pop("task"), "field 'task': missing"),
    (lambda r: r["episodes"].pop(), "field 'episodes'"),
    (lambda r: r["episodes"][1].update(seed=8), "field 'episodes.1.seed'"),
    (lambda r: r["episodes"][0].update(agent_name=3), "field 'episodes.0.agent_name'"),
    (lambda r: r["result"]["eval_metadata"].update(win_player="p3"),
     "field 'result.eval_metadata.win_player'"),
    (lambda r: r["result"].update(is_draw="no"), "field 'result.is_draw'"),
    (lambda r: r.update(worker_id=None), "field 'worker_id'"),
])
def test_malformed_records_are_named_by_file_index_and_field(tmp_path, change, field):
    path = write_bedd(COMPARISONS, tmp_path / "answers.json")
    records = json.loads(path.read_text())
    change(records[2])
    path.write_text(json.dumps(records))
    with pytest.raises(BEDDError) as info:
        read_bedd(path)
    message = str(info.value)
    assert message.startswith(f"{path}: record 2: ") and field in message


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(BEDDError, match="no such file"):
        read_bedd(tmp_path / "missing.json")
    bad = tmp_path / "answers.json"
    bad.write_text("{not json")
    with pytest.raises(BEDDError, match="not a readable JSON"):
        read_bedd(bad)
    bad.write_text("{}")
    with pytest.raises(BEDDError, match="expected a JSON list"):
        read_bedd(bad)
    banned = tmp_path / "banned.json"
    banned.write_text(json.dumps([{"worker": "x"}]))
    with pytest.raises(BEDDError, match=r"record 0: field 'workerId'"):
        read_banned_workers(banned)
