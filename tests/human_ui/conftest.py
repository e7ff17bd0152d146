"""Small datasets with real H.264 previews, servers on free loopback ports, a browser."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from human_ui.demo import build_demo_dataset
from human_ui.server import BackgroundServer

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


@pytest.fixture(scope="session")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} missing (`make browser` installs Debian's chromium)"
        if os.environ.get("CI"):  # CI installs it: a missing browser is a broken set-up there
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking",
                                          "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture
def serve():
    """``with serve(app) as server:`` runs ``app`` on 127.0.0.1 (a free port) at ``server.url``."""
    return BackgroundServer


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
