"""The OpenAPI 3.1 document of ingest's HTTP API, served at ``GET /openapi.json``.

Generated, never written by hand: the schemas come from the structs the app decodes with
(`eventgw.ingest.validation`) and encodes with (`eventgw.ingest.http_bodies`,
`eventgw.ingest.status_doc`) through ``msgspec.json.schema_components``; the limits that are
settings (events per request, API keys) come from the running `IngestSettings`. What an
answer means is docs/delivery-semantics.md; the property-based test
(tests/integration/test_http_api_properties.py) checks the running API against this.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any, Final

import msgspec

from eventgw.ingest.http_bodies import ErrorBody, HttpResponse, Liveness, Readiness
from eventgw.ingest.status_doc import StatusDocument
from eventgw.ingest.validation import EventBatch, HttpEvent

if TYPE_CHECKING:
    from eventgw.config.settings import IngestSettings

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION: Final = "3.1.0"
PROMETHEUS_TEXT: Final = "text/plain; version=0.0.4"
"""The ``Content-Type`` of ``GET /metrics`` (Prometheus text exposition format)."""

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


_RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds, at least 1, before sending again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ERROR = _ref("ErrorBody")
_ANSWER = _ref("HttpResponse")


def openapi_document(settings: IngestSettings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the ingest HTTP API configured by ``settings``.

    Pure: builds a new dict on every call (the app encodes it once, at start).
    """
    _, schemas = msgspec.json.schema_components(
        (HttpEvent, EventBatch, HttpResponse, ErrorBody, Liveness, Readiness, StatusDocument),
        ref_template=_REF,
    )
    _to_ecma_patterns(schemas)
    schemas["EventBatch"]["properties"]["events"]["maxItems"] = settings.max_events_per_request
    post: dict[str, Any] = {
        "operationId": "postEvents",
        "summary": "Send one event or a batch; answered once each event is settled",
        "description": (
            'One event, or `{"events": [...]}` with at most '
            f"{settings.max_events_per_request} events. A body is at most "
            f"{settings.max_body_bytes} bytes and each `payload` (any JSON value, stored as "
            f"given) at most {settings.max_payload_bytes} bytes serialized: beyond, 413. "
            "Any error answer (4xx with an `error` body) means nothing was written for any "
            "event of the request. Meanings: docs/delivery-semantics.md."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [_ref("HttpEvent"), _ref("EventBatch")]},
                }
            },
        },
        "responses": {
            "202": _json(
                _ANSWER,
                "every event is PUBLISHED, FAILED_WRITES, BACKED_UP or REJECTED (gating)",
            ),
            "400": _json(_ERROR, "bad input; `field` names it (`invalid_argument`)"),
            "401": _json(
                _ERROR, "missing or wrong API key (when ingest has keys: docs/security.md)"
            ),
            "403": _json(
                {"oneOf": [_ANSWER, _ERROR]},
                "every event was REJECTED by a gating rule; or (an `error` body, "
                "`permission_denied`) an event is outside the API key's grant: `field` names "
                "it (`events[i].company_id`, `.source_name` or `.class`). Nothing written",
            ),
            "413": _json(_ERROR, "body, a payload or the number of events over its limit"),
            "415": _json(_ERROR, "Content-Type is not application/json"),
            "429": _json(
                {"oneOf": [_ANSWER, _ERROR]},
                "ingest is saturated (the door, docs/flow-control.md): the events marked "
                "DEFERRED were not taken, send them again after `retry_after_ms`; the others "
                "are settled as their status says. An `error` body (`resource_exhausted`): "
                "the request was refused whole",
                headers=_RETRY_AFTER,
            ),
            "503": _json(
                {"oneOf": [_ANSWER, _ERROR]},
                "at least one event is durable nowhere (FAILED), or the publisher could not "
                "be reached (`unavailable`): retry the request with the same event ids",
                headers=_RETRY_AFTER,
            ),
        },
    }
    components: dict[str, Any] = {"schemas": schemas}
    if settings.api_keys or settings.tenant_keys or settings.tenant_keys_file:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        }
        post["security"] = [{"bearer": []}, {"apiKey": []}]

    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": operation_id, "summary": summary, "responses": responses}}

    def text(media_type: str, description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {media_type: {"schema": {"type": "string"}}},
        }

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "eventgw ingest",
            "version": importlib.metadata.version("eventgw"),
            "description": (
                "The HTTP face of eventgw's ingest service: send events, probe health, read "
                "admission status. gRPC (proto/eventgw/v1) carries the same answers."
            ),
        },
        "paths": {
            "/v1/events": {"post": post},
            "/healthz": get(
                "getLiveness", "Liveness", {"200": _json(_ref("Liveness"), "the loop answers")}
            ),
            "/readyz": get(
                "getReadiness",
                "Readiness",
                {
                    "200": _json(_ref("Readiness"), "serving"),
                    "503": _json(_ref("Readiness"), "starting or draining"),
                },
            ),
            "/status": get(
                "getStatus",
                "Admission per class, the door, the alert (hot companies: the admin port)",
                {"200": _json(_ref("StatusDocument"), "this worker's admission state")},
            ),
            "/metrics": get(
                "getMetrics",
                "Prometheus metrics (docs/metrics.md)",
                {"200": text("text/plain", f"Prometheus text format (`{PROMETHEUS_TEXT}`)")},
            ),
            "/openapi.json": get(
                "getOpenApi",
                "This document",
                {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            ),
            "/": get(
                "getStatusPage",
                "The status page: /status, live, in a browser",
                {"200": text("text/html", "a self-contained page (no external resources)")},
            ),
        },
        "components": components,
    }


def _to_ecma_patterns(node: object) -> None:
    """Rewrite Python's end-of-string anchor ``\\Z`` as ``$`` in every ``pattern``.

    The validators use ``\\Z`` because Python's ``$`` also matches before a final newline;
    JSON Schema patterns are ECMA-262, where ``$`` (no multiline flag) already means the end
    and ``\\Z`` is not an anchor at all.
    """
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith("\\Z"):
            node["pattern"] = pattern[:-2] + "$"
        for value in node.values():
            _to_ecma_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _to_ecma_patterns(value)
