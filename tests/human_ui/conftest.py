"""Small datasets with real H.264 previews, servers on free loopback ports, a browser."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

import pytest

from fastapi.testclient import TestClient

from embodied_pref.store import PreferenceDataset
from human_ui.csrf import CSRF_HEADER
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


@pytest.fixture
def dataset_target(backend, dataset_dir, dataset_url) -> str:
    """A copy of the template dataset on ``backend``: its directory, or its rows copied into a
    fresh PostgreSQL database whose files are the copied directory's."""
    if backend == "sqlite":
        return str(dataset_dir)
    with PreferenceDataset.open(dataset_dir) as source, PreferenceDataset.create(
            dataset_url, description=source.description) as target:
        assert target.path == dataset_dir
        for trajectory_id in source.trajectory_ids():
            target.add_trajectory(source.trajectory(trajectory_id))
        target.add_clips(source.clips())
        target.add_queries(source.queries())
    return dataset_url


def skip_or_fail(message: str) -> None:
    """Skip locally; fail in CI (`CI` set), which installs playwright and chromium, so that a
    broken set-up there cannot pass as a run of skipped browser tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the browser tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright import sync_api as playwright_api
    except ImportError as err:
        skip_or_fail(f"playwright missing ({err}); `pip install -e .[test]` installs it")
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"{CHROMIUM} missing (`make browser` installs Debian's chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking",
                                          "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def nginx() -> str:
    """Debian's nginx (`make proxy` installs it)."""
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        skip_or_fail(f"{path} missing (`make proxy` installs Debian's nginx)")
    return path


@pytest.fixture
def serve():
    """``with serve(app) as server:`` runs ``app`` on 127.0.0.1 (a free port) at ``server.url``."""
    return BackgroundServer


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def open_session(app, base_url: str = "http://127.0.0.1", token: str | None = None):
    """A TestClient that opened a session like the page does: it holds the CSRF cookie and
    sends the token back in the header (and the annotator token, if given)."""
    with TestClient(app, base_url=base_url,
                    headers={"X-Annotator-Token": token} if token else {}) as client:
        client.headers[CSRF_HEADER] = client.get("/api/session").json()["csrf_token"]
        yield client


@pytest.fixture
def session_client():
    """``with session_client(app, base_url, token) as client:`` (see ``open_session``)."""
    return open_session
