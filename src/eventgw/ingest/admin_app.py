"""The admin port of ingest (``ingest.admin_port``): what lists company ids, for operators.

A separate listener, plain HTTP on loopback by default, never the public port: the hot
companies are company ids, so another tenant must not read them (docs/security.md). GET
routes, which answer HEAD too: ``/status`` (`AdminStatusDocument`: the public document plus
``hot_companies``), ``/`` (the status page, which shows them when its ``/status`` has them),
``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json`` (the public API's document, for
the page's link). No key: whoever reaches the port may read it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import msgspec

from eventgw.ingest.http_app import error_body
from eventgw.ingest.openapi import PROMETHEUS_TEXT, openapi_document
from eventgw.ingest.status_page import STATUS_PAGE_HEADERS, STATUS_PAGE_HTML

if TYPE_CHECKING:
    from eventgw.config.settings import IngestSettings
    from eventgw.ingest.status_doc import AdminStatusDocument
    from eventgw.metrics.backend import Metrics

__all__ = ["AdminHttpApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_encode = msgspec.json.Encoder().encode
_JSON = [(b"content-type", b"application/json")]


class AdminHttpApp:
    """ASGI callable of the admin port; stateless, reads its sources on every request."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: Metrics,
        is_ready: Callable[[], bool],
        status: Callable[[], AdminStatusDocument],
    ) -> None:
        self._metrics = metrics
        self._is_ready = is_ready
        self._status = status
        self._openapi = _encode(openapi_document(settings))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = self._body(path)
        if body is None:
            await _respond(send, 404, error_body("not_found", "path", f"no route {path}"))
        elif method not in ("GET", "HEAD"):  # uvicorn leaves out the body of a HEAD answer
            await _respond(
                send,
                405,
                error_body("method_not_allowed", "method", f"{method} not allowed, use GET, HEAD"),
                [*_JSON, (b"allow", b"GET, HEAD")],
            )
        else:
            status, content, headers = body()
            await _respond(send, status, content, headers)

    def _body(self, path: str) -> Callable[[], tuple[int, bytes, list[tuple[bytes, bytes]]]] | None:
        """The answer of a GET route, made when called (so a 405 computes nothing)."""
        if path == "/status":
            return lambda: (200, _encode(self._status()), _JSON)
        if path == "/":
            return lambda: (200, STATUS_PAGE_HTML, STATUS_PAGE_HEADERS)
        if path == "/healthz":
            return lambda: (200, b'{"status":"ok"}', _JSON)
        if path == "/readyz":
            return lambda: (
                (200, b'{"ready":true}', _JSON)
                if self._is_ready()
                else (503, b'{"ready":false}', _JSON)
            )
        if path == "/metrics":
            return lambda: (
                200,
                self._metrics.render(),
                [(b"content-type", PROMETHEUS_TEXT.encode())],
            )
        if path == "/openapi.json":
            return lambda: (200, self._openapi, _JSON)
        return None


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or _JSON})
    await send({"type": "http.response.body", "body": body})
