"""Routing of the ingest HTTP app: the GET routes, HEAD, 404, and 405 with ``Allow``.

Driven through the ASGI callable itself (no server); the POST answers are in
test_answers.py, the live API against its document in
tests/integration/test_http_api_properties.py.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import pytest

from eventgw.config.settings import IngestSettings, TopicSettings
from eventgw.core.classify import StaticClassifier
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.ingest.http_app import IngestHttpApp
from eventgw.ingest.openapi import openapi_document
from eventgw.ingest.pipeline import IngestPipeline
from eventgw.ingest.scheduler import AdmitAll, Scheduler
from eventgw.ingest.status_page import STATUS_PAGE_HTML
from eventgw.metrics.backend import Metrics

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb

SETTINGS = IngestSettings(max_events_per_request=7)


async def _no_publish(raw: bytes) -> pb.PublishResponse:
    raise AssertionError("routing tests publish nothing")


def _app() -> IngestHttpApp:
    pipeline = IngestPipeline(
        classifier=StaticClassifier([], Priority.P20),
        scheduler=Scheduler(AdmitAll()),
        publish=_no_publish,
        topics=TopicSettings(),
        clock=FakeClock(),
        metrics=Metrics(),
    )
    return IngestHttpApp(SETTINGS, pipeline, Metrics(), lambda: True)


async def call(method: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the ASGI app: (status, headers, body)."""
    scope = {"type": "http", "method": method, "path": path, "headers": []}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await _app()(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/healthz", b"application/json"),
        ("/readyz", b"application/json"),
        ("/metrics", b"text/plain; version=0.0.4"),
        ("/openapi.json", b"application/json"),
        ("/", b"text/html; charset=utf-8"),
    ],
)
async def test_get_routes_answer_get_and_head(method: str, path: str, content_type: bytes) -> None:
    status, headers, _ = await call(method, path)
    assert (status, headers[b"content-type"]) == (200, content_type)


async def test_openapi_json_is_the_document_of_the_settings() -> None:
    _, _, body = await call("GET", "/openapi.json")
    assert json.loads(body) == openapi_document(SETTINGS)


async def test_the_status_page_is_self_contained() -> None:
    """No element loads anything from elsewhere: no CDN, no external script, style or font."""

    class Refs(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.refs: list[str] = []
            self.tags: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.add(tag)
            self.refs += [v or "" for k, v in attrs if k in ("src", "href", "action")]

    _, headers, body = await call("GET", "/")
    assert body == STATUS_PAGE_HTML
    assert b"default-src 'none'" in headers[b"content-security-policy"]
    assert b"connect-src 'self'" in headers[b"content-security-policy"]
    page = Refs()
    page.feed(body.decode())
    assert {"script", "style", "table"} <= page.tags
    # An empty inline icon (no /favicon.ico request), then links to its own routes only.
    assert page.refs == ["data:,", "status", "metrics", "openapi.json"]
    for external in (b"http://", b"https://", b"//cdn", b"@import", b"url("):
        assert external not in body


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/events", b"POST"),
        ("PUT", "/v1/events", b"POST"),
        ("POST", "/healthz", b"GET, HEAD"),
        ("DELETE", "/status", b"GET, HEAD"),
        ("PATCH", "/", b"GET, HEAD"),
        ("OPTIONS", "/openapi.json", b"GET, HEAD"),
    ],
)
async def test_another_method_on_a_known_path_is_405_with_allow(
    method: str, path: str, allow: bytes
) -> None:
    """Found by schemathesis (unsupported_method): 404 for the GET routes, no Allow header."""
    status, headers, body = await call(method, path)
    assert (status, headers[b"allow"]) == (405, allow)
    error = json.loads(body)["error"]
    assert (error["code"], error["field"]) == ("method_not_allowed", "method")
    assert method in error["message"]


async def test_an_unknown_path_is_404_naming_it() -> None:
    status, headers, body = await call("GET", "/nope")
    assert (status, b"allow" in headers) == (404, False)
    assert json.loads(body)["error"] == {
        "code": "not_found",
        "field": "path",
        "message": "no route /nope",
    }


async def test_status_without_a_document_is_404() -> None:
    """An app built without admission (as here) has no /status to show."""
    status, _, body = await call("GET", "/status")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"
