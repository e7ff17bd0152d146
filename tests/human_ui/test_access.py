"""Who may do what: roles, revoked tokens, leases, the CSRF guard and undo by label id."""

import pytest
from fastapi.testclient import TestClient

from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.queue import LabelQueue, QueueError
from human_ui.server import create_app

EXPOSED = "http://labels.example.org"


@pytest.fixture
def people(dataset_dir):
    with PreferenceDataset.open(dataset_dir) as ds:
        return {"ann": ds.add_annotator("ann"), "bob": ds.add_annotator("bob"),
                "olga": ds.add_annotator("olga", role="owner")}


def test_annotators_get_403_on_owner_routes_and_on_other_peoples_labels(dataset_dir, people, session_client):
    app = create_app(dataset_dir, UIConfig(host="0.0.0.0", overlap=0.0))
    ann, bob, olga = ({"X-Annotator-Token": people[name]} for name in ("ann", "bob", "olga"))
    with session_client(app, EXPOSED, people["ann"]) as client:
        query = client.get("/api/next", headers=ann).json()["query"]
        ack = client.post("/api/label", headers=ann, json={"query_id": query["id"], "outcome": "left"}).json()
        for url in ("/api/export", "/api/export?format=csv", "/api/agreement", "/api/openapi.json", "/agreement"):
            response = client.get(url, headers=ann)
            assert response.status_code == 403 and "owner" in response.json()["detail"], url
        response = client.post("/api/undo", headers=bob, json={"label_id": ack["label_id"]})
        assert response.status_code == 403 and "not 'bob'" in response.json()["detail"]
        response = client.post("/api/label", headers=bob, json={"query_id": query["id"], "outcome": "right"})
        assert response.status_code == 403 and "was not handed to 'bob'" in response.json()["detail"]
        assert client.get("/api/next", headers=bob).json()["query"]["id"] != query["id"]
        assert client.get("/api/session", headers=bob).json()["last_label"] is None  # only their own
        assert client.get("/api/session", headers=ann).json()["last_label"]["label_id"] == ack["label_id"]
        assert [row["annotator"] for row in client.get("/api/export", headers=olga).json()] == ["ann"]
        assert client.get("/api/agreement", headers=olga).status_code == 200
        schema = client.get("/api/openapi.json", headers=olga).json()
        assert set(schema["paths"]) >= {"/api/label", "/api/undo", "/api/next", "/api/session"}
    with PreferenceDataset.open(dataset_dir) as ds:
        assert [(x.annotator, x.outcome.value) for x in ds.labels()] == [("ann", "left")]


def test_a_revoked_token_is_refused_and_its_labels_stay(dataset_dir, people, session_client):
    app = create_app(dataset_dir, UIConfig(host="0.0.0.0", overlap=0.0))
    with session_client(app, EXPOSED, people["ann"]) as ann:
        query = ann.get("/api/next").json()["query"]
        assert ann.post("/api/label", json={"query_id": query["id"], "outcome": "left"}).status_code == 200
        with PreferenceDataset.open(dataset_dir) as ds:
            ds.revoke_annotator("ann")
        response = ann.get("/api/next")
        assert response.status_code == 401 and "revoked" in response.json()["detail"]
    with PreferenceDataset.open(dataset_dir) as ds:
        assert [x.annotator for x in ds.labels()] == ["ann"] and ds.annotators() == ["bob", "olga"]
        assert [r["revoked_at"] is not None for r in ds.annotator_records()] == [True, False, False]


def test_state_changing_requests_need_the_session_csrf_token_and_this_origin(dataset_dir, session_client):
    app = create_app(dataset_dir, UIConfig(overlap=0.0))
    with session_client(app) as client:
        query = client.get("/api/next").json()["query"]
        body = {"query_id": query["id"], "outcome": "left"}
        token = client.headers["X-CSRF-Token"]
        refusals = [
            ({"X-CSRF-Token": ""}, "missing"),
            ({"X-CSRF-Token": token[:-1] + ("0" if token[-1] != "0" else "1")}, "does not match"),
            ({"Origin": "http://127.0.0.1:9999"}, "header 'Origin'"),
            ({"Origin": "null"}, "header 'Origin'"),
            ({"Sec-Fetch-Site": "same-site"}, "header 'Sec-Fetch-Site'"),
            ({"Sec-Fetch-Site": "cross-site"}, "header 'Sec-Fetch-Site'"),
        ]
        for headers, why in refusals:
            for method, url, payload in (("post", "/api/label", body), ("get", "/api/next", None),
                                         ("post", "/api/undo", {"label_id": "abc"})):
                kwargs = {"json": payload} if payload is not None else {}
                response = getattr(client, method)(url, headers=headers, **kwargs)
                assert response.status_code == 403 and why in response.json()["detail"], (headers, url)
        # a cookie and header that match but were not signed by this server
        client.cookies.clear()
        client.cookies.set("ep_csrf_http", "forged.0000")
        response = client.post("/api/label", json=body, headers={"X-CSRF-Token": "forged.0000"})
        assert response.status_code == 403 and "not a token of this server" in response.json()["detail"]
        client.cookies.clear()
        client.cookies.set("ep_csrf_http", token)
        same_origin = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
        ack = client.post("/api/label", json=body, headers=same_origin)
        assert ack.status_code == 200
        assert client.post("/api/undo", json={}).status_code == 422  # undo names its label
        undone = client.post("/api/undo", json={"label_id": ack.json()["label_id"]}).json()
        assert undone["undone"] == ack.json()["label_id"] and undone["query"]["id"] == query["id"]
    with TestClient(app, base_url="http://127.0.0.1") as stranger:  # no session at all
        response = stranger.post("/api/label", json=body)
        assert response.status_code == 403 and "X-CSRF-Token" in response.json()["detail"]
    with PreferenceDataset.open(dataset_dir) as ds:
        assert ds.labels() == []


