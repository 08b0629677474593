"""Both faces with tenant-bound keys (fake publisher): 401 without a key, 403 /
PERMISSION_DENIED naming the field for an event outside the grant, and nothing published,
counted or admitted for a refused request — a mixed request is refused whole."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from pydantic import SecretStr

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.ingest_security import TenantKey, key_digest
from eventgw.config.settings import IngestSettings, TopicSettings
from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.ingest.door import Door
from eventgw.ingest.grpc_api import IngestServicer
from eventgw.ingest.http_app import IngestHttpApp
from eventgw.ingest.pipeline import IngestPipeline
from eventgw.ingest.scheduler import AdmitAll, Scheduler
from eventgw.metrics.backend import Metrics

if TYPE_CHECKING:
    from collections.abc import MutableMapping

KEY = "acme-key-0123456789abcdef"
SETTINGS = IngestSettings(
    tenant_keys=[
        TenantKey(
            tenant="acme",
            key_sha256=SecretStr(key_digest(KEY)),
            company_ids=["acme"],
            source_names=["api", "flow"],
            classes=["P20"],
        )
    ]
)


class Recorder:
    """A publisher that records what reached it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, raw: bytes) -> pb.PublishResponse:
        request = pb.PublishRequest.FromString(raw)
        response = pb.PublishResponse()
        for e in request.events:
            self.events.append(e.company_id)
            response.results.add(event_id=e.event_id, status=pb.PUBLISHED, topic="t")
        return response


def parts() -> tuple[IngestPipeline, Recorder, Door, Metrics]:
    recorder = Recorder()
    metrics = Metrics()
    door = Door(max_in_flight_events=100, max_in_flight_requests=8, monotonic=FakeClock().monotonic)
    pipeline = IngestPipeline(
        classifier=StaticClassifier([ClassRule(Priority.P30, source_name="flow")], Priority.P20),
        scheduler=Scheduler(AdmitAll()),
        publish=recorder,
        topics=TopicSettings(),
        clock=FakeClock(wall_ms=1_700_000_000_000),
        metrics=metrics,
        door=door,
    )
    return pipeline, recorder, door, metrics


async def post(app: IngestHttpApp, events: list[dict[str, str]], **headers: str) -> tuple[int, Any]:
    body = json.dumps({"events": events}).encode()
    scope = {
        "type": "http",
        "path": "/v1/events",
        "method": "POST",
        "headers": [(b"content-type", b"application/json")]
        + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body_msg = sent
    return start["status"], json.loads(body_msg["body"])


def ev(company: str = "acme", source: str = "api") -> dict[str, str]:
    return {"company_id": company, "source_name": source}


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ([ev(), ev("globex")], "events[1].company_id"),
        ([ev(), ev(), ev(source="admin")], "events[2].source_name"),
        ([ev(source="flow")], "events[0].class"),  # flow is P30; the key has P20 only
    ],
)
async def test_http_refuses_a_request_with_an_event_outside_the_grant(
    events: list[dict[str, str]], field: str
) -> None:
    pipeline, recorder, door, metrics = parts()
    app = IngestHttpApp(SETTINGS, pipeline, metrics, lambda: True)
    status, body = await post(app, events, x_api_key=KEY)
    assert status == 403
    assert body["error"]["code"] == "permission_denied"
    assert body["error"]["field"] == field
    assert "tenant 'acme'" in body["error"]["message"]
    assert recorder.events == []  # the allowed events of the request are not written either
    assert door.in_flight_events == 0
    text = metrics.render().decode()
    assert 'eventgw_ingest_requests_total{code="403"} 1.0' in text
    kind = field.rpartition(".")[2]
    assert f'eventgw_ingest_permission_denied_total{{field="{kind}"}} 1.0' in text
    assert 'eventgw_ingest_events_total{status="accepted"} 0.0' in text

    status, body = await post(app, [ev(), ev()], authorization=f"Bearer {KEY}")
    assert status == 202, body
    assert recorder.events == ["acme", "acme"]


async def test_http_without_a_key_or_with_a_wrong_one_is_401() -> None:
    pipeline, recorder, _, metrics = parts()
    app = IngestHttpApp(SETTINGS, pipeline, metrics, lambda: True)
    for headers in ({}, {"x_api_key": KEY + "x"}, {"authorization": "Bearer"}):
        status, body = await post(app, [ev()], **headers)
        assert (status, body["error"]["field"]) == (401, "authorization")
    assert recorder.events == []


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    def __init__(self, key: str | None) -> None:
        self._metadata = (("x-api-key", key),) if key else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        raise Aborted(code, details)


def grpc_request(*events: dict[str, str]) -> bytes:
    raw: bytes = pb.IngestRequest(events=events).SerializeToString()
    return raw


async def test_grpc_refuses_the_same_as_http() -> None:
    pipeline, recorder, door, _ = parts()
    servicer = IngestServicer(SETTINGS, pipeline)
    with pytest.raises(Aborted) as info:
        await servicer.Ingest(grpc_request(ev(), ev("globex")), Context(KEY))
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details.startswith("events[1].company_id: company 'globex' is not granted")
    with pytest.raises(Aborted) as info:
        await servicer.Ingest(grpc_request(ev()), Context(None))
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert recorder.events == []
    assert door.in_flight_events == 0
    raw = await servicer.Ingest(grpc_request(ev()), Context(KEY))
    assert [r.status for r in pb.IngestResponse.FromString(raw).results] == [pb.PUBLISHED]
