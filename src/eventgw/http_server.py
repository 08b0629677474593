"""The one place eventgw runs uvicorn: in the service's own event loop, on a socket we bind.

Every HTTP listener (ingest's public and admin ports, each service's status port,
`eventgw.metrics.http.StatusServer`) is an `HttpServer` serving a socket from `bind_tcp`:

- **no signal handlers**: the CLI owns SIGTERM/SIGINT and turns them into the ``stop`` event
  (docs/design.md). uvicorn's ``Server.serve`` wraps itself in ``capture_signals``, which
  replaces the process's handlers while it runs and re-raises the captured signal after
  it; `HttpServer` makes that a no-op. ``Server.run`` (which would make its own loop) is
  never called: the caller awaits ``serve`` in a task of its own loop, so a stuck loop stops
  the listener too (the point of serving ``/healthz`` there).
- **the socket is bound before uvicorn starts**, so a busy port fails with `OSError` at
  start-up (uvicorn would log and ``sys.exit(1)``), and port 0 is read back from the socket.
- ``ready`` is set once uvicorn listens; ``should_exit = True`` makes ``serve`` return after
  its graceful shutdown (``Config.timeout_graceful_shutdown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Iterator, MutableMapping
    from typing import Any

    AsgiApp = Callable[
        [
            MutableMapping[str, Any],
            Callable[[], Awaitable[MutableMapping[str, Any]]],
            Callable[[MutableMapping[str, Any]], Awaitable[None]],
        ],
        Awaitable[None],
    ]

__all__ = ["HttpServer", "bind_tcp", "plain_config"]


class HttpServer(uvicorn.Server):
    """uvicorn without its signal handlers, with a ready event and, optionally, TLS from our
    own `ssl.SSLContext`."""

    def __init__(self, config: uvicorn.Config, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._ssl_context = ssl_context

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """No-op: the CLI owns the process's signals."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, then ``ready``."""
        if self._ssl_context is not None:
            # uvicorn builds its context from file names with its own cipher choice; ours
            # (eventgw.ingest.tls) is set after its config.load(), which serve() runs first,
            # and before the listening sockets are wrapped, which startup() does.
            self.config.ssl = self._ssl_context
        await super().startup(sockets)
        self.ready.set()


def plain_config(
    app: AsgiApp, *, max_connections: int, shutdown_timeout_s: float
) -> uvicorn.Config:
    """uvicorn's settings for an internal listener (a status port): nothing but the app.

    ASGI 3 (said, not guessed: uvicorn takes a bound method for ASGI 2), no lifespan, no
    logging set-up (the CLI configures logging), no access log, no proxy headers, no
    ``server``/``date`` headers. Past ``max_connections`` uvicorn answers 503.
    """
    return uvicorn.Config(
        app,
        interface="asgi3",
        proxy_headers=False,
        loop="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        # uvicorn types it int; its timer takes any number of seconds.
        timeout_graceful_shutdown=shutdown_timeout_s,  # type: ignore[arg-type]
        server_header=False,
        date_header=False,
    )


def bind_tcp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind a listening TCP socket now, so a busy port fails loudly at start-up.

    ``reuse_port``: share the port with the other ingest workers (SO_REUSEPORT).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted sockets inherit this: small responses must not wait for Nagle's algorithm.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
