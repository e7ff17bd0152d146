"""The labeling server: a FastAPI app over one dataset directory, and ``serve`` to run it.

```
GET  /                     comparison page (static/index.html)
GET  /agreement            agreement page (owners)
GET  /api/session          who you are, your role, mode, instructions, progress, CSRF token
GET  /api/next             the query leased to you now, and the next one (to preload)
POST /api/label            {"query_id", "outcome", "ranking"?, "ties"?, "label_id"?, "elapsed_ms"?}
POST /api/undo             {"label_id"}: delete that label of yours; its query comes back
GET  /api/agreement        annotator agreement, reliability, agreement with the reward model (owners)
GET  /api/export?format=   every label as csv or json (owners)
GET  /api/openapi.json     this API's schema (owners, when tokens are required)
GET  /clips/<clip_id>.mp4  a clip's preview (only files of the dataset's previews/ folder)
```
A label is committed to SQLite (WAL, synchronous=FULL) before its request is answered.
Tokens travel in the ``X-Annotator-Token`` header (``?token=`` for the pages and videos); a
token-less request to a loopback-bound server is the local owner. ``/api/next``, ``/api/label``
and ``/api/undo`` change state and pass ``human_ui.csrf`` (origin checks and a CSRF token).
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
from typing import Annotated, Any, Literal, NamedTuple, get_args

from annotated_types import Ge, Le
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from starlette.middleware.trustedhost import TrustedHostMiddleware

from embodied_pref.annotator_reliability import reliability_report
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.store import PreferenceDataset
from human_ui.agreement import agreement_report, model_agreement
from human_ui.config import UIConfig, is_loopback
from human_ui.connections import BodyReadTimeout, uvicorn_config
from human_ui.csrf import CsrfGuard, cookie_name
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


class ErrorBody(BaseModel):
    detail: str


class Progress(BaseModel):
    labelled: int
    """Labels you gave."""
    waiting: int = 0
    """Stored queries still open to you."""
    pairs: int = 0
    """Distinct clip pairs (or triplets) you labelled."""
    clips_seen: int = 0
    """Distinct clips in the queries you labelled."""
    previews: int = 0
    """Clips with a preview: the pool new queries are drawn from."""
    clips: int = 0
    """Clips in the dataset."""


class ClipOut(BaseModel):
    id: str
    url: str
    frames: int


class QueryOut(BaseModel):
    id: str
    clips: list[ClipOut]
    selector: str
    score: float | None


class LabelRef(BaseModel):
    label_id: str
    outcome: str


class SessionOut(BaseModel):
    annotator: str
    role: str
    mode: str
    selection: str
    dataset: str
    description: str
    instructions_html: str
    progress: Progress
    csrf_token: str
    last_label: LabelRef | None


class NextOut(BaseModel):
    query: QueryOut | None
    upcoming: QueryOut | None
    progress: Progress


class LabelAck(BaseModel):
    label_id: str
    stored: bool
    """False when this label_id was stored before (a retried request)."""
    progress: Progress


class UndoOut(BaseModel):
    undone: str
    outcome: str
    query: QueryOut | None
    progress: Progress
    last_label: LabelRef | None
    """Your latest label now (what a further undo would delete)."""


def _whole_number(value: Any) -> Any:
    """JSON numbers such as 2.0 are integers to JSON Schema; booleans and strings are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool):
        raise ValueError("expected an integer, found a boolean")
    return value


def _position(highest: int) -> Any:
    """An integer in 0..highest (the schema says so: a before-validator hides the bounds)."""
    return Annotated[int, BeforeValidator(_whole_number), Ge(0), Le(highest),
                     WithJsonSchema({"type": "integer", "minimum": 0, "maximum": highest})]


