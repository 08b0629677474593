"""What ingest answers when not every event is durable (HTTP and gRPC, fake publisher).

"Durable before acknowledged": a 202 / OK only when every event is PUBLISHED, FAILED_WRITES,
BACKED_UP or REJECTED; one FAILED event makes the whole answer 503 / UNAVAILABLE (retry).
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import IngestSettings, TopicSettings
from eventgw.core.classify import StaticClassifier
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.core.errors import InvalidEvent
from eventgw.ingest.grpc_api import IngestServicer
from eventgw.ingest.http_app import IngestHttpApp
from eventgw.ingest.pipeline import IngestPipeline
from eventgw.ingest.publisher_client import PublisherUnavailable
from eventgw.ingest.scheduler import AdmitAll, Scheduler
from eventgw.metrics.backend import Metrics

SETTINGS = IngestSettings()


def publisher(*statuses: int, raises: Exception | None = None):
    """A publish function answering each event of a request with the next status."""

    async def publish(raw: bytes) -> pb.PublishResponse:
        if raises is not None:
            raise raises
        request = pb.PublishRequest.FromString(raw)
        response = pb.PublishResponse()
        for event, status in zip(request.events, statuses, strict=True):
            response.results.add(event_id=event.event_id, status=status, reason="r")  # type: ignore[arg-type]
        return response

    return publish


def pipeline(publish) -> IngestPipeline:
    return IngestPipeline(
        classifier=StaticClassifier([], Priority.P20),
        scheduler=Scheduler(AdmitAll()),
        publish=publish,
        topics=TopicSettings(),
        clock=FakeClock(wall_ms=1_700_000_000_000),
        metrics=Metrics(),
    )


async def post(app: IngestHttpApp, n: int) -> tuple[int, dict[str, bytes], Any]:
    body = json.dumps(
        {"events": [{"company_id": "acme", "source_name": "api"} for _ in range(n)]}
    ).encode()
    scope = {
        "type": "http",
        "path": "/v1/events",
        "method": "POST",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body_msg = sent
    return start["status"], dict(start["headers"]), json.loads(body_msg["body"])


def app(publish) -> IngestHttpApp:
    return IngestHttpApp(SETTINGS, pipeline(publish), Metrics(), lambda: True)


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ((pb.PUBLISHED, pb.FAILED_WRITES, pb.BACKED_UP), 202),
        ((pb.PUBLISHED, pb.REJECTED), 202),
        ((pb.REJECTED, pb.REJECTED), 403),
        ((pb.PUBLISHED, pb.FAILED, pb.PUBLISHED), 503),
    ],
)
async def test_http_status_follows_the_least_durable_event(statuses, code) -> None:
    status, headers, body = await post(app(publisher(*statuses)), len(statuses))
    assert status == code
    assert [e["status"] for e in body["events"]] == [pb.DurabilityStatus.Name(s) for s in statuses]
    if code == 503:
        assert headers[b"retry-after"] == b"1"


async def test_http_publisher_down_is_503_retry() -> None:
    status, headers, body = await post(app(publisher(raises=PublisherUnavailable("down"))), 2)
    assert (status, headers[b"retry-after"]) == (503, b"1")
    assert body["error"]["field"] == "publisher"


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def grpc_request(n: int) -> bytes:
    events = [pb.IngestEvent(company_id="acme", source_name="api") for _ in range(n)]
    return pb.IngestRequest(events=events).SerializeToString()


@pytest.mark.parametrize(
    ("publish", "code"),
    [
        (publisher(pb.PUBLISHED, pb.FAILED), grpc.StatusCode.UNAVAILABLE),
        (publisher(raises=PublisherUnavailable("down")), grpc.StatusCode.UNAVAILABLE),
        (
            publisher(raises=InvalidEvent("events[0].priority", "bad")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_grpc_not_all_durable_or_refused_is_not_ok(publish, code) -> None:
    servicer = IngestServicer(SETTINGS, pipeline(publish))
    with pytest.raises(Aborted) as info:
        await servicer.Ingest(grpc_request(2), Context())  # type: ignore[arg-type]
    assert info.value.code == code


async def test_grpc_all_durable_is_ok() -> None:
    servicer = IngestServicer(SETTINGS, pipeline(publisher(pb.PUBLISHED, pb.BACKED_UP)))
    raw = await servicer.Ingest(grpc_request(2), Context())  # type: ignore[arg-type]
    answer = pb.IngestResponse.FromString(raw)
    assert [r.status for r in answer.results] == [pb.PUBLISHED, pb.BACKED_UP]
