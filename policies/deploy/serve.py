"""Serving a deployed policy over JSON lines, on stdin/stdout or a TCP socket on 127.0.0.1.

Protocol, one JSON object per line each way; every line in gets exactly one line out:

    in:  {"state": [Ds floats], "<camera>": [[[r, g, b], ...], ...] (H x W x 3 ints 0..255)}
    out: {"action": [Da floats], "latency_ms": time act() took}
    in:  {"reset": true}                    (a new episode: forget the observation history)
    out: {"reset": true}
    bad input (not JSON, missing key, wrong shape ...): {"error": "..."}, and serving goes on.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, TextIO

from policies.deploy.runtime import DeployedPolicy


def answer(policy: DeployedPolicy, line: str) -> dict:
    """The reply to one request line."""
    try:
        request = json.loads(line)
    except json.JSONDecodeError as err:
        return {"error": f"not a JSON line: {err}"}
    if not isinstance(request, dict):
        return {"error": f"expected a JSON object, found {type(request).__name__}"}
    if request.get("reset") is True:
        policy.reset()
        return {"reset": True}
    start = time.perf_counter()
    try:
        action = policy.act(request)
    except Exception as err:  # the robot gets the reason and the loop keeps serving
        return {"error": str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"}
    return {"action": action.tolist(), "latency_ms": (time.perf_counter() - start) * 1e3}


def serve(policy: DeployedPolicy, reader: Iterable[str], writer: TextIO) -> None:
    """Answer every non-blank line of `reader` on `writer` (flushed per line) until `reader` ends."""
    for line in reader:
        if line.strip():
            writer.write(json.dumps(answer(policy, line)) + "\n")
            writer.flush()


def _announce(address: tuple[str, int]) -> None:
    print(f"serving on {address[0]}:{address[1]} (one client at a time; JSON lines)", file=sys.stderr, flush=True)


def serve_tcp(policy: DeployedPolicy, host: str = "127.0.0.1", port: int = 0, clients: int | None = None,
              on_listening: Callable[[tuple[str, int]], None] = _announce) -> None:
    """Serve clients one at a time over TCP with `serve`'s protocol; each connection starts a
    new episode (`policy.reset()`). `port` 0 picks a free port, passed to `on_listening`
    with the host once the socket listens; stops after `clients` connections (None: never)."""
    with socket.create_server((host, port)) as server:
        on_listening(server.getsockname()[:2])
        served = 0
        while clients is None or served < clients:
            connection, peer = server.accept()
            served += 1
            policy.reset()
            with connection, connection.makefile("r", encoding="utf-8") as reader, \
                    connection.makefile("w", encoding="utf-8") as writer:
                try:
                    serve(policy, reader, writer)
                except OSError as err:  # the client went away mid-line; wait for the next one
                    print(f"client {peer[0]}:{peer[1]}: {err}", file=sys.stderr, flush=True)


def serve_policy(export: Path, backend: str = "onnxruntime", steps: int | None = None,
                 control_hz: float | None = None, port: int | None = None) -> None:
    """Serve an exported diffusion policy (`export_policy`'s directory) to a robot: each JSON
    line in, {"state": [...], "<camera>": H x W x 3 nested lists of 0..255}, gets one line out,
    {"action": [...], "latency_ms": ...}; {"reset": true} starts a new episode; bad lines get
    {"error": "..."}. A new action chunk is sampled every n_action_steps observations.

    Args:
        export: Export directory (deploy.json, encoder/denoiser .onnx/.pt, policy/).
        backend: onnxruntime, torchscript or eager (the PyTorch policy, for comparisons).
        steps: DDIM steps per action chunk (default: the policy's inference_steps).
        control_hz: Control rate; warns once when sampling a chunk takes longer than 1 / control_hz.
        port: Serve on 127.0.0.1:PORT, one client at a time (default: stdin/stdout).
    """
    policy = DeployedPolicy.load(export, backend, steps, control_hz)
    print(f"{export}: {backend}, DDIM-{policy.steps}, observation keys {list(policy.inputs)}",
          file=sys.stderr, flush=True)
    try:
        if port is None:
            serve(policy, sys.stdin, sys.stdout)
        else:
            serve_tcp(policy, port=port)
    except KeyboardInterrupt:
        pass
