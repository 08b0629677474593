"""The status port of a service: /metrics, /healthz, /readyz and extra JSON routes, in its loop.

A small ASGI app on uvicorn (`eventgw.http_server.HttpServer`), run as a task of the
service's own event loop. Serving liveness from that loop is the point: if the loop is
stuck, ``/healthz`` stops answering, which is what a liveness probe must detect (so not a
thread, and not ``prometheus_client.start_http_server``, which serves from a thread).
``/metrics`` is prometheus_client's own ASGI app on the service's registry: the text format,
or OpenMetrics when the scraper asks for it (``Accept``), gzip when it accepts it. It collects
in the loop, where the aggregated families (`eventgw.metrics.backend.BulkHistogram`) must be
read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import make_asgi_app

from eventgw.http_server import HttpServer, bind_tcp, plain_config

if TYPE_CHECKING:
    from eventgw.metrics.backend import Metrics

__all__ = ["StatusServer"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_START_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 2.0  # uvicorn's graceful shutdown, then it cancels what is left


class StatusServer:
    """Serves GET /metrics, /healthz, /readyz (and ``extra`` JSON routes) on one port.

    ``start`` binds the port (port 0 picks a free one; see ``port`` after start) and runs
    uvicorn in a task of the calling loop; ``close`` stops it and awaits that task, so an
    error of the server is raised there. HEAD answers as GET without a body; other methods
    get 405, other paths 404.

    Args:
        host, port: where to listen.
        metrics: the service's metrics; ``/metrics`` is a scrape of its registry.
        is_ready: returns True once the service is serving (``/readyz`` 200, else 503).
        extra: more GET paths answering JSON (e.g. ``/stats``).

    Raises:
        OSError: from ``start``, when the port cannot be bound.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        is_ready: Callable[[], bool],
        extra: dict[str, Callable[[], bytes]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._metrics_app = make_asgi_app(metrics.registry)
        self._is_ready = is_ready
        self._extra = extra or {}
        self._server: HttpServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind, start serving from this loop, and return once uvicorn listens."""
        sock = bind_tcp(self.host, self.port)
        self.port = sock.getsockname()[1]
        # Bounded: a probe or a scrape is one small request; past 64 at once, 503.
        config = plain_config(self._app, max_connections=64, shutdown_timeout_s=_CLOSE_TIMEOUT_S)
        server = HttpServer(config)
        # Not in a TaskGroup: the server lives from start() to close(), across the caller's
        # task groups; close() awaits the task, so its error is not lost.
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"status:{self.port}")
        self._server, self._task = server, task
        ready = asyncio.create_task(server.ready.wait())
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError(f"status server on port {self.port} stopped at start-up")
        except BaseException:
            task.cancel()
            await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT_S)
            sock.close()  # else uvicorn's shutdown closes it
            self._server = self._task = None
            raise
        finally:
            ready.cancel()

    async def close(self) -> None:
        """Stop listening, let open requests finish (bounded), and await the server task."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            # uvicorn's own graceful bound, plus its 0.1 s ticks; past it, the timeout
            # cancels the server task and waits for it.
            async with asyncio.timeout(_CLOSE_TIMEOUT_S + 1):
                await task
        except TimeoutError:
            logger.warning("status.close_timeout port=%d", self.port)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point (uvicorn runs it with ``lifespan="off"``: HTTP scopes only)."""
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):  # uvicorn leaves out the body of a HEAD answer
            await _respond(send, 405, b'{"error":"method not allowed"}', [(b"allow", b"GET, HEAD")])
        elif path == "/metrics":
            await self._metrics_app(scope, receive, send)
        elif path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path == "/readyz":
            ready = self._is_ready()
            await _respond(
                send, 200 if ready else 503, b'{"ready":%s}' % (b"true" if ready else b"false")
            )
        elif path in self._extra:
            await _respond(send, 200, self._extra[path]())
        else:
            await _respond(send, 404, b'{"error":"not found"}')


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _JSON + (headers or [])}
    )
    await send({"type": "http.response.body", "body": body})
