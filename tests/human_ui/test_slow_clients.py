"""Slow, half-open and greedy clients cannot starve a real annotator (loopback, raw sockets)."""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from embodied_pref.data import new_id
from embodied_pref.store import PreferenceDataset
from human_ui.client import open_client
from human_ui.config import UIConfig
from human_ui.connections import (ClientConnections, ConnectionLimits,
                                  uvicorn_config)
from human_ui.demo import build_demo_dataset
from human_ui.server import bind_socket, create_app

HOST = "127.0.0.1"
PARTIAL_REQUEST = b"GET /api/next HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"
WATCHED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "asyncio")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Served:
    url: str
    port: int
    registry: ClientConnections
    statuses: list[int]
    """Status of every response the app sent, a disconnected client's included."""


def labeling_app(dataset_dir: Path, limits: ConnectionLimits):
    return create_app(dataset_dir, UIConfig(overlap=0.0, limits=limits))


@contextlib.contextmanager
def running(app, limits: ConnectionLimits, **kwargs):
    """Serves ``app`` with ``limits`` on a thread; fails if anything is logged as an error."""
    statuses: list[int] = []

    async def recording(scope, receive, send):
        async def record(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        await app(scope, receive, record)

    sock = bind_socket(HOST, 0)
    config = uvicorn_config(recording, limits, log_level="warning", **kwargs)
    server = uvicorn.Server(config)
    errors = _Records()
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(errors)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive())
        assert server.started, "the server did not start"
        port = sock.getsockname()[1]
        yield Served(f"http://{HOST}:{port}", port, config.http.registry, statuses)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(errors)
    assert not errors.records, [errors.format(r) for r in errors.records]