def test_tokens_outlive_a_restart_of_the_server(dataset_dir, session_client):
    with session_client(create_app(dataset_dir, UIConfig(overlap=0.0))) as before:
        query = before.get("/api/next").json()["query"]
        headers, cookies = dict(before.headers), dict(before.cookies)
    with TestClient(create_app(dataset_dir, UIConfig(overlap=0.0)), base_url="http://127.0.0.1",
                    headers=headers, cookies=cookies) as after:  # a page open across the restart
        assert after.post("/api/label", json={"query_id": query["id"], "outcome": "left"}).status_code == 200


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_leases_expire_and_a_label_needs_one(dataset_dir):
    clock = Clock()
    with PreferenceDataset.open(dataset_dir) as ds:
        queue = LabelQueue(ds, UIConfig(overlap=0.0, lease_s=60), clock=clock)
        held = queue.next_query("ann")
        assert queue.next_query("bob").id != held.id  # leased to ann alone
        clock.now += 61  # ann's lease ran out ...
        taken = queue.next_query("carl")
        assert taken.id == held.id  # ... so the query goes to the next person
        with pytest.raises(QueueError) as err:
            queue.add_label("ann", held.id, "left")
        assert err.value.status == 409 and "expired" in str(err.value)
        with pytest.raises(QueueError) as err:
            queue.add_label("dave", held.id, "left")
        assert err.value.status == 403
        queue.add_label("carl", held.id, "left")
        late = queue.next_query("ann")  # an expired lease nobody took still counts
        clock.now += 600
        queue.add_label("ann", late.id, "right")
        assert [(x.annotator, x.query_id) for x in ds.labels()] == [("carl", held.id), ("ann", late.id)]
        restarted = LabelQueue(ds, UIConfig(overlap=0.0, lease_s=60), clock=clock)
        mine = restarted.next_query("bob")  # leases are stored: bob's survives the restart
        assert mine.id == queue.next_query("bob").id


def test_one_person_never_sees_the_same_clips_twice_even_in_another_query(dataset_dir):
    from embodied_pref.data import Query

    with PreferenceDataset.open(dataset_dir) as ds:
        queue = LabelQueue(ds, UIConfig(overlap=0.0, batch_size=4))
        first = queue.next_query("ann")
        queue.add_label("ann", first.id, "left")
        twin = Query(tuple(reversed(first.clip_ids)))  # the same clips, stored by someone else
        ds.add_queries([twin])
        queue.refresh()
        shown = []
        while (query := queue.next_query("ann")) is not None and len(shown) < 30:
            shown.append(query.id)
            queue.add_label("ann", query.id, "left")
        assert twin.id not in shown and len(shown) == 27  # each other pair of the 8 clips, once
        assert queue.next_query("bob").id == twin.id  # another person may see those clips
        sets = [frozenset(queue.query(q).clip_ids) for q in [first.id, *shown]]
        assert len(sets) == len(set(sets))


def test_a_public_url_demands_tokens_and_is_an_accepted_origin(dataset_dir, people, session_client):
    config = UIConfig(overlap=0.0, public_url="https://labels.example.org")
    assert config.tokens_required  # behind a proxy on 127.0.0.1, requests are not local
    app = create_app(dataset_dir, config)
    with session_client(app, "http://127.0.0.1:8765", people["ann"]) as client:
        assert TestClient(app, base_url="http://127.0.0.1:8765").get("/api/next").status_code == 401
        query = client.get("/api/next").json()["query"]
        body = {"query_id": query["id"], "outcome": "left"}
        evil = client.post("/api/label", json=body, headers={"Origin": "https://evil.example.org"})
        assert evil.status_code == 403 and "header 'Origin'" in evil.json()["detail"]
        good = client.post("/api/label", json=body, headers={"Origin": "https://labels.example.org"})
        assert good.status_code == 200
