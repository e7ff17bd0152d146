"""Campaign rules in real headless Chromium: no clip pair shown twice to one person, exactly
the overlap share shared between two people, and pages of other origins cannot change labels."""

import http.server
import threading
from collections import Counter

import pytest

from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.demo import build_demo_dataset
from human_ui.server import create_app

READY = "document.body.dataset.ready"


@pytest.fixture(scope="module")
def forty_clips(tmp_path_factory):
    """40 clips with previews and no stored queries: the queue selects every pair it asks."""
    root = tmp_path_factory.mktemp("forty") / "ds"
    build_demo_dataset(root, n_trajectories=20, clip_length=6, size=32).close()
    return root


def copy_of(template, tmp_path):
    import shutil

    target = tmp_path / "ds"
    shutil.copytree(template, target)
    return target


def label_with_keys(page, n: int) -> None:
    for i in range(n):
        before = page.evaluate(READY)
        page.keyboard.press(("ArrowLeft", "ArrowRight", "ArrowDown")[i % 3])
        page.wait_for_function(f"prev => {READY} && {READY} !== prev", arg=before, timeout=15_000)


def open_page(browser, url: str):
    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=15_000)
    return page


def clip_pairs(dataset_dir, annotator: str) -> list[frozenset]:
    with PreferenceDataset.open(dataset_dir) as ds:
        queries = {q.id: q for q in ds.queries()}
        return [frozenset(queries[x.query_id].clip_ids) for x in ds.labels() if x.annotator == annotator]


def test_300_labels_over_40_clips_never_repeat_a_clip_pair(browser, forty_clips, tmp_path, serve):
    dataset_dir = copy_of(forty_clips, tmp_path)
    with serve(create_app(dataset_dir, UIConfig(overlap=0.0, batch_size=16))) as server:
        page = open_page(browser, server.url + "/")
        label_with_keys(page, 300)
        coverage = page.inner_text("#coverage")
        page.context.close()
    pairs = clip_pairs(dataset_dir, "local")
    assert len(pairs) == 300 and len(set(pairs)) == 300
    seen = len(set().union(*pairs))
    assert coverage == f"300 distinct pairs · {seen}/40 clips seen"


def test_two_people_share_exactly_the_overlap_share(browser, forty_clips, tmp_path, serve):
    dataset_dir = copy_of(forty_clips, tmp_path)
    with PreferenceDataset.open(dataset_dir) as ds:
        tokens = {name: ds.add_annotator(name) for name in ("ann", "bob")}
    app = create_app(dataset_dir, UIConfig(overlap=0.1, batch_size=16, require_token=True))
    with serve(app) as server:
        ann = open_page(browser, f"{server.url}/?token={tokens['ann']}")
        label_with_keys(ann, 60)
        bob = open_page(browser, f"{server.url}/?token={tokens['bob']}")
        label_with_keys(bob, 60)
        # ann answers the query her page still holds, then the overlap queries of bob's turn,
        # waiting for their second answer: they come first in her line
        with PreferenceDataset.open(dataset_dir) as ds:
            order = [q.id for q in ds.queries()]
            waiting = sum((order.index(x.query_id) + 1) % 10 == 0 for x in ds.labels()
                          if x.annotator == "bob" and x.query_id not in {
                              y.query_id for y in ds.labels() if y.annotator == "ann"})
        ann.reload()
        ann.wait_for_selector("body[data-ready]", timeout=15_000)
        label_with_keys(ann, 1 + waiting)
        for page in (ann, bob):
            page.context.close()
    with PreferenceDataset.open(dataset_dir) as ds:
        stored = ds.labels()
        queries = {q.id: q for q in ds.queries()}
    answers = Counter(label.query_id for label in stored)
    shared = [query_id for query_id, n in answers.items() if n == 2]
    assert max(answers.values()) == 2 and waiting > 0
    assert len(shared) == int(0.1 * len(answers)) and len(answers) >= 110  # exactly the share
    for name in ("ann", "bob"):
        pairs = clip_pairs(dataset_dir, name)
        assert len(pairs) == len(set(pairs))  # nobody saw the same two clips twice
    order = list(queries)
    assert all((order.index(q) + 1) % 10 == 0 for q in shared)  # the 10th, 20th, ... query


ATTACK = """async ([target, labelId]) => {
  const attempts = {
    undo_no_cors: () => fetch(target + '/api/undo', {method: 'POST', mode: 'no-cors',
        body: JSON.stringify({label_id: labelId})}),
    undo_json: () => fetch(target + '/api/undo', {method: 'POST', credentials: 'include',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({label_id: labelId})}),
    undo_forged_token: () => {
        document.cookie = 'ep_csrf_' + new URL(target).port + '=forged; path=/';
        return fetch(target + '/api/undo', {method: 'POST', credentials: 'include',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'},
            body: JSON.stringify({label_id: labelId})});
    },
    label_no_cors: () => fetch(target + '/api/label', {method: 'POST', mode: 'no-cors',
        body: JSON.stringify({query_id: 'x', outcome: 'left'})}),
    next_no_cors: () => fetch(target + '/api/next', {mode: 'no-cors', credentials: 'include'}),
    session_then_label: async () => {
        await fetch(target + '/api/session', {mode: 'no-cors', credentials: 'include'});
        return fetch(target + '/api/label', {method: 'POST', mode: 'no-cors', credentials: 'include',
            body: JSON.stringify({query_id: 'x', outcome: 'left'})});
    },
  };
  const results = {};
  for (const [name, attempt] of Object.entries(attempts)) {
    try { const r = await attempt(); results[name] = r.type + ':' + r.status; }
    catch (err) { results[name] = 'blocked'; }
  }
  const form = document.createElement('form');  // a classic cross-site form post
  form.method = 'POST'; form.action = target + '/api/undo'; form.enctype = 'text/plain';
  const field = document.createElement('input');
  field.name = '{"label_id":"' + labelId + '","x":"'; field.value = '"}';
  form.appendChild(field); document.body.appendChild(form);
  const frame = document.createElement('iframe'); frame.name = 'sink'; document.body.appendChild(frame);
  form.target = 'sink'; form.submit();
  await new Promise(r => setTimeout(r, 1500));
  return results;
}"""


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>another local app</title><p>hello</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_page_of_another_local_origin_cannot_change_labels(browser, dataset_dir, serve):
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        # Leases of 1 s: by the time of the attack the person's page holds none, so a forged
        # /api/next would hand out (store) a lease.
        with serve(create_app(dataset_dir, UIConfig(overlap=0.0, lease_s=1.0))) as server:
            page = open_page(browser, server.url + "/")
            label_with_keys(page, 2)  # the person's own labels, in the same browser
            page.wait_for_timeout(1500)
            with PreferenceDataset.open(dataset_dir) as ds:
                before = [(x.id, x.query_id, x.outcome.value) for x in ds.labels()]
                leases_before = ds.leases()
            evil = page.context.new_page()
            evil.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
            results = evil.evaluate(ATTACK, [server.url, before[-1][0]])
            with PreferenceDataset.open(dataset_dir) as ds:
                after = [(x.id, x.query_id, x.outcome.value) for x in ds.labels()]
                assert ds.leases() == leases_before  # not even a query was handed out
            assert after == before, results
            assert results["undo_json"] == "blocked" and results["undo_forged_token"] == "blocked"
            label_with_keys(page, 1)  # the person's page still works
            page.context.close()
    finally:
        attacker.shutdown()
    assert len(after) == 2