def wait_until(condition, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def half_open(port: int) -> socket.socket:
    """A connection that sends part of a request line and headers, then nothing."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(PARTIAL_REQUEST)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (which it has sent nothing on); does not block."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def get(sock: socket.socket, path: str = "/api/session") -> int:
    """A keep-alive GET on ``sock``; its status."""
    port = sock.getpeername()[1]
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    return read_response(sock)[0]


def labels(dataset_dir: Path) -> list[str]:
    with PreferenceDataset.open(dataset_dir) as ds:
        return sorted(label.id for label in ds.labels())


@pytest.fixture(scope="module")
def twenty_clips(tmp_path_factory) -> Path:
    """10 trajectories, 20 clips with previews: 190 distinct pairs, enough to label 40."""
    root = tmp_path_factory.mktemp("slow_clients") / "ds"
    build_demo_dataset(root, n_trajectories=10).close()
    return root


def test_half_open_connections_do_not_starve_a_real_annotator(twenty_clips):
    limits = ConnectionLimits(header_timeout_s=60)  # the flood stays for the whole test
    with running(labeling_app(twenty_clips, limits), limits) as server:
        flood = [half_open(server.port) for _ in range(200)]
        # The address keeps its newest 64 connections: the 136 oldest were evicted.
        assert wait_until(lambda: sum(map(closed_by_server, flood)) == 136)
        statuses, round_trips = [], []
        with open_client(server.url) as http:
            for _ in range(40):
                answer = http.get("/api/next")
                statuses.append(answer.status_code)
                query = answer.json()["query"]
                started = time.perf_counter()
                ack = http.post("/api/label", json={"query_id": query["id"], "outcome": "left",
                                                    "label_id": new_id()})
                round_trips.append(time.perf_counter() - started)
                statuses.append(ack.status_code)
                assert ack.status_code == 200, ack.text
        # Each connection of the client evicted the oldest half-open one, never a newer one;
        # the rest of the flood is still held.
        evicted = server.registry.evicted
        assert 136 < evicted < 200 and server.registry.refused == 0
        assert wait_until(lambda: sum(map(closed_by_server, flood)) == evicted)
        assert [closed_by_server(s) for s in flood] == [True] * evicted + [False] * (200 - evicted)
        for sock in flood:
            sock.close()
    assert max(statuses) < 500 and max(server.statuses) < 500 and len(server.statuses) == 1 + 80
    p95 = float(np.percentile(round_trips, 95))
    assert p95 < 0.150, f"label acknowledgements took {1000 * p95:.0f} ms (p95) under the flood"
    assert len(labels(twenty_clips)) == 40


def test_a_stalled_body_is_answered_408_and_nothing_is_stored(dataset_dir):
    limits = ConnectionLimits(body_timeout_s=1.0)
    before = labels(dataset_dir)
    with running(labeling_app(dataset_dir, limits), limits) as server:
        with open_client(server.url) as http:  # a session, so that only the body is wrong
            query_id = http.get("/api/next").json()["query"]["id"]
            session = "".join(f"{name}: {value}\r\n" for name, value in http.headers.items()
                              if name.lower().startswith("x-"))
            cookies = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        body = json.dumps({"query_id": query_id, "outcome": "left"}).encode().ljust(100)
        head = (f"POST /api/label HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: 100\r\n{session}"
                + (f"Cookie: {cookies}\r\n" if cookies else "") + "\r\n").encode()
        with socket.create_connection((HOST, server.port), timeout=15) as sock:
            started = time.monotonic()
            sock.sendall(head + body[:50])  # and then nothing, the connection kept open
            status, headers, answer = read_response(sock)
            elapsed = time.monotonic() - started
            assert sock.recv(1) == b""  # the unread rest of the body cannot be a next request
        assert status == 408 and elapsed < 10, (status, elapsed)
        assert json.loads(answer)["detail"].startswith("field 'body': ")
        assert headers["connection"] == "close"

        # A client that hangs up mid-body: no 5xx, nothing logged as an error (`running`).
        with socket.create_connection((HOST, server.port), timeout=15) as sock:
            sock.sendall(head + body[:50])
            time.sleep(0.2)  # the app has begun to read the body
        assert wait_until(lambda: len(server.statuses) == 4)  # session, next, the two cut bodies
        assert server.statuses[2] == 408 and 400 <= server.statuses[3] < 500
    assert labels(dataset_dir) == before


def test_connections_without_request_headers_are_closed(dataset_dir):
    limits = ConnectionLimits(header_timeout_s=0.5)
    with running(labeling_app(dataset_dir, limits), limits) as server:
        silent = half_open(server.port)
        # A kept-alive connection that sends a byte now and then: uvicorn cancels its own
        # keep-alive timer on every byte, the header timeout still runs.
        trickle = socket.create_connection((HOST, server.port), timeout=10)
        assert get(trickle) == 200
        sent = 0
        while not closed_by_server(trickle) and sent < 100:
            try:
                trickle.sendall((PARTIAL_REQUEST + b"a" * 100)[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.1)
        assert sent < 100, "a connection trickling its headers was kept for 10 s"
        assert wait_until(lambda: closed_by_server(silent))
        with socket.create_connection((HOST, server.port), timeout=10) as prompt:
            assert get(prompt) == 200 and get(prompt, "/static/app.js") == 200
        assert server.registry.evicted == server.registry.refused == 0
        silent.close()
        trickle.close()


def test_over_the_cap_idle_connections_are_evicted_and_then_new_ones_refused(dataset_dir):
    limits = ConnectionLimits(max_per_client=3, header_timeout_s=60)
    app = labeling_app(dataset_dir, limits)
    with running(app, limits, timeout_keep_alive=60) as server, \
            running(labeling_app(dataset_dir, limits), limits) as other:
        proven = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(2)]
        assert [get(s) for s in proven] == [200, 200]
        idle = half_open(server.port)
        newcomer = socket.create_connection((HOST, server.port), timeout=10)
        assert wait_until(lambda: closed_by_server(idle))  # evicted, not a proven one
        assert get(newcomer) == 200
        proven.append(newcomer)

        refused = socket.create_connection((HOST, server.port), timeout=10)
        assert wait_until(lambda: closed_by_server(refused))
        assert [get(s) for s in proven] == [200, 200, 200]
        assert (server.registry.evicted, server.registry.refused) == (1, 1)
        assert server.registry.count(HOST) == 3

        # Another server in the same process counts its own connections.
        with socket.create_connection((HOST, other.port), timeout=10) as sock:
            assert get(sock) == 200
        assert other.registry.refused == 0
        for sock in [*proven, idle, refused]:
            sock.close()


@pytest.mark.parametrize("field, value", [("header_timeout_s", 0), ("body_timeout_s", float("nan")),
                                          ("max_per_client", 0), ("max_per_client", 2.0)])
def test_limits_name_the_field_they_refuse(field, value):
    with pytest.raises(ValueError, match=f"field '{field}': expected"):
        ConnectionLimits(**{field: value})
