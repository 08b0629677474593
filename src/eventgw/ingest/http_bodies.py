"""The JSON bodies ingest's HTTP API answers with, as msgspec structs.

``http_app`` encodes these (``POST /v1/events`` through a spliced fast path that writes the
same bytes, `eventgw.ingest.http_app.response_body`), and ``openapi`` documents the API from
the same types, so the document cannot drift from what is sent. Request bodies are the
structs of `eventgw.ingest.validation`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from eventgw.core.envelope import Lane

__all__ = [
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "EventStatus",
    "HttpResponse",
    "HttpResult",
    "Liveness",
    "Readiness",
    "ResultLane",
]

EventStatus = Literal["PUBLISHED", "FAILED_WRITES", "BACKED_UP", "REJECTED", "FAILED", "DEFERRED"]
"""One event's outcome (docs/delivery-semantics.md)."""

ResultLane = Literal[Lane, ""]
"""The lane an event was written to; empty when it was not (DEFERRED)."""

ErrorCode = Literal[
    "invalid_argument",  # 400: bad input, nothing written
    "unauthenticated",  # 401: missing or wrong API key
    "permission_denied",  # 403: an event is outside the key's grant; nothing written
    "not_found",  # 404: no such path
    "method_not_allowed",  # 405: see the Allow header
    "payload_too_large",  # 413: body, payload or event count over its limit
    "unsupported_media_type",  # 415: not application/json
    "request_timeout",  # 408: the head or the body did not arrive in time; connection closed
    "request_header_fields_too_large",  # 431: too many headers, or too many bytes of them
    "resource_exhausted",  # 429: refused whole, too many requests in flight
    "unavailable",  # 503: the publisher failed, nothing acknowledged: retry
]


class HttpResult(msgspec.Struct, omit_defaults=True, gc=False):  # gc=False: only strings
    """One event's answer in the 202/403/429/503 body.

    A DEFERRED event has empty ``lane`` and ``topic``: nothing was written for it.
    """

    event_id: str
    status: EventStatus
    priority: Literal["P30", "P20", "P10"]
    lane: ResultLane
    topic: str
    cluster: Annotated[str, msgspec.Meta(description="the Kafka cluster written to")] = ""
    reason: Annotated[str, msgspec.Meta(description="why, when REJECTED or FAILED")] = ""


class HttpResponse(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Body of an answered ``POST /v1/events``: one result per event, in request order."""

    request_id: str
    retry_after_ms: Annotated[
        int,
        msgspec.Meta(ge=0, description="present with DEFERRED events: send those again after this"),
    ] = 0
    events: list[HttpResult]


class ErrorDetail(msgspec.Struct, frozen=True):
    """What went wrong; ``field`` is the JSON path of the offending input."""

    code: ErrorCode
    field: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answer: nothing was written for any event of the request."""

    error: ErrorDetail


class Liveness(msgspec.Struct, frozen=True):
    """``GET /healthz``: the event loop answers."""

    status: Literal["ok"]


class Readiness(msgspec.Struct, frozen=True):
    """``GET /readyz``: serving (200) or not yet / draining (503)."""

    ready: bool
