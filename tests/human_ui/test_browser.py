"""The comparison page in real headless Chromium (Debian's /usr/bin/chromium via playwright)."""

import pytest

from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.server import create_app

READY = "document.body.dataset.ready"


def labels(dataset_dir):
    with PreferenceDataset.open(dataset_dir) as ds:
        return ds.labels()


def shown_query(page) -> str:
    return page.evaluate(READY)


def press_and_wait(page, key: str) -> str:
    """Press a key that answers the query; return the id of the next query once it is ready."""
    before = shown_query(page)
    page.keyboard.press(key)
    page.wait_for_function(f"prev => {READY} && {READY} !== prev", arg=before, timeout=10_000)
    return shown_query(page)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    context.close()
    assert errors == []


def open_app(page, url, query=""):
    page.goto(f"{url}/{query}")
    page.wait_for_selector("body[data-ready]", timeout=15_000)


VIDEO_STATE = "() => [...document.querySelectorAll('#clips video')].map(v => ({t: v.currentTime, paused: v.paused, rate: v.playbackRate}))"
NEXT_TIMEUPDATE = f"""() => new Promise(resolve => document.querySelector('#clips video')
    .addEventListener('timeupdate', () => resolve(({VIDEO_STATE})()), {{once: true}}))"""
"""The state of both videos when the left (master) clock next reports progress."""
RESYNC = """() => new Promise(resolve => {
    const [left, right] = document.querySelectorAll('#clips video');
    const jumpedAt = left.currentTime;
    right.currentTime = (right.currentTime + 1) % 2;  // a stall or jump on one side
    const gap = Math.abs(left.currentTime - right.currentTime);
    // In line and playing: a video that ran to its end and stopped there is not back in line.
    const check = () => Math.abs(left.currentTime - right.currentTime) < 0.1 && !right.seeking && !right.paused
        ? resolve({gap, jumpedAt, syncedAt: left.currentTime}) : requestAnimationFrame(check);
    requestAnimationFrame(check);
})"""
"""Jumps the right video by 1 s; resolves once it is back in line with the left one."""
BOTH_PLAYING_PAST = "t => [...document.querySelectorAll('#clips video')].every(v => !v.paused && v.currentTime > t + 0.05)"


def test_a_pair_loads_and_both_videos_play_in_sync(page, dataset_dir, serve):
    with serve(create_app(dataset_dir, UIConfig(overlap=0.0))) as server:
        open_app(page, server.url)
        assert page.locator("#clips video").count() == 2
        assert "Which robot does the task better?" in page.inner_text("#instructions")
        page.click("[data-speed='0.5']")  # a 4 s loop (2 s clips)
        # Sample well before the loop's end (a restart in between would read as a jump): 2 s of wall time left.
        page.wait_for_function("() => { const v = document.querySelector('#clips video');"
                               " return !v.paused && v.playbackRate === 0.5 && v.currentTime < 1; }", timeout=10_000)
        samples = [page.evaluate(NEXT_TIMEUPDATE) for _ in range(4)]
        for left, right in samples:
            assert not left["paused"] and not right["paused"]
            assert abs(left["t"] - right["t"]) < 0.1
        assert [left["t"] for left, _ in samples] == sorted({left["t"] for left, _ in samples})  # the clock moves
        resync = page.evaluate(RESYNC)
        assert resync["gap"] > 0.5  # out of line at first ...
        assert resync["syncedAt"] > resync["jumpedAt"]  # ... and pulled back while playing on, not by a loop restart
        page.keyboard.press(" ")
        page.wait_for_function("() => [...document.querySelectorAll('#clips video')].every(v => v.paused && !v.seeking)",
                               timeout=5_000)
        left, right = page.evaluate(VIDEO_STATE)
        assert left["paused"] and right["paused"] and abs(left["t"] - right["t"]) < 0.02
        page.evaluate("() => { const s = document.getElementById('scrubber'); s.value = '5';"
                      " s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }")
        page.wait_for_function("() => document.getElementById('frame').textContent.startsWith('6 /')"
                               " && [...document.querySelectorAll('#clips video')].every(v => !v.seeking)", timeout=5_000)
        left, right = page.evaluate(VIDEO_STATE)
        assert left["t"] == pytest.approx(0.55, abs=0.03) and right["t"] == pytest.approx(left["t"], abs=0.01)
        page.click("[data-speed='0.25']")
        page.keyboard.press(" ")
        page.wait_for_function(BOTH_PLAYING_PAST, arg=left["t"], timeout=10_000)  # both clocks run again
        left, right = page.evaluate(VIDEO_STATE)
        assert left["rate"] == right["rate"] == 0.25 and not left["paused"] and not right["paused"]


