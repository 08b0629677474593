"""uvicorn's httptools protocol with the bounds a public door needs, before the app sees a byte.

uvicorn (with httptools) bounds none of these, and each is a way to hold the door shut with
little effort (a "slowloris"):

- **the request head**: at most ``max_header_count`` headers and ``max_header_bytes`` of
  request line plus headers, else 431; it must be complete within ``header_read_timeout_s`` —
  from the connection's start for its first request, from a request's first byte for the
  next ones (uvicorn's keep-alive timeout covers the idle time between them) — else 408 and
  the connection is closed. A connection that never sends anything is closed the same way.
- **connections**: past ``max_connections`` open at once, a new connection's request is
  answered 503 with ``Retry-After`` and the connection closed, before its body is read.
- **malformed HTTP**: 400, as uvicorn does, but with the JSON error body of every other
  refusal (`eventgw.ingest.http_app`).

The body's own deadline (408 after ``ingest.body_read_timeout_s``) is the app's: it is where
the door's slot is held. Every refusal here closes the connection: the rest of what the client
sends cannot be trusted to be framed as it says.

Relies on these uvicorn ``HttpToolsProtocol`` members: the parser callbacks, ``connection_made``,
``connection_lost``, ``send_400_response`` (called on any parser error) and
``on_response_complete``; tests/integration/test_http_bounds.py breaks if one changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from eventgw.ingest.http_app import error_body

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from eventgw.ingest.http_bodies import ErrorCode

__all__ = ["HttpLimits", "bounded_http_protocol"]

logger = logging.getLogger(__name__)

_REASONS: Final = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds `bounded_http_protocol` enforces (from `IngestSettings`)."""

    max_connections: int
    max_header_count: int
    max_header_bytes: int
    header_read_timeout_s: float

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_header_count", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.header_read_timeout_s > 0:
            raise ValueError(f"header_read_timeout_s must be > 0, got {self.header_read_timeout_s}")


class _Refused(Exception):
    """Raised inside a parser callback; `send_400_response` answers it instead of a 400."""

    def __init__(
        self, status: int, code: ErrorCode, field: str, message: str, *, retry_after: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message
        self.retry_after = retry_after


def bounded_http_protocol(
    limits: HttpLimits, count: Callable[[int], None]
) -> type[HttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``, enforcing ``limits``.

    ``count(status)`` is called for every refusal (the service counts them with the app's
    answers in ``eventgw_ingest_requests_total{code}``).
    """

    class BoundedHttpProtocol(HttpToolsProtocol):
        """See the module docstring. One instance per connection."""

        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._head_bytes = 0
            self._head_count = 0
            self._head_timer: asyncio.TimerHandle | None = None
            self._over_limit = False
            self._refusal: _Refused | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # `connections` holds this one too: past the limit, its request is refused.
            self._over_limit = len(self.connections) > limits.max_connections
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = self._head_count = 0
            if self._head_timer is None:  # a later request: its head is timed from here
                self._arm_head_timer()

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url), 0)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4, 1)  # ": " and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._cancel_head_timer()
            if self._over_limit:
                logger.warning(
                    "ingest.http_refused status=503 reason=connections limit=%d",
                    limits.max_connections,
                )
                self._refusal = _Refused(
                    503,
                    "unavailable",
                    "connections",
                    f"more than {limits.max_connections} connections are open: retry",
                    retry_after=True,
                )
                raise self._refusal  # the parser stops here: no ASGI cycle, no body read
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            # uvicorn's answer to any parser error, a callback's included (_Refused).
            refusal, self._refusal = self._refusal, None
            if refusal is not None:
                self._refuse(
                    refusal.status,
                    refusal.code,
                    refusal.field,
                    refusal.message,
                    retry_after=refusal.retry_after,
                )
                return
            self._refuse(400, "invalid_argument", "request", f"malformed HTTP request: {msg}")

        def _count_head(self, size: int, headers: int) -> None:
            self._head_bytes += size
            self._head_count += headers
            if self._head_count > limits.max_header_count:
                self._refusal = _Refused(
                    431,
                    "request_header_fields_too_large",
                    "headers",
                    f"more than {limits.max_header_count} headers",
                )
            elif self._head_bytes > limits.max_header_bytes:
                self._refusal = _Refused(
                    431,
                    "request_header_fields_too_large",
                    "headers",
                    f"request line and headers over {limits.max_header_bytes} bytes",
                )
            else:
                return
            raise self._refusal  # the parser stops; uvicorn calls send_400_response

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(
                limits.header_read_timeout_s, self._head_timed_out
            )

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            logger.info(
                "ingest.http_refused status=408 reason=head_timeout received_bytes=%d",
                self._head_bytes,
            )
            self._refuse(
                408,
                "request_timeout",
                "headers",
                f"the request head did not arrive within {limits.header_read_timeout_s:g} s",
            )

        def _refuse(
            self,
            status: int,
            code: ErrorCode,
            field: str,
            message: str,
            *,
            retry_after: bool = False,
        ) -> None:
            """Write a complete JSON error response and close the connection."""
            if self.transport.is_closing():
                return
            count(status)
            body = error_body(code, field, message)
            head = [
                b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n",
            ]
            if retry_after:
                head.append(b"retry-after: 1\r\n")
            self.transport.write(b"".join((*head, b"\r\n", body)))
            self.transport.close()

    return BoundedHttpProtocol
