"""Latency of the labeling app on a local server, as a person sees it in Chromium: time from
asking for the next pair until both videos can play, and from sending a label until its
acknowledgement (committed to the store). Also the same two steps over plain HTTP. Prints a
table.

    .venv/bin/python bench/ui.py [--labels 60] [--screenshot docs/images/human_ui.png] [--smoke]
    .venv/bin/python bench/ui.py --database postgresql://USER@HOST/EMPTY_DB

The dataset's tables go to SQLite in a temporary directory, or with --database to an empty
PostgreSQL database (its files still in the temporary directory).

Needs Debian's chromium (/usr/bin/chromium) and the playwright python package.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embodied_pref.experiments.presets import parse_with_smoke
from human_ui.client import open_client
from human_ui.demo import build_demo_dataset

CHROMIUM = "/usr/bin/chromium"
KEYS = ("ArrowLeft", "ArrowRight", "ArrowDown")
SMOKE = {"labels": 2, "clips": 2}
"""Sizes of --smoke: every step end to end in seconds; flags given beside it win."""


def browser_timings(url: str, labels: int, screenshot: Path | None) -> dict[str, list[float]]:
    """Label `labels` pairs with the keyboard; the page records its own timings (ms)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready]", timeout=30_000)
        if screenshot is not None:
            page.wait_for_timeout(900)  # let the clips play a little
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        for i in range(labels):
            before = page.evaluate("document.body.dataset.ready")
            page.keyboard.press(KEYS[i % len(KEYS)])
            page.wait_for_function("prev => document.body.dataset.ready && document.body.dataset.ready !== prev",
                                   arg=before, timeout=30_000)
        timings = page.evaluate("window.labelTimings")
        browser.close()
    return {"ready": timings["ready"][1:], "ack": timings["ack"]}  # [0]: the cold page load


def http_timings(url: str, labels: int) -> dict[str, list[float]]:
    """The same two steps over HTTP: /api/next plus both clip files; POST /api/label."""
    ready, ack, server = [], [], []
    with open_client(url) as http:
        for i in range(labels):
            start = time.perf_counter()
            query = http.get("/api/next").json()["query"]
            for clip in query["clips"]:
                http.get(clip["url"]).raise_for_status()
            ready.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            response = http.post("/api/label", json={"query_id": query["id"], "outcome": ("left", "right")[i % 2]})
            ack.append(1000 * (time.perf_counter() - start))
            response.raise_for_status()
            server.append(float(response.headers["server-timing"].split("dur=")[1]))
    return {"ready": ready, "ack": ack, "server": server}


def start_server(dataset: str) -> tuple[subprocess.Popen, str]:
    """The server in its own process, as `embodied-pref label --ui` runs it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = ("import sys; from human_ui.config import UIConfig; from human_ui.server import serve; "
            "serve(sys.argv[1], UIConfig(port=int(sys.argv[2]), overlap=0.0, batch_size=16))")
    process = subprocess.Popen([sys.executable, "-c", code, dataset, str(port)],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if "http://" not in line:
        process.kill()
        raise SystemExit(f"the labeling server did not start: {line!r}")
    return process, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=60, help="pairs labelled per client")
    parser.add_argument("--clips", type=int, default=12, help="demo trajectories (2 clips each)")
    parser.add_argument("--screenshot", type=Path, default=None, help="also save the comparison view as PNG")
    parser.add_argument("--database", default=None,
                        help="an empty PostgreSQL database URL for the tables (default: SQLite)")
    args = parse_with_smoke(parser, SMOKE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        separator = "&" if args.database and "?" in args.database else "?"
        dataset = str(root) if args.database is None else f"{args.database}{separator}files={root}"
        with build_demo_dataset(dataset, n_trajectories=args.clips, clip_length=40, size=96) as ds:
            backend = ds.backend
        server, url = start_server(dataset)
        try:
            rows = [("Chromium", browser_timings(url, args.labels, args.screenshot))]
            rows.append(("HTTP (httpx)", http_timings(url, args.labels)))
        finally:
            server.terminate()
            server.wait(timeout=30)
    goals = {"ready": 150.0, "ack": 20.0, "server": 20.0}
    names = {"ready": "next pair ready to play", "ack": "label acknowledged (committed)",
             "server": "label committed, inside the server"}
    load = os.getloadavg()[0]
    print(f"| step ({args.labels} labels, local server, {backend}, 41-frame 96×96 clips; load {load:.1f} on {os.cpu_count()} cores) "
          "| client | p50 ms | p95 ms | goal p95 |")
    print("|---|---|---:|---:|---:|")
    for client, timings in rows:
        for key in timings:
            p50, p95 = np.percentile(timings[key], [50, 95])
            mark = "✓" if p95 < goals[key] else "✗"
            print(f"| {names[key]} | {client} | {p50:.1f} | {p95:.1f} | < {goals[key]:.0f} {mark} |")
    if args.screenshot is not None:
        print(f"\nscreenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
