"""What a person starting the app for the first time meets: a server that says where queries
come from, a page that says why there is nothing to label, and a quiet Ctrl+C."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from embodied_pref.data import Clip
from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.demo import make_trajectory
from human_ui.server import create_app

REPO = Path(__file__).resolve().parents[2]


def dataset_without_previews(root: Path) -> Path:
    with PreferenceDataset.create(root) as store:
        trajectory = make_trajectory(0, steps=12, size=32)
        store.add_trajectory(trajectory)
        store.add_clips([Clip(trajectory.id, 0, 8), Clip(trajectory.id, 4, 8)])
    return root


def test_ctrl_c_stops_the_server_quietly_and_says_what_is_stored(tmp_path, free_port):
    dataset = dataset_without_previews(tmp_path / "ds")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "embodied-pref"), "label", "--dataset", str(dataset), "--ui",
         "--server.port", str(free_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        assert f"http://127.0.0.1:{free_port}/" in lines[0], lines
        assert "the server selects new pairs" in lines[1]
        assert "none of the 2 clips has a preview" in lines[2] and "make-previews" in lines[2]
        deadline = time.monotonic() + 30
        while True:  # stop a server that is up and serving
            try:
                assert httpx.get(f"http://127.0.0.1:{free_port}/api/session", timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert f"Stopped; 0 labels are stored in {dataset}" in rest


def test_the_page_says_why_there_is_nothing_to_label(browser, tmp_path, serve):
    dataset = dataset_without_previews(tmp_path / "ds")
    with serve(create_app(dataset, UIConfig())) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#empty:not([hidden]) h2:text('These clips have no videos yet')", timeout=15_000)
        assert "make-previews" in page.inner_text("#empty")
        assert "All done" not in page.inner_text("body")
        page.close()
