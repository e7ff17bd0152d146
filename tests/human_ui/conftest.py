"""Small datasets with real H.264 previews, servers on free loopback ports, a browser."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from human_ui.demo import build_demo_dataset

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def template_dataset(tmp_path_factory) -> Path:
    """Built once per session (encoding previews takes a while); copy it before use."""
    root = tmp_path_factory.mktemp("template") / "ds"
    build_demo_dataset(root, queries=6, triplets=3).close()
    return root


@pytest.fixture
def dataset_dir(template_dataset, tmp_path) -> Path:
    target = tmp_path / "ds"
    shutil.copytree(template_dataset, target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """A uvicorn server for an app, on a thread, bound to 127.0.0.1 on a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking",
                                          "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()
