"""An HTTP client for scripts that talk to the labeling app as the page does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from human_ui.csrf import CSRF_HEADER

TOKEN_HEADER = "X-Annotator-Token"


@contextlib.contextmanager
def open_client(url: str, token: str | None = None, *, timeout: float = 10.0
                ) -> Iterator[httpx.Client]:
    """``with open_client(url, token) as http:`` an ``httpx.Client`` on the app at ``url`` with
    a session: the annotator token (if any) and the CSRF token that state-changing requests
    carry (cookie and header)."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                      headers={TOKEN_HEADER: token} if token else {}) as client:
        session = client.get("/api/session")
        session.raise_for_status()
        client.headers[CSRF_HEADER] = session.json()["csrf_token"]
        yield client
