"""Limits on client connections, so that slow or idle clients cannot starve the annotators.

uvicorn's h11 protocol has no header-read timeout: a connection that sends half a request
and then nothing stays open for good, and any byte received cancels its keep-alive timer.
Here:

- ``LimitedH11Protocol`` closes a connection that has not delivered complete request headers
  ``header_timeout_s`` after connecting or after its previous response, and caps the open
  connections of each client address at ``max_per_client``. A connection over the cap evicts
  the oldest connection of its address that has never started a request; only when there is
  none is the new one closed. Connections that completed a request ("proven") are never
  evicted, so a flood of half-open connections from an address (or a NAT it shares with an
  annotator) cannot lock the annotator out.
- ``BodyReadTimeout`` (ASGI middleware) answers 408 when a chunk of a request body takes
  longer than ``body_timeout_s`` to arrive.
- ``uvicorn_config`` puts them together for ``uvicorn.Server``.

```
connect ──headers within header_timeout_s──> request ──each body chunk within body_timeout_s──> app
   response complete (now "proven") ──next headers within header_timeout_s──> request ...
```
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take and how many connections it may hold."""

    header_timeout_s: float = 10.0
    """A connection must deliver complete request headers within this time after connecting
    or after its previous response; else it is closed."""
    body_timeout_s: float = 10.0
    """Each chunk of a request body must arrive within this time; else the request is
    answered 408 and the connection closes."""
    max_per_client: int = 64
    """Open connections per client IP address. Over it, a new connection evicts the oldest
    one of that address still waiting for its first request, or is closed if there is none."""

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"field '{name}': expected seconds > 0, found {value!r}")
        value = self.max_per_client
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"field 'max_per_client': expected an int >= 1, found {value!r}")


class ClientConnections:
    """The open connections of one server, by client address, oldest first."""

    def __init__(self, max_per_client: int) -> None:
        self.max_per_client = max_per_client
        self._by_address: dict[str, dict[LimitedH11Protocol, None]] = {}
        self.evicted = 0
        """Connections closed to make room for a newer one of the same address."""
        self.refused = 0
        """New connections closed because their address held only busy or proven ones."""

    def admit(self, connection: LimitedH11Protocol) -> bool:
        """Register ``connection``, evicting an idle one of its address if it is over the cap;
        False if there is none to evict (the caller closes ``connection``)."""
        held = self._by_address.setdefault(connection.address, {})
        if len(held) >= self.max_per_client:
            idle = next((c for c in held if c.waiting_for_first_request), None)
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.remove(idle)
            idle.transport.close()
        held[connection] = None
        return True

    def remove(self, connection: LimitedH11Protocol) -> None:
        held = self._by_address.get(connection.address)
        if held is not None:
            held.pop(connection, None)
            if not held:
                del self._by_address[connection.address]

    def count(self, address: str) -> int:
        """Open connections of ``address``."""
        return len(self._by_address.get(address, ()))


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a per-address connection cap.

    Use a subclass from ``limited_protocol``, which binds ``limits`` and the ``registry`` of
    one server. Hooks: ``connection_made`` (cap, arm the timer), ``handle_events`` (headers of
    a request arrived: disarm), ``on_response_complete`` (proven; re-arm for the next request),
    ``connection_lost`` (forget)."""

    limits: ClassVar[ConnectionLimits]
    registry: ClassVar[ClientConnections]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address = ""
        self.proven = False
        self._header_timer: asyncio.TimerHandle | None = None

    @property
    def waiting_for_first_request(self) -> bool:
        """Never completed a request and none has started: the one kind that may be evicted."""
        return not self.proven and self.cycle is None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else ""
        if not self.registry.admit(self):
            self.logger.warning("%s holds %d open connections, all busy or kept alive; "
                                "closing a new one", self.address, self.limits.max_per_client)
            transport.close()
            return
        self._arm_header_timer()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # uvicorn starts a new cycle once a request's headers are in
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        self.proven = True
        if not self.transport.is_closing():
            # Armed before uvicorn handles a pipelined request, whose headers disarm it.
            self._arm_header_timer()
        super().on_response_complete()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._forget()  # the transport moves to another protocol: this one sees no connection_lost
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def _forget(self) -> None:
        self._disarm_header_timer()
        self.registry.remove(self)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def limited_protocol(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """A protocol class for one server: ``limits`` and a fresh registry of open connections
    (reachable as ``cls.registry``), so that servers in one process do not count each other's."""
    registry = ClientConnections(limits.max_per_client)
    return type("LimitedH11Protocol", (LimitedH11Protocol,),
                {"limits": limits, "registry": registry, "__module__": __name__})


def uvicorn_config(app: Any, limits: ConnectionLimits, **kwargs: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` serving ``app`` with ``limits`` (a new registry: one config per
    server); ``kwargs`` go to ``uvicorn.Config`` (``log_level``, ``timeout_keep_alive``, ...)."""
    kwargs.setdefault("timeout_keep_alive", 5)
    kwargs.setdefault("ws", "none")  # the app has no websocket routes
    # No global connection limit: uvicorn's ``limit_concurrency`` counts every open
    # connection, so connections that never send a request would turn every request into a
    # 503, a valid annotator's included. The per-address cap and the header timeout bound what
    # one address holds; the process's open-file limit bounds the rest (asyncio pauses
    # accepting for a second when it runs out, and the server carries on).
    kwargs.setdefault("limit_concurrency", None)
    return uvicorn.Config(app, http=limited_protocol(limits), **kwargs)


class BodyReadTimeout:
    """ASGI middleware: a request whose next body chunk takes longer than ``timeout_s`` to
    arrive is answered 408 (JSON ``{"detail": "field 'body': ..."}``, ``Connection: close``);
    the app then reads a disconnect and whatever it sends is dropped. Reads after the body is
    complete (disconnect listeners) are not timed."""

    def __init__(self, app: Any, timeout_s: float = 10.0) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_complete = response_started = timed_out = False

        async def timed_receive() -> dict:
            nonlocal body_complete, response_started, timed_out
            if body_complete or response_started:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                # Answered here rather than raised, as an exception raised in ``receive`` can
                # reach the app's handlers wrapped or converted (a task group, a body parser).
                body_complete = response_started = timed_out = True
                detail = f"field 'body': incomplete; no data arrived for {self.timeout_s:g} s"
                await JSONResponse({"detail": detail}, 408, headers={"Connection": "close"})(
                    scope, receive, send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True  # the whole body, or a disconnect
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal response_started
            if timed_out:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, timed_receive, tracked_send)
