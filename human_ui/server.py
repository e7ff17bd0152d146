"""The labeling server: a FastAPI app over one dataset directory, and ``serve`` to run it.

```
GET  /                     comparison page (static/index.html)     GET /agreement  agreement page
GET  /api/session          who you are, mode, instructions, progress
GET  /api/next             the query to answer now, and the next one (to preload)
POST /api/label            {"query_id", "outcome", "ranking"?, "ties"?, "label_id"?, "elapsed_ms"?}
POST /api/undo             delete your latest label; its query comes back
GET  /api/agreement        annotator agreement and agreement with the reward model
GET  /api/export?format=   every label as csv or json
GET  /clips/<clip_id>.mp4  a clip's preview (only files of the dataset's previews/ folder)
```
A label is committed to SQLite (WAL, synchronous=FULL) before its request is answered.
Tokens travel in the ``X-Annotator-Token`` header (``?token=`` for the page and videos).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.store import PreferenceDataset
from human_ui.agreement import agreement_report, model_agreement
from human_ui.config import UIConfig, is_loopback
from human_ui.instructions import render_markdown
from human_ui.queue import LabelQueue, QueueError
from human_ui.reward_model import BackgroundRetrainer, prefers_first

STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css",
                 "agreement.js": "text/javascript"}
_ID = r"^[A-Za-z0-9_-]{1,128}$"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class LabelRequest(BaseModel):
    """An answer to one query."""

    model_config = ConfigDict(extra="forbid", strict=True)
    query_id: str = Field(pattern=_ID)
    outcome: Literal["left", "right", "equal", "cannot_tell", "skip", "ranking"]
    ranking: list[int] | None = Field(default=None, min_length=2, max_length=3)
    ties: list[int] = Field(default_factory=list, max_length=2)
    label_id: str | None = Field(default=None, pattern=_ID)
    """Chosen by the browser, so that a retried request cannot store a second label."""
    elapsed_ms: float | None = Field(default=None, ge=0, le=86_400_000)
    """Time the annotator spent on the query."""


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body: larger than the limit of {limit} bytes")


class BodyLimit:
    """Answers 413 to request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = JSONResponse({"detail": _BodyTooLarge(self.max_bytes).detail}, 413)
            return await response(scope, receive, send)
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def create_app(dataset_path: str | Path, config: UIConfig = UIConfig()) -> FastAPI:
    """The labeling app over the dataset at ``dataset_path`` (opened now, closed on shutdown)."""
    dataset = PreferenceDataset.open(dataset_path)
    ensemble = RewardEnsemble.load(config.reward) if config.reward is not None else None
    queue = LabelQueue(dataset, config, ensemble)

    def use_model(model: RewardEnsemble) -> None:
        queue.ensemble = model

    retrainer = BackgroundRetrainer(dataset, config.retrain_every, config.reward_epochs, use_model)
    instructions_html = render_markdown(dataset.instructions)
    token_names: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        retrainer.wait(timeout=60)
        dataset.close()

    app = FastAPI(title="embodied-pref labeling", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.dataset, app.state.queue, app.state.retrainer = dataset, queue, retrainer
    app.state.config = config

    if not config.tokens_required:  # token-less means local only: refuse DNS-rebound hosts
        app.add_middleware(TrustedHostMiddleware,
                           allowed_hosts=["localhost", "127.0.0.1", "[::1]", "::1"])
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - started):.1f}"
        response.headers.update(_SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = []
        for error in err.errors():
            field = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            problems.append(f"field '{field}': {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(problems)}, 422)

    def annotator(request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = (request.headers.get("x-annotator-token")
                 or (header[7:] if header.lower().startswith("bearer ") else "")
                 or request.query_params.get("token", ""))
        if token:
            name = token_names.get(token)
            if name is None and _TOKEN.fullmatch(token):
                name = dataset.annotator_for_token(token)
                if name is not None:
                    token_names[token] = name
            if name is None:
                raise HTTPException(401, "field 'token': unknown annotator token")
            return name
        if config.tokens_required:
            raise HTTPException(401, "field 'token': missing; this server is reachable beyond "
                                     "localhost, so open your own link (…/?token=YOUR_TOKEN)")
        return config.local_annotator

    def query_json(query, request: Request) -> dict[str, Any] | None:
        if query is None:
            return None
        token = request.headers.get("x-annotator-token") or request.query_params.get("token")
        suffix = f"?token={token}" if token else ""
        clips = []
        for clip_id in query.clip_ids:
            clip = dataset.clip(clip_id)
            clips.append({"id": clip_id, "url": f"/clips/{clip_id}.mp4{suffix}",
                          "frames": clip.length + 1})
        return {"id": query.id, "clips": clips, "selector": query.selector, "score": query.score}

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC_DIR / name, media_type="text/html")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return page("index.html")

    @app.get("/agreement", include_in_schema=False)
    def agreement_page() -> FileResponse:
        return page("agreement.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in _STATIC_FILES:
            raise HTTPException(404, f"field 'name': no static file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=_STATIC_FILES[name])

    @app.get("/api/session")
    def session(who: str = Depends(annotator)) -> dict[str, Any]:
        return {"annotator": who, "mode": config.mode, "selection": config.selection,
                "dataset": dataset.path.name, "description": dataset.description,
                "instructions_html": instructions_html, "progress": queue.progress(who)}

    @app.get("/api/next")
    def next_query(request: Request, who: str = Depends(annotator)) -> dict[str, Any]:
        query = queue.next_query(who)
        upcoming = queue.peek(who, exclude=query.id) if query is not None else None
        return {"query": query_json(query, request), "upcoming": query_json(upcoming, request),
                "progress": queue.progress(who)}

    # A plain def, like every handler that takes the queue's lock or writes: it runs on the
    # thread pool, so a slow query selection or an fsync never stalls the event loop.
    @app.post("/api/label")
    def label(body: LabelRequest, who: str = Depends(annotator)) -> dict[str, Any]:
        source = {"kind": "human", "app": "human_ui", "mode": config.mode}
        if body.elapsed_ms is not None:
            source["elapsed_ms"] = round(body.elapsed_ms, 1)
        try:
            stored, created = queue.add_label(
                who, body.query_id, body.outcome,
                ranking=None if body.ranking is None else tuple(body.ranking),
                ties=tuple(body.ties), label_id=body.label_id, source=source)
        except QueueError as err:
            raise HTTPException(err.status, str(err)) from None
        if created:
            retrainer.label_added()
        return {"label_id": stored.id, "stored": created, "progress": {"labelled": queue.labelled(who)}}

    @app.post("/api/undo")
    def undo(request: Request, who: str = Depends(annotator)) -> dict[str, Any]:
        undone = queue.undo(who)
        if undone is None:
            raise HTTPException(409, f"field 'annotator': {who!r} has no label to undo")
        return {"undone": undone.id, "outcome": undone.outcome.value,
                "query": query_json(queue.query(undone.query_id), request),
                "progress": queue.progress(who)}

    @app.get("/api/agreement")
    def agreement(who: str = Depends(annotator)) -> dict[str, Any]:
        labels = queue.labels()
        report = agreement_report(labels)
        report["annotators"] = queue.annotator_stats()
        model = queue.ensemble
        if model is None:
            report["model"] = None
        else:
            asked = {label.query_id for label in labels}
            probs = prefers_first(dataset, model, [queue.query(q) for q in asked])
            report["model"] = model_agreement(labels, probs)
        report["retraining"] = {"every": config.retrain_every, "fits": retrainer.fits,
                                "validation_accuracy": retrainer.last_accuracy,
                                "error": retrainer.last_error}
        return report

    @app.get("/api/export")
    def export(format: Literal["json", "csv"] = "json", who: str = Depends(annotator)) -> Response:
        rows = []
        for item in queue.labels():
            rows.append({"label_id": item.id, "query_id": item.query_id,
                         "clip_ids": list(queue.query(item.query_id).clip_ids),
                         "outcome": item.outcome.value,
                         "ranking": None if item.ranking is None else list(item.ranking),
                         "ties": list(item.ties), "annotator": item.annotator,
                         "created_at": item.created_at, "source": item.source})
        if format == "json":
            return JSONResponse(rows, headers={"Content-Disposition": 'attachment; filename="labels.json"'})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["label_id"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="labels.csv"'})

    previews = (dataset.path / "previews").resolve()

    @app.get("/clips/{name}")
    def clip_video(name: str, who: str = Depends(annotator)) -> FileResponse:
        clip_id = name.removesuffix(".mp4")
        if not name.endswith(".mp4") or not _TOKEN.fullmatch(clip_id):
            raise HTTPException(404, "field 'clip_id': expected <clip id>.mp4")
        path = (previews / f"{clip_id}.mp4").resolve()
        if path.parent != previews or not path.is_file():
            raise HTTPException(404, f"field 'clip_id': no preview for clip {clip_id!r}")
        response = FileResponse(path, media_type="video/mp4")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


class BackgroundServer:
    """``with BackgroundServer(app) as server:`` serves ``app`` on a thread at ``server.url``
    (127.0.0.1, a free port unless given); for tests, benchmarks and notebooks."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._socket = bind_socket(host, port)
        self.url = url_for(host, self._socket.getsockname()[1]).rstrip("/")
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the labeling server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()


def serve(dataset_path: str | Path, config: UIConfig = UIConfig()) -> None:
    """Run the labeling server until interrupted; prints the URL to open first."""
    import uvicorn

    app = create_app(dataset_path, config)
    sock = bind_socket(config.host, config.port)
    url = url_for(config.host, sock.getsockname()[1])
    print(f"Labeling {dataset_path} ({config.mode} mode, {config.selection} selection) at {url}",
          flush=True)
    if config.tokens_required:
        note = "" if is_loopback(config.host) else f"{config.host} is reachable beyond localhost: "
        print(f"  {note}every annotator needs their own link {url}?token=TOKEN "
              "(`embodied-pref annotators add DATASET NAME`)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5,
                                           limit_concurrency=128))
    server.run(sockets=[sock])
