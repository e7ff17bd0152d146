import csv
import io
import json

import pytest
from fastapi.testclient import TestClient

from embodied_pref.store import PreferenceDataset
from human_ui.annotators import add_annotator
from human_ui.config import UIConfig
from human_ui.server import create_app

LOCAL = "http://127.0.0.1"


def rows(dataset_dir):
    with PreferenceDataset.open(dataset_dir) as ds:
        return ds.labels()


@pytest.fixture
def local(dataset_dir, session_client):
    with session_client(create_app(dataset_dir, UIConfig(overlap=0.0)), LOCAL) as client:
        yield client


def test_bad_inputs_are_refused_with_the_field_named_and_nothing_stored(local, dataset_dir):
    query_id = local.get("/api/next").json()["query"]["id"]
    cases = [
        ({"query_id": "nosuchquery", "outcome": "left"}, 404, "field 'query_id'"),
        ({"query_id": "../../etc", "outcome": "left"}, 422, "field 'query_id'"),
        ({"query_id": query_id, "outcome": "best"}, 422, "field 'outcome'"),
        ({"query_id": query_id, "outcome": "ranking", "ranking": [1, 0, 2]}, 422, "field 'outcome'"),
        ({"query_id": query_id, "outcome": "ranking", "ranking": [1, 0]}, 422, "field 'ranking'"),
        ({"query_id": query_id, "outcome": "ranking", "ranking": [1, 0, 3]}, 422, "field 'ranking.2'"),
        ({"query_id": query_id, "outcome": "left", "ranking": [0, 1]}, 422, "field 'ranking'"),
        ({"query_id": query_id, "outcome": "left", "ties": [0]}, 422, "field 'ties'"),
        ({"query_id": query_id, "outcome": "left", "extra": 1}, 422, "field 'extra'"),
        ({"query_id": query_id, "outcome": "left", "elapsed_ms": -1}, 422, "field 'elapsed_ms'"),
        ({"query_id": query_id, "outcome": "left", "label_id": "a/b"}, 422, "field 'label_id'"),
        ({"query_id": 5, "outcome": "left"}, 422, "field 'query_id'"),
    ]
    for body, status, field in cases:
        response = local.post("/api/label", json=body)
        assert response.status_code == status, body
        assert field in response.json()["detail"], (body, response.json())
    response = local.post("/api/label", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    response = local.post("/api/label", content=json.dumps({"query_id": query_id, "outcome": "left"}),
                          headers={"Content-Type": "text/plain"})  # a cross-site form cannot post JSON
    assert response.status_code == 422
    assert rows(dataset_dir) == []


def test_oversized_bodies_are_refused(local, dataset_dir):
    query_id = local.get("/api/next").json()["query"]["id"]
    big = {"query_id": query_id, "outcome": "left", "pad": "x" * 10_000}
    response = local.post("/api/label", json=big)
    assert response.status_code == 413 and "4096 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while streaming
        yield json.dumps({"query_id": query_id, "outcome": "left"})[:-1].encode()
        yield b', "pad": "' + b"x" * 8000 + b'"}'

    response = local.post("/api/label", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert rows(dataset_dir) == []


def test_only_preview_files_are_served(local, dataset_dir):
    clip = local.get("/api/next").json()["query"]["clips"][0]
    video = local.get(clip["url"], headers={"Range": "bytes=0-99"})
    assert video.status_code == 206 and len(video.content) == 100
    assert video.headers["content-type"] == "video/mp4"
    (dataset_dir / "secret.mp4").write_bytes(b"secret")
    (dataset_dir / "previews" / "link.mp4").symlink_to(dataset_dir / "secret.mp4")
    for url in ["/clips/..%2Fdataset.sqlite", "/clips/../dataset.sqlite", "/clips/%2e%2e%2fsecret.mp4",
                "/clips/..%2Fsecret.mp4", "/clips/link.mp4", "/clips/nosuchclip.mp4",
                f"/clips/{clip['id']}.sqlite", "/clips/....mp4", "/static/..%2Fserver.py",
                "/static/index.html"]:
        response = local.get(url)
        assert response.status_code in (400, 404), url
        assert b"secret" not in response.content and b"SQLite" not in response.content


def test_tokens_are_required_when_exposed(dataset_dir, capsys, session_client):
    token = add_annotator(dataset_dir, "ann", UIConfig(host="0.0.0.0", port=9000,
                                                       public_url="https://labels.example.org"))
    assert f"https://labels.example.org/?token={token}" in capsys.readouterr().out
    config = UIConfig(host="0.0.0.0", overlap=0.0)
    assert config.tokens_required
    with TestClient(create_app(dataset_dir, config), base_url="http://labels.example.org") as client:
        for headers in ({}, {"X-Annotator-Token": "wrong"}, {"X-Annotator-Token": "x" * 500},
                        {"Authorization": "Bearer wrong"}):
            for method, url in [("get", "/api/next"), ("get", "/api/session"), ("post", "/api/undo"),
                                ("get", "/api/export"), ("get", "/api/agreement"),
                                ("get", "/api/openapi.json"), ("get", "/agreement")]:
                response = getattr(client, method)(url, headers=headers)
                assert response.status_code == 401 and "field 'token'" in response.json()["detail"]
    with session_client(create_app(dataset_dir, config), "http://labels.example.org", token) as client:
        query = client.get("/api/next").json()["query"]
        assert client.get(query["clips"][0]["url"]).status_code == 200  # the URL carries the token
        del client.headers["X-Annotator-Token"]
        assert client.get(query["clips"][0]["url"].split("?")[0]).status_code == 401
        response = client.post("/api/label", json={"query_id": query["id"], "outcome": "left"})
        assert response.status_code == 401
        response = client.post("/api/label", json={"query_id": query["id"], "outcome": "left"},
                               headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
    assert [(label.annotator, label.source["kind"]) for label in rows(dataset_dir)] == [("ann", "human")]


def test_a_local_server_refuses_foreign_host_names(dataset_dir):
    with TestClient(create_app(dataset_dir), base_url="http://attacker.example") as client:
        assert client.get("/api/session").status_code == 400
    with TestClient(create_app(dataset_dir), base_url="http://localhost:8765") as client:
        session = client.get("/api/session").json()
        assert session["annotator"] == "local" and "<h2>" in session["instructions_html"]
        assert client.get("/").headers["content-security-policy"].startswith("default-src 'self'")


def test_export_csv_and_json(local):
    query = local.get("/api/next").json()["query"]
    local.post("/api/label", json={"query_id": query["id"], "outcome": "right", "elapsed_ms": 1234.5})
    exported = local.get("/api/export?format=json").json()
    assert len(exported) == 1 and exported[0]["outcome"] == "right"
    assert exported[0]["clip_ids"] == [c["id"] for c in query["clips"]]
    assert exported[0]["source"]["elapsed_ms"] == 1234.5
    table = list(csv.DictReader(io.StringIO(local.get("/api/export?format=csv").text)))
    assert table[0]["label_id"] == exported[0]["label_id"] and table[0]["annotator"] == "local"
    assert local.get("/api/export?format=xml").status_code == 422


def test_a_label_waiting_on_a_slow_selection_does_not_stall_the_server(dataset_dir):
    import threading

    import httpx

    from human_ui.client import open_client
    from human_ui.server import BackgroundServer

    app = create_app(dataset_dir, UIConfig(overlap=0.0))
    queue = app.state.queue
    query_id = queue.next_query("local").id
    selecting, release, label_arrived = threading.Event(), threading.Event(), threading.Event()
    real_next, real_add = queue.next_query, queue.add_label

    def slow_next(annotator):  # a selection that holds the queue's lock for a long time
        with queue._lock:
            selecting.set()
            release.wait(timeout=60)
            return real_next(annotator)

    def add_label(*args, **kwargs):
        label_arrived.set()
        return real_add(*args, **kwargs)  # waits for the lock

    queue.next_query, queue.add_label = slow_next, add_label
    with BackgroundServer(app) as server, open_client(server.url, timeout=60) as http:
        results = {}
        selection = threading.Thread(target=lambda: results.update(next=http.get("/api/next")))
        labelling = threading.Thread(target=lambda: results.update(label=http.post(
            "/api/label", json={"query_id": query_id, "outcome": "left"})))
        selection.start()
        assert selecting.wait(timeout=30)
        labelling.start()
        assert label_arrived.wait(timeout=30)
        try:  # the event loop still serves other requests meanwhile
            assert httpx.get(f"{server.url}/static/app.js", timeout=10).status_code == 200
        finally:
            release.set()
            selection.join(timeout=60)
            labelling.join(timeout=60)
    assert results["label"].status_code == 200 and results["next"].status_code == 200
    assert [label.query_id for label in rows(dataset_dir)] == [query_id]
