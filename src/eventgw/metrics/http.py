"""A minimal HTTP endpoint for /metrics, /healthz and /readyz, served from the event loop.

Serving liveness from the loop itself is the point: if the loop is stuck, /healthz stops
answering, which is what a liveness probe must detect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

_REASONS = {200: b"OK", 404: b"Not Found", 503: b"Service Unavailable"}


class StatusServer:
    """Serves GET /metrics, /healthz, /readyz on one port.

    Args:
        host, port: where to listen (port 0 picks a free one; see ``port`` after start).
        render_metrics: returns the Prometheus text.
        is_ready: returns True once the service is serving.
        extra: more GET paths answering JSON (e.g. ``/stats``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        render_metrics: Callable[[], bytes],
        is_ready: Callable[[], bool],
        extra: dict[str, Callable[[], bytes]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._render = render_metrics
        self._is_ready = is_ready
        self._extra = extra or {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and start serving in the background of the loop."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = line.split()
            path = parts[1].decode(errors="replace") if len(parts) > 1 else ""
            if path == "/metrics":
                code, body, ctype = 200, self._render(), b"text/plain; version=0.0.4"
            elif path == "/healthz":
                code, body, ctype = 200, b'{"status":"ok"}', b"application/json"
            elif path == "/readyz":
                ready = self._is_ready()
                code = 200 if ready else 503
                body = b'{"ready":true}' if ready else b'{"ready":false}'
                ctype = b"application/json"
            elif path in self._extra:
                code, body, ctype = 200, self._extra[path](), b"application/json"
            else:
                code, body, ctype = 404, b'{"error":"not found"}', b"application/json"
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % (code, _REASONS[code], ctype, len(body)) + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            logger.debug("status.request_failed error=%s", exc)
        finally:
            writer.close()
