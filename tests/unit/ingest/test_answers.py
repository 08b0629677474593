"""What ingest answers when not every event is durable (HTTP and gRPC, fake publisher).

"Durable before acknowledged": a 202 / OK only when every event is PUBLISHED, FAILED_WRITES,
BACKED_UP or REJECTED; one FAILED event makes the whole answer 503 / UNAVAILABLE (retry).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.admission import HotTenantConfig
from eventgw.config.settings import IngestSettings, TopicSettings
from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.core.errors import InvalidEvent
from eventgw.ingest.door import Door
from eventgw.ingest.grpc_api import RESPONSE_METADATA, RETRY_AFTER_METADATA, IngestServicer
from eventgw.ingest.hot_tenants import DynamicClassifier
from eventgw.ingest.http_app import IngestHttpApp
from eventgw.ingest.pipeline import IngestPipeline, PublishFn
from eventgw.ingest.publisher_client import PublisherUnavailable
from eventgw.ingest.scheduler import AdmitAll, Scheduler
from eventgw.ingest.validation import ValidEvent
from eventgw.metrics.backend import Metrics

if TYPE_CHECKING:
    from collections.abc import MutableMapping

SETTINGS = IngestSettings()


def publisher(*statuses: int, raises: Exception | None = None) -> PublishFn:
    """A publish function answering each event of a request with the next status."""

    async def publish(raw: bytes) -> pb.PublishResponse:
        if raises is not None:
            raise raises
        request = pb.PublishRequest.FromString(raw)
        response = pb.PublishResponse()
        for event, status in zip(request.events, statuses, strict=True):
            response.results.add(event_id=event.event_id, status=status, reason="r")
        return response

    return publish


def pipeline(publish: PublishFn, door: Door | None = None) -> IngestPipeline:
    return IngestPipeline(
        # source "flow" is P30, "bulk" P10, anything else P20
        classifier=StaticClassifier(
            [ClassRule(Priority.P30, source_name="flow"), ClassRule(Priority.P10, "bulk")],
            Priority.P20,
        ),
        scheduler=Scheduler(AdmitAll()),
        publish=publish,
        topics=TopicSettings(),
        clock=FakeClock(wall_ms=1_700_000_000_000),
        metrics=Metrics(),
        door=door,
    )


async def post(
    app: IngestHttpApp, n: int, sources: list[str] | None = None
) -> tuple[int, dict[bytes, bytes], Any]:
    sources = sources or ["api"] * n
    body = json.dumps(
        {"events": [{"company_id": "acme", "source_name": src} for src in sources]}
    ).encode()
    scope = {
        "type": "http",
        "path": "/v1/events",
        "method": "POST",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body_msg = sent
    return start["status"], dict(start["headers"]), json.loads(body_msg["body"])


def app(publish: PublishFn) -> IngestHttpApp:
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
async def test_http_status_follows_the_least_durable_event(
    statuses: tuple[int, ...], code: int
) -> None:
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
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[Any, ...]) -> None:
        super().__init__(details)
        self.code = code
        self.trailing = dict(trailing)


class Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...] = ()
    ) -> None:
        raise Aborted(code, details, trailing_metadata)


def grpc_request(n: int) -> bytes:
    events = [pb.IngestEvent(company_id="acme", source_name="api") for _ in range(n)]
    raw: bytes = pb.IngestRequest(events=events).SerializeToString()
    return raw


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
async def test_grpc_not_all_durable_or_refused_is_not_ok(
    publish: PublishFn, code: grpc.StatusCode
) -> None:
    servicer = IngestServicer(SETTINGS, pipeline(publish))
    with pytest.raises(Aborted) as info:
        await servicer.Ingest(grpc_request(2), Context())
    assert info.value.code == code


async def test_grpc_all_durable_is_ok() -> None:
    servicer = IngestServicer(SETTINGS, pipeline(publisher(pb.PUBLISHED, pb.BACKED_UP)))
    raw = await servicer.Ingest(grpc_request(2), Context())
    answer = pb.IngestResponse.FromString(raw)
    assert [r.status for r in answer.results] == [pb.PUBLISHED, pb.BACKED_UP]


# -- the door: deferred events ------------------------------------------------------------------


def echo_publisher() -> PublishFn:
    """Publishes whatever it is sent."""

    async def publish(raw: bytes) -> pb.PublishResponse:
        request = pb.PublishRequest.FromString(raw)
        response = pb.PublishResponse()
        for event in request.events:
            response.results.add(event_id=event.event_id, status=pb.PUBLISHED, topic="t")
        return response

    return publish


def saturated_door() -> Door:
    """A door with 10 events in flight already (P10's share of 20): P10 is deferred.

    ``hold_s=0``: a request without P30 is deferred at once, not held (test_door.py).
    """
    door = Door(
        max_in_flight_events=20,
        max_in_flight_requests=8,
        monotonic=FakeClock().monotonic,
        hold_s=0,
    )
    door.admit({Priority.P10: 10})
    return door


async def test_http_mixed_batch_takes_p30_and_defers_p10_with_a_hint() -> None:
    door = saturated_door()
    http = IngestHttpApp(SETTINGS, pipeline(echo_publisher(), door), Metrics(), lambda: True)
    sources = ["bulk", "flow", "bulk", "api", "flow"]
    status, headers, body = await post(http, 5, sources)
    assert status == 429, "not a 2xx: a client that ignores statuses resends, never loses"
    assert [e["status"] for e in body["events"]] == [
        "DEFERRED",
        "PUBLISHED",
        "DEFERRED",
        "PUBLISHED",
        "PUBLISHED",
    ]
    assert [e["priority"] for e in body["events"]] == ["P10", "P30", "P10", "P20", "P30"]
    assert body["retry_after_ms"] > 0
    assert headers[b"retry-after"] == b"1"
    assert door.in_flight_events == 10, "the taken events were released once answered"
    assert door.in_flight_requests == 0


async def test_http_nothing_deferred_is_a_plain_202_without_a_hint() -> None:
    door = Door(max_in_flight_events=20, max_in_flight_requests=8, monotonic=FakeClock().monotonic)
    http = IngestHttpApp(SETTINGS, pipeline(echo_publisher(), door), Metrics(), lambda: True)
    status, headers, body = await post(http, 3, ["bulk", "flow", "api"])
    assert status == 202
    assert "retry_after_ms" not in body
    assert b"retry-after" not in headers


async def test_grpc_mixed_batch_defers_p10_in_trailing_metadata() -> None:
    door = saturated_door()
    servicer = IngestServicer(SETTINGS, pipeline(echo_publisher(), door))
    events = [pb.IngestEvent(company_id="acme", source_name=s) for s in ("bulk", "flow", "api")]
    raw = pb.IngestRequest(events=events).SerializeToString()
    with pytest.raises(Aborted) as info:
        await servicer.Ingest(raw, Context())
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    answer = pb.IngestResponse.FromString(info.value.trailing[RESPONSE_METADATA])
    assert [r.status for r in answer.results] == [pb.DEFERRED, pb.PUBLISHED, pb.PUBLISHED]
    assert int(info.value.trailing[RETRY_AFTER_METADATA]) == answer.retry_after_ms > 0
    assert door.in_flight_requests == 0


async def test_grpc_past_the_hard_request_bound_still_takes_p30_and_defers_the_rest() -> None:
    """A gRPC request arrives read: refusing it whole would free nothing, so its P30 goes."""
    door = Door(max_in_flight_events=20, max_in_flight_requests=1, monotonic=FakeClock().monotonic)
    assert door.enter()
    assert door.enter()  # at twice the bound: an HTTP request would be refused whole now
    servicer = IngestServicer(SETTINGS, pipeline(echo_publisher(), door))
    events = [pb.IngestEvent(company_id="acme", source_name=s) for s in ("bulk", "flow", "api")]
    raw = pb.IngestRequest(events=events).SerializeToString()
    with pytest.raises(Aborted) as info:
        await servicer.Ingest(raw, Context())
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    answer = pb.IngestResponse.FromString(info.value.trailing[RESPONSE_METADATA])
    assert [r.status for r in answer.results] == [pb.DEFERRED, pb.PUBLISHED, pb.DEFERRED]
    assert int(info.value.trailing[RETRY_AFTER_METADATA]) > 0
    assert door.statistics().refused_requests == 0
    assert door.in_flight_requests == 2


async def test_a_request_without_p30_waits_for_room_and_is_then_published() -> None:
    door = Door(max_in_flight_events=20, max_in_flight_requests=8, monotonic=FakeClock().monotonic)
    door.admit({Priority.P10: 10})  # P10's share is full
    p = pipeline(echo_publisher(), door)
    task = asyncio.create_task(p.ingest([ValidEvent("acme", "bulk", "", b"{}", None)] * 5))
    await asyncio.sleep(0.01)
    assert not task.done(), "waiting inside ingest, not deferred"
    door.release(10)
    outcome = await task
    assert outcome.deferred == 0
    assert [r[4] for r in outcome.results] == [pb.PUBLISHED] * 5
    assert door.in_flight_events == 0


async def test_deferred_events_are_not_counted_by_the_hot_tenant_tracker() -> None:
    """A deferred event comes back; counted at every try, it made a busy company look hot."""
    clock = FakeClock(wall_ms=1_700_000_000_000)
    config = HotTenantConfig(max_rate_per_company=10.0, window_s=1.0, action="offload")
    p = pipeline(echo_publisher(), saturated_door())
    p._dynamic = DynamicClassifier(config, clock)
    # acme sends 5 P10 events, deferred every time, then 5 P20 events: within its rate.
    for _ in range(5):
        outcome = await p.ingest([ValidEvent("acme", "bulk", "", b"{}", None)] * 5)
        assert outcome.deferred == 5
    outcome = await p.ingest([ValidEvent("acme", "api", "", b"{}", None)] * 5)
    assert outcome.deferred == 0
    assert [r[2] for r in outcome.results] == ["p20"] * 5, "not offloaded as a hot tenant"
    assert p._dynamic.statistics().offloaded_hot == 0, "acme sent 5 events, not 30"