class PairAnswer(BaseModel):
    """An answer to a pair query (or a triplet's can't-tell or skip)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    query_id: str = Field(pattern=_ID)
    outcome: Literal["left", "right", "equal", "cannot_tell", "skip"]
    label_id: str | None = Field(default=None, pattern=_ID)
    """Chosen by the browser, so that a retried request cannot store a second label."""
    elapsed_ms: float | None = Field(default=None, ge=0, le=86_400_000)
    """Time the annotator spent on the query."""


class RankingAnswer(PairAnswer):
    """A triplet's three clips ranked best to worst (clip positions 0..2)."""

    outcome: Literal["ranking"]
    ranking: list[_position(2)] = Field(
        min_length=3, max_length=3, json_schema_extra={"uniqueItems": True})
    ties: list[_position(1)] = Field(
        default_factory=list, max_length=2, json_schema_extra={"uniqueItems": True})
    """Ranking positions tied with the next one."""


LabelRequest = Annotated[PairAnswer | RankingAnswer, Field(discriminator="outcome")]
_LOCATION_PREFIXES = frozenset({"body", "ranking", *get_args(PairAnswer.model_fields["outcome"].annotation)})
"""The first parts of a validation error's location that name no field: the body, and the
answer kind the union picked."""


class UndoRequest(BaseModel):
    """Which label to undo (one of your own; the page sends your latest)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    label_id: str = Field(pattern=_ID)


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


_ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 408, 409, 413, 422)}
"""Every route may answer these with {"detail": "why"} (400: a body that is not UTF-8; 408:
a body that stopped arriving)."""


class Who(NamedTuple):
    name: str
    role: str


def create_app(dataset_path: str | Path, config: UIConfig = UIConfig()) -> FastAPI:
    """The labeling app over the dataset at ``dataset_path`` (opened now, closed on shutdown)."""
    dataset = PreferenceDataset.open(dataset_path)
    ensemble = RewardEnsemble.load(config.reward) if config.reward is not None else None
    queue = LabelQueue(dataset, config, ensemble)

    def use_model(model: RewardEnsemble) -> None:
        queue.ensemble = model

    retrainer = BackgroundRetrainer(dataset, config.retrain_every, config.reward_epochs, use_model)
    instructions_html = render_markdown(dataset.instructions)
    csrf = CsrfGuard.for_dataset(dataset, config.public_url)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        retrainer.stop(timeout=60)
        dataset.close()

    app = FastAPI(title="embodied-pref labeling", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan, responses=_ERRORS)
    app.state.dataset, app.state.queue, app.state.retrainer = dataset, queue, retrainer
    app.state.config = config

    if not config.tokens_required:  # token-less means local only: refuse DNS-rebound hosts
        app.add_middleware(TrustedHostMiddleware,
                           allowed_hosts=["localhost", "127.0.0.1", "[::1]", "::1"])
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(BodyReadTimeout, timeout_s=config.limits.body_timeout_s)

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
            if error.get("type") == "union_tag_invalid":
                problems.append(f"field 'outcome': {error.get('msg', 'invalid')}")
                continue
            path = [str(p) for p in error.get("loc", ())]
            field = ".".join(p for i, p in enumerate(path)
                             if not (i < 2 and p in _LOCATION_PREFIXES)) or "body"
            problems.append(f"field '{field}': {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(problems)}, 422)

    def request_token(request: Request) -> str:
        header = request.headers.get("authorization", "")
        return (request.headers.get("x-annotator-token")
                or (header[7:] if header.lower().startswith("bearer ") else "")
                or request.query_params.get("token", ""))

    def annotator(request: Request) -> Who:
        token = request_token(request)
        if token:
            found = dataset.annotator_for_token(token) if _TOKEN.fullmatch(token) else None
            if found is None:
                raise HTTPException(401, "field 'token': unknown or revoked annotator token")
            return Who(*found)
        if config.tokens_required:
            raise HTTPException(401, "field 'token': missing; this server is reachable beyond "
                                     "localhost, so open your own link (…/?token=YOUR_TOKEN)")
        return Who(config.local_annotator, "owner")  # whoever runs a local server owns it

    def owner(who: Who = Depends(annotator)) -> Who:
        if who.role != "owner":
            raise HTTPException(403, f"field 'token': {who.name!r} is an annotator; this needs "
                                     "an owner (`annotators add DATASET NAME --role owner`)")
        return who

    def changer(request: Request, who: Who = Depends(annotator)) -> Who:
        """The annotator of a state-changing request that passed the CSRF checks."""
        refusal = csrf.refusal(request)
        if refusal is not None:
            raise HTTPException(403, refusal)
        return who

    def query_json(query, request: Request) -> dict[str, Any] | None:
        if query is None:
            return None
        token = request_token(request)
        suffix = f"?token={token}" if token else ""
        clips = []
        for clip_id in query.clip_ids:
            clip = dataset.clip(clip_id)
            clips.append({"id": clip_id, "url": f"/clips/{clip_id}.mp4{suffix}",
                          "frames": clip.length + 1})
        return {"id": query.id, "clips": clips, "selector": query.selector, "score": query.score}

    def last_label(who: Who) -> dict[str, str] | None:
        latest = queue.latest_label(who.name)
        return None if latest is None else {"label_id": latest.id, "outcome": latest.outcome.value}

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC_DIR / name, media_type="text/html")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return page("index.html")

    @app.get("/agreement", include_in_schema=False)
    def agreement_page(_: Who = Depends(owner)) -> FileResponse:
        return page("agreement.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in _STATIC_FILES:
            raise HTTPException(404, f"field 'name': no static file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=_STATIC_FILES[name])

    @app.get("/api/session", response_model=SessionOut)
    def session(request: Request, response: Response, who: Who = Depends(annotator)) -> dict[str, Any]:
        token = csrf.issue()
        response.set_cookie(cookie_name(request), token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return {"annotator": who.name, "role": who.role, "mode": config.mode,
                "selection": config.selection, "dataset": dataset.path.name,
                "description": dataset.description, "instructions_html": instructions_html,
                "progress": queue.progress(who.name), "csrf_token": token,
                "last_label": last_label(who)}

    # Plain defs, like every handler that takes the queue's lock or writes: they run on the
    # thread pool, so a slow query selection or an fsync never stalls the event loop.
    @app.get("/api/next", response_model=NextOut, operation_id="next")
    def next_query(request: Request, who: Who = Depends(changer)) -> dict[str, Any]:
        query = queue.next_query(who.name)
        upcoming = queue.peek(who.name, exclude=query.id) if query is not None else None
        return {"query": query_json(query, request), "upcoming": query_json(upcoming, request),
                "progress": queue.progress(who.name)}

    @app.post("/api/label", response_model=LabelAck, operation_id="label")
    def label(body: LabelRequest, who: Who = Depends(changer)) -> dict[str, Any]:
        source = {"kind": "human", "app": "human_ui", "mode": config.mode}
        if body.elapsed_ms is not None:
            source["elapsed_ms"] = round(body.elapsed_ms, 1)
        try:
            stored, created = queue.add_label(
                who.name, body.query_id, body.outcome,
                ranking=tuple(body.ranking) if isinstance(body, RankingAnswer) else None,
                ties=tuple(body.ties) if isinstance(body, RankingAnswer) else (),
                label_id=body.label_id, source=source)
        except QueueError as err:
            raise HTTPException(err.status, str(err)) from None
        if created:
            retrainer.label_added()
        return {"label_id": stored.id, "stored": created, "progress": queue.progress(who.name)}

    @app.post("/api/undo", response_model=UndoOut, operation_id="undo")
    def undo(body: UndoRequest, request: Request, who: Who = Depends(changer)) -> dict[str, Any]:
        try:
            undone = queue.undo(who.name, body.label_id)
        except QueueError as err:
            raise HTTPException(err.status, str(err)) from None
        return {"undone": undone.id, "outcome": undone.outcome.value,
                "query": query_json(queue.query(undone.query_id), request),
                "progress": queue.progress(who.name), "last_label": last_label(who)}

    @app.get("/api/agreement")
    def agreement(_: Who = Depends(owner)) -> dict[str, Any]:
        labels = queue.labels()
        report = agreement_report(labels)
        report["annotators"] = queue.annotator_stats()
        model = queue.ensemble
        probs = None
        if model is not None:
            asked = {label.query_id for label in labels}
            probs = prefers_first(dataset, model, [queue.query(q) for q in asked])
        report["model"] = None if probs is None else model_agreement(labels, probs)
        report["reliability"] = reliability_report(labels, probs)
        report["retraining"] = {"every": config.retrain_every, "fits": retrainer.fits,
                                "validation_accuracy": retrainer.last_accuracy,
                                "error": retrainer.last_error}
        return report

    @app.get("/api/export", responses={200: {"content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "text/csv": {"schema": {"type": "string"}}}}})
    def export(format: Literal["json", "csv"] = "json", _: Who = Depends(owner)) -> Response:
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

    @app.get("/clips/{name}", responses={200: {"content": {
        "video/mp4": {"schema": {"type": "string", "format": "binary"}}}}},
        response_class=FileResponse)
    def clip_video(name: str, _: Who = Depends(annotator)) -> FileResponse:
        clip_id = name.removesuffix(".mp4")
        if not name.endswith(".mp4") or not _TOKEN.fullmatch(clip_id):
            raise HTTPException(404, "field 'clip_id': expected <clip id>.mp4")
        path = (previews / f"{clip_id}.mp4").resolve()
        if path.parent != previews or not path.is_file():
            raise HTTPException(404, f"field 'clip_id': no preview for clip {clip_id!r}")
        response = FileResponse(path, media_type="video/mp4")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    schema_reader = owner if config.tokens_required else annotator

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi_schema(_: Who = Depends(schema_reader)) -> JSONResponse:
        return JSONResponse(app.openapi())

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
        self._server = uvicorn.Server(uvicorn_config(app, app.state.config.limits, log_level="warning"))
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


def describe_pool(app: FastAPI, config: UIConfig) -> list[str]:
    """What the server will ask, in words for whoever starts it: where queries come from, and
    what is missing when there is nothing to show."""
    clips, previews = app.state.queue.pool_size()
    open_queries = len(app.state.dataset.unlabeled_queries())
    lines = [f"  queries: {open_queries} stored without a label are asked first; then the server "
             f"selects new {config.mode}s ({config.selection}) from the {previews} clips with a "
             "preview, never the same clips twice"]
    if not clips:
        lines.append("  no clips yet: record some with `embodied-pref collect --frames`")
    elif previews == 0:
        lines.append(f"  none of the {clips} clips has a preview, so people will see nothing: "
                     "run `embodied-pref make-previews DATASET` (or `collect --frames`)")
    return lines


def serve(dataset_path: str | Path, config: UIConfig = UIConfig()) -> None:
    """Run the labeling server until Ctrl+C; prints the URL to open first and, on the way out,
    how many labels the dataset holds (background refits stopped, the store closed)."""
    import uvicorn

    app = create_app(dataset_path, config)
    sock = bind_socket(config.host, config.port)
    try:  # Ctrl+C at any point: uvicorn shuts down cleanly, then re-raises the signal
        url = url_for(config.host, sock.getsockname()[1])
        print(f"Labeling {app.state.dataset.name} ({config.mode} mode, {config.selection} selection) at {url}",
              flush=True)
        for line in describe_pool(app, config):
            print(line, flush=True)
        if config.tokens_required:
            note = "" if is_loopback(config.host) else f"{config.host} is reachable beyond localhost: "
            print(f"  {note}every annotator needs their own link {url}?token=TOKEN "
                  "(`embodied-pref annotators add DATASET NAME`)", flush=True)
        server = uvicorn.Server(uvicorn_config(app, config.limits, log_level="warning"))
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        app.state.retrainer.stop(timeout=60)
        app.state.dataset.close()
    finally:
        sock.close()
    with PreferenceDataset.open(dataset_path) as dataset:
        print(f"Stopped; {len(dataset.labels())} labels are stored in {dataset.name}", flush=True)
