"""Cross-site request forgery guard for state-changing routes.

A request that changes labels, leases or queries must
- not come from another site: ``Sec-Fetch-Site`` (sent by browsers) is ``same-origin`` or
  ``none``, and ``Origin``, when sent, names this server (its ``Host``) or its public URL;
- carry the session's CSRF token twice (double submit): in the ``X-CSRF-Token`` header and in
  the cookie ``/api/session`` sets. Tokens are signed with the dataset's secret, so a cookie
  planted by another page on the same host (cookies ignore ports) is not a valid token, and
  the custom header forces a CORS preflight that this server never grants.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

CSRF_HEADER = "X-CSRF-Token"
_SECRET_META_KEY = "ui_csrf_secret"


def cookie_name(request: Request) -> str:
    """Per port: two labeling servers on one host must not overwrite each other's cookie."""
    return f"ep_csrf_{request.url.port or request.url.scheme}"


class CsrfGuard:
    """Issues and checks signed CSRF tokens; ``secret`` is kept by the dataset."""

    def __init__(self, secret: bytes, public_url: str | None = None) -> None:
        self._secret = secret
        self._public_origin = urlsplit(public_url).netloc if public_url else None

    @classmethod
    def for_dataset(cls, dataset, public_url: str | None = None) -> CsrfGuard:
        """A guard with the dataset's secret (made and stored on first use), so tokens stay
        valid across server restarts."""
        secret = dataset.get_meta(_SECRET_META_KEY)
        if secret is None:
            secret = secrets.token_hex(32)
            dataset.set_meta(_SECRET_META_KEY, secret)
        return cls(bytes.fromhex(secret), public_url)

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode("ascii"), hashlib.sha256).hexdigest()[:40]

    def _valid(self, token: str) -> bool:
        nonce, _, signature = token.partition(".")
        return bool(nonce) and nonce.isascii() and hmac.compare_digest(
            signature.encode("ascii", "replace"), self._sign(nonce).encode("ascii"))

    def refusal(self, request: Request) -> str | None:
        """Why ``request`` may not change state, or None if it may."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"header 'Sec-Fetch-Site': a {site} request may not change labels"
        origin = request.headers.get("origin")
        if origin is not None:
            netloc = urlsplit(origin).netloc
            if netloc not in (request.headers.get("host"), self._public_origin):
                return f"header 'Origin': {origin!r} is not this server"
        header = request.headers.get(CSRF_HEADER, "")
        cookie = request.cookies.get(cookie_name(request), "")
        if not header:
            return "header 'X-CSRF-Token': missing (take csrf_token from GET /api/session)"
        if not hmac.compare_digest(header.encode("utf-8", "replace"), cookie.encode("utf-8", "replace")):
            return "header 'X-CSRF-Token': does not match the session cookie (reload the page)"
        if not self._valid(header):
            return "header 'X-CSRF-Token': not a token of this server (reload the page)"
        return None