def test_keys_store_the_right_rows_and_undo_removes_the_last(page, dataset_dir, serve):
    with serve(create_app(dataset_dir, UIConfig(overlap=0.0))) as server:
        open_app(page, server.url)
        shown = []
        for key in ["ArrowLeft", "ArrowRight", "ArrowDown", "c", "s"]:
            shown.append(shown_query(page))
            press_and_wait(page, key)
            assert "saved" in page.inner_text("#toast")
        stored = labels(dataset_dir)
        assert [(x.query_id, x.outcome.value) for x in stored] == list(
            zip(shown, ["left", "right", "equal", "cannot_tell", "skip"]))
        assert all(x.annotator == "local" and x.source["elapsed_ms"] >= 0 for x in stored)
        assert press_and_wait(page, "u") == shown[-1]  # the skipped query is back
        assert "Undone" in page.inner_text("#toast")
        assert [x.outcome.value for x in labels(dataset_dir)] == ["left", "right", "equal", "cannot_tell"]
        assert page.inner_text("#progress").startswith("4 labelled")


def test_reload_resumes_where_the_annotator_stopped(page, dataset_dir, serve):
    with serve(create_app(dataset_dir, UIConfig(overlap=0.0))) as server:
        open_app(page, server.url)
        first = shown_query(page)
        current = press_and_wait(page, "ArrowLeft")
        page.reload()
        page.wait_for_selector("body[data-ready]", timeout=15_000)
        assert shown_query(page) == current != first
        assert page.inner_text("#progress").startswith("1 labelled")
        press_and_wait(page, "ArrowRight")
        assert [(x.query_id, x.outcome.value) for x in labels(dataset_dir)] == [(first, "left"), (current, "right")]


def test_triplet_mode_stores_a_ranking_with_ties(page, dataset_dir, serve):
    with serve(create_app(dataset_dir, UIConfig(mode="triplet", overlap=0.0))) as server:
        open_app(page, server.url)
        assert page.locator("#clips video").count() == 3
        first = shown_query(page)
        for key in ["2", "=", "1", "3"]:
            page.keyboard.press(key)
        assert page.inner_text("#ranking").split() == ["2", "·", "B", "=", "1", "·", "A", "≻", "3", "·", "C"]
        second = press_and_wait(page, "Enter")
        page.click("#clips .card[data-index='2']")  # mouse: click best to worst
        page.click("#clips .card[data-index='0']")
        page.click("#clips .card[data-index='1']")
        page.drag_and_drop("#ranking .slot[data-position='2']", "#ranking .slot[data-position='0']")
        assert page.inner_text("#ranking").split()[:3] == ["2", "·", "B"]
        page.click("#submit-ranking")
        page.wait_for_function(f"prev => {READY} !== prev", arg=second, timeout=10_000)
        stored = labels(dataset_dir)
        assert [(x.query_id, x.outcome.value, x.ranking, x.ties) for x in stored] == [
            (first, "ranking", (1, 0, 2), (0,)), (second, "ranking", (1, 2, 0), ())]


def test_a_second_annotator_sees_the_overlap_queries(browser, dataset_dir, serve):
    with PreferenceDataset.open(dataset_dir) as ds:
        tokens = {name: ds.add_annotator(name) for name in ("ann", "bob")}
        owner = ds.add_annotator("olga", role="owner")
    with serve(create_app(dataset_dir, UIConfig(overlap=1.0, require_token=True))) as server:
        pages = {}
        for name, token in tokens.items():
            pages[name] = browser.new_context().new_page()
        open_app(pages["ann"], server.url, f"?token={tokens['ann']}")
        answered = shown_query(pages["ann"])
        press_and_wait(pages["ann"], "ArrowLeft")
        open_app(pages["bob"], server.url, f"?token={tokens['bob']}")
        assert shown_query(pages["bob"]) == answered
        assert pages["bob"].inner_text("#annotator") == "bob"
        press_and_wait(pages["bob"], "ArrowRight")
        assert shown_query(pages["ann"]) != answered
        stored = [(x.query_id, x.annotator, x.outcome.value) for x in labels(dataset_dir)]
        assert stored == [(answered, "ann", "left"), (answered, "bob", "right")]
        assert pages["ann"].goto(f"{server.url}/agreement?token={tokens['ann']}").status == 403
        assert pages["ann"].locator("#agreement-link").is_hidden()  # annotators are not shown the link
        pages["ann"].goto(f"{server.url}/agreement?token={owner}")
        pages["ann"].wait_for_selector("#pairs tbody tr", timeout=10_000)
        assert "ann · bob" in pages["ann"].inner_text("#pairs")
        rows = pages["ann"].locator("#reliability tbody tr").all_inner_texts()
        assert [row.split()[0] for row in rows] == ["ann", "bob"] and all("%" in row for row in rows)
        for page in pages.values():
            page.context.close()
