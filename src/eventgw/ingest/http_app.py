"""The HTTP API as a raw ASGI app: ``POST /v1/events`` and the operator's GET routes.

A framework adds nothing the hot endpoint needs, so this is plain ASGI on uvicorn
(httptools + uvloop). Every error answers JSON ``{"error": {"code", "field", "message"}}``
(`eventgw.ingest.http_bodies.ErrorBody`) and changes nothing. GET routes: ``/healthz``,
``/readyz``, ``/status`` (JSON), ``/metrics`` (Prometheus), ``/openapi.json`` (the API
document, `eventgw.ingest.openapi`) and ``/`` (the status page, `eventgw.ingest.status_page`);
they answer HEAD too. A known path asked with another method answers 405 with ``Allow``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import msgspec

from eventgw.core.errors import (
    EventGwError,
    InvalidEvent,
    PayloadTooLarge,
    PermissionDenied,
    Unauthenticated,
    UnsupportedMediaType,
)
from eventgw.ingest.grants import KeyRing
from eventgw.ingest.http_bodies import (
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    EventStatus,
    HttpResponse,
    HttpResult,
    ResultLane,
)
from eventgw.ingest.openapi import PROMETHEUS_TEXT, openapi_document
from eventgw.ingest.pipeline import STATUS_NAMES
from eventgw.ingest.status_page import STATUS_PAGE_HEADERS, STATUS_PAGE_HTML
from eventgw.ingest.validation import decode_http_body

if TYPE_CHECKING:
    from eventgw.config.settings import IngestSettings
    from eventgw.ingest.grants import Grant
    from eventgw.ingest.pipeline import EventResult, IngestPipeline
    from eventgw.ingest.status_doc import StatusDocument
    from eventgw.metrics.backend import Metrics

__all__ = ["HttpResponse", "HttpResult", "IngestHttpApp", "response_body"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLASS_NAMES: Final[dict[int, Literal["P30", "P20", "P10"]]] = {10: "P10", 20: "P20", 30: "P30"}
# The pipeline's names are exactly `EventStatus` (tests/unit/ingest/test_openapi.py checks).
_STATUS_NAMES = cast("dict[int, EventStatus]", STATUS_NAMES)

_encode = msgspec.json.Encoder().encode
_JSON = [(b"content-type", b"application/json")]
_JSON_CLOSE = [*_JSON, (b"connection", b"close")]
_GET_ROUTES: Final = frozenset({"/healthz", "/readyz", "/status", "/metrics", "/openapi.json", "/"})
_EVENT_ID_OPEN = b'{"event_id":"'
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]*\Z").match  # characters JSON keeps as they are


def response_body(
    request_id: str, results: Iterable[EventResult], retry_after_ms: int = 0
) -> bytes:
    """The JSON of `HttpResponse` for ``results``, spliced; the same bytes msgspec writes.

    Per class, lane, topic, status, reason and cluster the fields after ``event_id`` are
    the same, so they are encoded once and each event adds only its id (0.2 µs per event
    against 0.6 for a struct per event). Event ids need no JSON escaping: ingest assigns
    UUIDs, and a client's id must match the id pattern (letters, digits, ``._:@/+=-``);
    an id outside that set is encoded by msgspec instead.
    """
    rests: dict[tuple[int, str, str, int, str, str], bytes] = {}
    ids: list[str] = []
    tails: list[bytes] = []  # per event, the encoded fields after its id, from the closing quote
    for event_id, priority, lane, topic, status, reason, cluster in results:
        key = (priority, lane, topic, status, reason, cluster)
        rest = rests.get(key)
        if rest is None:
            encoded = _encode(
                HttpResult(
                    event_id="",
                    status=_STATUS_NAMES.get(status, "FAILED"),
                    priority=_CLASS_NAMES[priority],
                    lane=cast("ResultLane", lane),  # a pipeline lane, or "" when DEFERRED
                    topic=topic,
                    cluster=cluster,
                    reason=reason,
                )
            )
            rest = rests[key] = encoded[len(_EVENT_ID_OPEN) :]  # from the closing quote on
        ids.append(event_id)
        tails.append(rest)
    # One match for all ids (the pattern is a character set, so the ids pass together
    # exactly when each passes): 0.03 µs per event against 0.12 for a match per id.
    if _SAFE_ID("".join(ids)):
        parts = [
            _EVENT_ID_OPEN + event_id.encode() + rest
            for event_id, rest in zip(ids, tails, strict=True)
        ]
    else:
        parts = [
            _EVENT_ID_OPEN + event_id.encode() + rest
            if _SAFE_ID(event_id)
            else b'{"event_id":' + _encode(event_id) + rest[1:]
            for event_id, rest in zip(ids, tails, strict=True)
        ]
    head = _encode(HttpResponse(request_id=request_id, retry_after_ms=retry_after_ms, events=[]))
    return b"".join((head[: -len(b"[]}")], b"[", b",".join(parts), b"]}"))


def error_body(code: ErrorCode, field: str, message: str) -> bytes:
    """The JSON body of every refusal: ``{"error": {"code", "field", "message"}}``."""
    return _encode(ErrorBody(ErrorDetail(code, field, message)))


class _HttpError(Exception):
    """An HTTP-only refusal with no meaning outside this app (408: the body was too slow)."""

    def __init__(
        self, status: int, code: ErrorCode, field: str, message: str, *, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message
        self.close = close  # the rest of the request may still be arriving: end the connection


class IngestHttpApp:
    """ASGI callable for the ingest HTTP API.

    Backpressure is the pipeline's `eventgw.ingest.door.Door`: under saturation the lower
    classes' events are answered DEFERRED (429 with ``Retry-After`` and a status per event:
    the others are settled, send the DEFERRED ones again); only past twice
    ``max_in_flight_requests`` is a request refused whole (429).
    """

    def __init__(
        self,
        settings: IngestSettings,
        pipeline: IngestPipeline,
        metrics: Metrics,
        is_ready: Callable[[], bool],
        status: Callable[[], StatusDocument] | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        """``keys``: the API keys (the service reads them once for both faces); by default
        those of ``settings``."""
        self._s = settings
        self._status = status
        self._openapi = _encode(openapi_document(settings))
        self._pipeline = pipeline
        self._metrics = metrics
        self._is_ready = is_ready
        self._keys = keys if keys is not None else KeyRing.from_settings(settings, metrics)
        self._door = pipeline.door
        requests = metrics.counter("eventgw_ingest_requests_total", "HTTP requests", ["code"])
        self._requests = requests
        self._by_code = {
            c: requests.labels(str(c))
            for c in (202, 400, 401, 403, 404, 405, 408, 413, 415, 429, 503)
        }
        self._latency = metrics.histogram(
            "eventgw_ingest_request_duration_seconds", "POST /v1/events until durable answer"
        )

    def count_refused(self, status: int) -> None:
        """Count a request the HTTP server refused before the app saw it (400/408/431/503)."""
        counter = self._by_code.get(status)
        if counter is None:
            counter = self._by_code[status] = self._requests.labels(str(status))
        counter.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/v1/events":
            if method == "POST":
                await self._post_events(scope, receive, send)
            else:
                await self._method_not_allowed(send, method, b"POST")
        elif path not in _GET_ROUTES:
            await self._respond(send, 404, error_body("not_found", "path", f"no route {path}"))
        elif method not in ("GET", "HEAD"):  # uvicorn leaves out the body of a HEAD answer
            await self._method_not_allowed(send, method, b"GET, HEAD")
        else:
            await self._get(send, path)

    async def _get(self, send: Send, path: str) -> None:
        if path == "/healthz":
            await self._respond(send, 200, b'{"status":"ok"}', count=False)
        elif path == "/readyz":
            ready = self._is_ready()
            await self._respond(
                send,
                200 if ready else 503,
                b'{"ready":true}' if ready else b'{"ready":false}',
                count=False,
            )
        elif path == "/status":
            if self._status is None:  # an app without admission (unit tests): no document
                await self._respond(send, 404, error_body("not_found", "path", "no status"))
            else:
                await self._respond(send, 200, _encode(self._status()), count=False)
        elif path == "/metrics":
            await self._respond(
                send,
                200,
                self._metrics.render(),
                headers=[(b"content-type", PROMETHEUS_TEXT.encode())],
                count=False,
            )
        elif path == "/openapi.json":
            await self._respond(send, 200, self._openapi, count=False)
        else:  # "/"
            await self._respond(
                send, 200, STATUS_PAGE_HTML, headers=STATUS_PAGE_HEADERS, count=False
            )

    async def _method_not_allowed(self, send: Send, method: str, allow: bytes) -> None:
        await self._respond(
            send,
            405,
            error_body(
                "method_not_allowed", "method", f"{method} not allowed, use {allow.decode()}"
            ),
            headers=[*_JSON, (b"allow", allow)],
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        count: bool = True,
    ) -> None:
        if count and status in self._by_code:
            self._by_code[status].inc()
        await send({"type": "http.response.start", "status": status, "headers": headers or _JSON})
        await send({"type": "http.response.body", "body": body})

    def _check_headers(self, scope: Scope) -> Grant | None:
        """The key's grant (None when no key is required), or raise the refusal."""
        content_type = b""
        auth = b""
        api_key = b""
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"authorization":
                auth = value
            elif name == b"x-api-key":
                api_key = value
            elif name == b"content-length":
                # A length of more than 19 digits is over any limit: not worth converting.
                length = (int(value) if len(value) <= 19 else 1 << 64) if value.isdigit() else -1
        grant = None
        if self._keys.required:
            given = api_key or (auth[7:] if auth[:7].lower() == b"bearer " else b"")
            grant = self._keys.grant_of(given)
            if grant is None:
                raise Unauthenticated(
                    "missing or invalid API key (Authorization: Bearer <key> or X-Api-Key)",
                    field="authorization",
                )
        media = content_type.split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            raise UnsupportedMediaType(
                "content-type", f"must be application/json, got {media.decode(errors='replace')!r}"
            )
        if length > self._s.max_body_bytes:
            raise PayloadTooLarge(
                "body", f"{length} bytes is over the limit of {self._s.max_body_bytes}"
            )
        return grant

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, within ``body_read_timeout_s`` (else `_HttpError` 408).

        The deadline is for the whole body, not between chunks: a client trickling a byte
        a second would otherwise hold its slot in the door for as long as it likes.
        """
        limit = self._s.max_body_bytes
        timeout_s = self._s.body_read_timeout_s
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ConnectionError("client disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge("body", f"over the limit of {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except TimeoutError:
            logger.info(
                "ingest.http_refused status=408 reason=body_timeout received_bytes=%d", size
            )
            raise _HttpError(
                408,
                "request_timeout",
                "body",
                f"the body did not arrive within {timeout_s:g} s ({size} bytes received)",
                close=True,
            ) from None

    async def _post_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self._door
        if door is not None and not door.enter():
            hint_ms = door.retry_after_ms()
            await self._respond(
                send,
                429,
                error_body("resource_exhausted", "requests", "too many requests in flight"),
                headers=[*_JSON, (b"retry-after", _retry_after(hint_ms))],
            )
            return
        try:
            await self._handle_post(scope, receive, send)
        finally:
            if door is not None:
                door.leave()

    async def _handle_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            grant = self._check_headers(scope)
            body = await self._read_body(receive)
            events = decode_http_body(
                body,
                max_events=self._s.max_events_per_request,
                max_payload_bytes=self._s.max_payload_bytes,
            )
        except InvalidEvent as exc:
            self._pipeline.count_invalid()
            code: ErrorCode = (
                "payload_too_large"
                if exc.status == 413
                else ("unsupported_media_type" if exc.status == 415 else "invalid_argument")
            )
            await self._respond(send, exc.status, error_body(code, exc.field, exc.message))
            return
        except Unauthenticated as exc:
            await self._respond(send, 401, error_body("unauthenticated", exc.field, exc.message))
            return
        except _HttpError as exc:
            await self._respond(
                send,
                exc.status,
                error_body(exc.code, exc.field, exc.message),
                headers=_JSON_CLOSE if exc.close else None,
            )
            return
        except ConnectionError:
            return
        try:
            outcome = await self._pipeline.ingest(events, grant)
        except PermissionDenied as exc:
            if grant is not None:
                self._keys.count_denied(grant, exc)
            await self._respond(send, 403, error_body("permission_denied", exc.field, exc.message))
            return
        except InvalidEvent as exc:
            # The publisher refused what ingest accepted: a version skew, not a retry case.
            logger.error("ingest.publisher_refused field=%s error=%s", exc.field, exc.message)
            await self._respond(send, 400, error_body("invalid_argument", exc.field, exc.message))
            return
        except EventGwError as exc:
            logger.warning("ingest.publish_failed events=%d error=%s", len(events), exc)
            await self._respond(
                send,
                503,
                error_body("unavailable", "publisher", f"not durable, retry: {exc}"),
                headers=[*_JSON, (b"retry-after", b"1")],
            )
            return
        body_out = response_body(outcome.request_id, outcome.results, outcome.retry_after_ms)
        if not outcome.all_durable_or_rejected:  # some event is durable nowhere: retry
            await self._respond(send, 503, body_out, headers=[*_JSON, (b"retry-after", b"1")])
        elif outcome.deferred:  # some events were not taken: send those again
            hint = _retry_after(outcome.retry_after_ms)
            await self._respond(send, 429, body_out, headers=[*_JSON, (b"retry-after", hint)])
        else:
            await self._respond(send, 403 if outcome.all_rejected else 202, body_out)
        self._latency.observe(time.perf_counter() - started)


def _retry_after(hint_ms: int) -> bytes:
    """The ``Retry-After`` header value (whole seconds, at least 1) of a hint in ms."""
    return b"%d" % max(1, -(-hint_ms // 1000))
