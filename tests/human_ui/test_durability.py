"""8 clients label through a real uvicorn subprocess that is SIGKILLed mid-run and restarted:
every acknowledged label survives, none is stored twice; on SQLite and on PostgreSQL."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from embodied_pref.data import new_id
from embodied_pref.store import PreferenceDataset
from human_ui.client import open_client
from human_ui.demo import build_demo_dataset

REPO = Path(__file__).resolve().parents[2]


def start_server(dataset: str, port: int) -> subprocess.Popen:
    # Through the command line people use: `embodied-pref label DATASET --ui ...`.
    code = ("import sys; from embodied_pref.cli import main; "
            "main(['label', '--dataset', sys.argv[1], '--ui', '--server.port', sys.argv[2], '--server.overlap', '0', "
            "'--server.batch-size', '16'])")
    process = subprocess.Popen([sys.executable, "-c", code, dataset, str(port)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()  # printed once the socket listens
    assert f"http://127.0.0.1:{port}/" in line, line + process.stdout.read() if process.poll() else line
    return process


def test_acknowledged_labels_survive_sigkill_without_duplicates(dataset_url, free_port):
    with build_demo_dataset(dataset_url, n_trajectories=10) as ds:  # 20 clips: 190 distinct pairs
        tokens = [ds.add_annotator(f"client{i}") for i in range(8)]
    port = free_port
    url = f"http://127.0.0.1:{port}"
    server = start_server(dataset_url, port)
    acked: list[tuple[str, str]] = []  # (label id, annotator token)
    in_flight: dict[str, dict] = {}  # token -> the body whose answer never came
    lock = threading.Lock()
    stop = threading.Event()
    refused: list[str] = []

    def client(token: str) -> None:
        with open_client(url, token, timeout=5) as http:
            for i in range(500):
                if stop.is_set():
                    return
                try:
                    query = http.get("/api/next").json()["query"]
                except httpx.HTTPError:
                    return
                if query is None:  # every pair asked
                    return
                body = {"query_id": query["id"], "outcome": ["left", "right", "equal"][i % 3],
                        "label_id": new_id()}
                in_flight[token] = body
                try:
                    response = http.post("/api/label", json=body)
                except httpx.HTTPError:
                    return
                if response.status_code != 200:
                    refused.append(response.text)
                    return
                with lock:
                    acked.append((body["label_id"], token))
                del in_flight[token]

    threads = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.005)
    os.kill(server.pid, signal.SIGKILL)  # mid-run: clients are still posting
    server.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=15)
    stop.set()
    assert refused == []
    assert len(acked) >= 40, "the clients did not get going"
    acked_ids = [label_id for label_id, _ in acked]

    server = start_server(dataset_url, port)
    try:
        resent = 0
        with open_client(url, timeout=5) as http:  # the local owner
            for token, body in list(in_flight.items()):  # a retry after a lost acknowledgement
                response = http.post("/api/label", json=body, headers={"X-Annotator-Token": token})
                assert response.status_code == 200, response.text
                resent += 1
            exported = http.get("/api/export").json()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    with PreferenceDataset.open(dataset_url) as ds:
        stored = ds.labels()
    ids = [label.id for label in stored]
    assert set(acked_ids) <= set(ids)
    assert len(ids) == len(set(ids)) == len(acked_ids) + resent
    assert max(Counter((x.annotator, x.query_id) for x in stored).values()) == 1
    assert sorted(row["label_id"] for row in exported) == sorted(ids)
