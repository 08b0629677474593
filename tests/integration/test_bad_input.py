"""Bad input gets a clear error naming the field and changes nothing (docs/design.md,
"Guarantees").

One write path (publisher + ingest on the real test broker) serves every bad request of
the module; ``test_bad_input_writes_nothing`` sends them all again and then checks that
every topic of that stack is still empty. A second stack with an API key covers auth and
the positive controls (valid events do land, so "empty" is not an artefact of reading).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import confluent_kafka
import grpc
import httpx
import pytest
import pytest_asyncio

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from tests.fixtures.stack import make_settings, read_topic, start_stack, unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from eventgw.core.envelope import Lane
    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.stack import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

MAX_BODY = 64 << 10
MAX_EVENTS = 10
MAX_PAYLOAD = 1024
LIMITS = {
    "max_body_bytes": MAX_BODY,
    "max_events_per_request": MAX_EVENTS,
    "max_payload_bytes": MAX_PAYLOAD,
}
API_KEY = "test-key-" + "0123456789abcdef"
INGEST_METHOD = "/eventgw.v1.IngestService/Ingest"
ERROR_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


# --- stacks ---------------------------------------------------------------------------------


async def _run_stack(
    broker: LocalBroker, tmp: pytest.TempPathFactory, ingest: dict[str, Any]
) -> AsyncIterator[RunningStack]:
    topics = unique_topics()
    settings = make_settings(
        primary=broker.bootstrap, topics=topics, spool_dir=tmp.mktemp("spool"), ingest=ingest
    )
    specs = [TopicSpec(n, topics.partitions) for n in topics.all_topics()]
    await asyncio.to_thread(ensure_topics, broker.bootstrap, specs)
    try:
        stack = await start_stack(settings)
        try:
            yield stack
        finally:
            await stack.stop()
    finally:
        await asyncio.to_thread(delete_topics, broker.bootstrap, topics.all_topics())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    """The stack that only ever receives bad input."""
    async for s in _run_stack(kafka_broker, tmp_path_factory, LIMITS):
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def auth_stack(
    kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    """A stack that requires an API key; valid events are written here."""
    async for s in _run_stack(kafka_broker, tmp_path_factory, {**LIMITS, "api_keys": [API_KEY]}):
        yield s


def topic_size(bootstrap: str, topic: str) -> int:
    """Records ever written to ``topic`` (sum of high watermarks), independent of any group."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"test-size-{uuid.uuid4().hex}"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = meta.topics[topic].partitions
        assert partitions, f"topic {topic} does not exist"
        total = 0
        for p in partitions:
            total += _high_watermark(consumer, topic, p)
        return total
    finally:
        consumer.close()


def _high_watermark(consumer: confluent_kafka.Consumer, topic: str, partition: int) -> int:
    # A partition created moments ago can answer NOT_LEADER until its leadership reaches
    # the broker's metadata cache: retry that one error, a bounded number of times.
    for attempt in range(20):
        try:
            _low, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=10
            )
            return int(high)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError(f"{topic}[{partition}] has no leader after 20 tries")


async def lane_keys(stack: RunningStack, lane: Lane = "p20") -> list[bytes | None]:
    """Keys of every record on a lane topic of ``stack`` (reads exactly what was written)."""
    bootstrap = stack.settings.kafka.primary.bootstrap_servers
    topic = stack.settings.topics.lane_topic(lane)
    n = await asyncio.to_thread(topic_size, bootstrap, topic)
    records = await asyncio.to_thread(read_topic, bootstrap, topic, expect=n)
    assert len(records) == n
    return [r.key for r in records]


# --- HTTP cases -----------------------------------------------------------------------------


def ev(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"company_id": "acme", "source_name": "api", "payload": {"n": 1}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def js(obj: object, *, ascii_only: bool = True) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode()


def batch(n: int, bad_index: int | None = None, prefix: str = "batch", **bad: Any) -> bytes:
    events = [ev(company_id=f"{prefix}-{i}") for i in range(n)]
    if bad_index is not None:
        events[bad_index] = ev(**{"company_id": f"{prefix}-{bad_index}", **bad})
    return js({"events": events})


async def _chunks(total: int, size: int = 8 << 10) -> AsyncIterator[bytes]:
    head = b'{"company_id":"acme","source_name":"api","payload":"'
    yield head
    sent = len(head)
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


@dataclass(frozen=True)
class HttpCase:
    id: str
    status: int
    field: str
    body: bytes | None = b""
    content_type: str | None = "application/json"
    method: str = "POST"
    path: str = "/v1/events"
    chunked_bytes: int = 0  # >0: send that many bytes with Transfer-Encoding: chunked
    # dataclasses.field: the name ``field`` is taken by the attribute above in this body
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


DEEP = b"[" * 10_000 + b"]" * 10_000
HTTP_CASES = [
    HttpCase("malformed-json", 400, "body", b'{"company_id": acme, "source_name": "api"}'),
    HttpCase("truncated-json", 400, "body", js(ev())[:-7]),
    HttpCase("empty-body", 400, "body", b""),
    HttpCase("json-array-body", 400, "body", js([ev(), ev()])),
    HttpCase("json-scalar-body", 400, "body", b"42"),
    HttpCase("content-type-text-plain", 415, "content-type", js(ev()), "text/plain"),
    HttpCase("content-type-missing", 415, "content-type", js(ev()), None),
    HttpCase("content-type-form", 415, "content-type", js(ev()),
             "application/x-www-form-urlencoded"),
    HttpCase("content-type-json-suffix", 415, "content-type", js(ev()), "application/jsonp"),
    HttpCase("missing-company_id", 400, "company_id", js(ev(company_id=...))),
    HttpCase("empty-company_id", 400, "company_id", js(ev(company_id=""))),
    HttpCase("company_id-129-chars", 400, "company_id", js(ev(company_id="a" * 129))),
    HttpCase("company_id-space", 400, "company_id", js(ev(company_id="acme corp"))),
    HttpCase("company_id-leading-space", 400, "company_id", js(ev(company_id=" acme"))),
    HttpCase("company_id-nul", 400, "company_id", js(ev(company_id="ac\x00me"))),
    HttpCase("company_id-escape-char", 400, "company_id", js(ev(company_id="acme\x1b[31m"))),
    HttpCase("company_id-del", 400, "company_id", js(ev(company_id="acme\x7f"))),
    HttpCase("company_id-trailing-newline", 400, "company_id", js(ev(company_id="acme\n"))),
    HttpCase("company_id-cyrillic-escaped", 400, "company_id", js(ev(company_id="\u0430cme"))),
    HttpCase("company_id-cyrillic-utf8", 400, "company_id",
             js(ev(company_id="\u0430cme"), ascii_only=False)),
    HttpCase("company_id-fullwidth", 400, "company_id",
             js(ev(company_id="\uff41\uff43\uff4d\uff45"), ascii_only=False)),
    HttpCase("company_id-zero-width-space", 400, "company_id",
             js(ev(company_id="ac\u200bme"), ascii_only=False)),
    HttpCase("company_id-number", 400, "company_id", js(ev(company_id=12345))),
    HttpCase("company_id-list", 400, "company_id", js(ev(company_id=["acme"]))),
    HttpCase("missing-source_name", 400, "source_name", js(ev(source_name=...))),
    HttpCase("source_name-trailing-newline", 400, "source_name", js(ev(source_name="api\n"))),
    HttpCase("statistic_key-space", 400, "statistic_key", js(ev(statistic_key="a b"))),
    HttpCase("event_id-empty", 400, "event_id", js(ev(event_id=""))),
    HttpCase("payload-over-limit", 413, "payload", js(ev(payload="x" * MAX_PAYLOAD))),
    HttpCase("payload-over-limit-in-batch", 413, "events[1].payload",
             js({"events": [ev(), ev(payload=["y" * 600, "z" * 600])]})),
    HttpCase("body-over-limit-content-length", 413, "body",
             js(ev(payload="x" * (MAX_BODY + 100)))),
    HttpCase("body-over-limit-chunked", 413, "body", None, chunked_bytes=MAX_BODY + (16 << 10)),
    HttpCase("too-many-events", 413, "events", batch(MAX_EVENTS + 1)),
    HttpCase("empty-events", 400, "events", js({"events": []})),
    HttpCase("events-not-a-list", 400, "events", js({"events": ev()})),
    HttpCase("events-a-string", 400, "events", js({"events": "[]"})),
    HttpCase("events-and-single-event", 400, "events", js({**ev(), "events": [ev()]})),
    # Null or empty event fields beside "events", and a null "events" beside one event: the
    # API document allows neither (tests/unit/ingest/test_openapi.py found them accepted).
    HttpCase("events-and-null-event-id", 400, "events", js({"events": [ev()], "event_id": None})),
    HttpCase("events-and-empty-statistic-key", 400, "events",
             js({"events": [ev()], "statistic_key": ""})),
    HttpCase("null-events-beside-an-event", 400, "events", js({**ev(), "events": None})),
    HttpCase("non-utf8-byte-in-body", 400, "body", js(ev())[:-1] + b"\xff}"),
    HttpCase("non-utf8-in-json-string", 400, "body",
             b'{"company_id":"ac\xe9me","source_name":"api"}'),
    HttpCase("non-utf8-in-payload-string", 400, "body",
             b'{"company_id":"acme","source_name":"api","payload":"\xc3\x28"}'),
    HttpCase("lone-surrogate-escape", 400, "body",
             b'{"company_id":"acme","source_name":"api","payload":"\\udc00x"}'),
    HttpCase("deeply-nested-payload", 400, "body",
             b'{"company_id":"acme","source_name":"api","payload":' + DEEP + b"}"),
    HttpCase("unknown-top-level-field", 400, "priority", js(ev(priority="P30"))),
    HttpCase("unknown-field-in-event", 400, "events[2].priority",
             js({"events": [ev(), ev(), ev(priority="P30")]})),
    HttpCase("event-not-an-object", 400, "events[1]", js({"events": [ev(), "acme"]})),
    HttpCase("third-of-five-invalid", 400, "events[2].company_id",
             batch(5, 2, company_id="bad company")),
    HttpCase("third-of-five-missing-source", 400, "events[2].source_name",
             batch(5, 2, source_name=...)),
    HttpCase("get-events", 405, "method", None, None, method="GET"),
    HttpCase("put-events", 405, "method", js(ev()), method="PUT"),
    HttpCase("delete-events", 405, "method", None, None, method="DELETE"),
    HttpCase("unknown-path", 404, "path", js(ev()), path="/v1/event"),
    HttpCase("unknown-version", 404, "path", js(ev()), path="/v2/events"),
    HttpCase("trailing-slash", 404, "path", js(ev()), path="/v1/events/"),
    # 405 with Allow, not 404: the path exists (schemathesis, tests/unit/ingest/test_http_routes.py)
    HttpCase("post-healthz", 405, "method", js(ev()), path="/healthz"),
]  # fmt: skip


async def send_http(client: httpx.AsyncClient, case: HttpCase) -> httpx.Response:
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["content-type"] = case.content_type
    content: bytes | AsyncIterator[bytes] | None = case.body
    if case.chunked_bytes:
        content = _chunks(case.chunked_bytes)
    return await client.request(case.method, case.path, content=content, headers=headers)


def assert_error(resp: httpx.Response, status: int, field_path: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "field", "message"}, error
    assert error["field"] == field_path, error
    assert error["code"] == ERROR_CODES[status], error
    assert isinstance(error["message"], str)
    assert error["message"]


async def check_http_case(client: httpx.AsyncClient, case: HttpCase) -> None:
    resp = await send_http(client, case)
    assert_error(resp, case.status, case.field)


def http_client(stack: RunningStack, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.http_url, timeout=30, headers=headers)


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.id for c in HTTP_CASES])
async def test_http_bad_input_is_refused_naming_the_field(
    stack: RunningStack, case: HttpCase
) -> None:
    async with http_client(stack) as client:
        await check_http_case(client, case)


async def test_http_error_on_a_kept_alive_connection_leaves_it_usable(
    stack: RunningStack,
) -> None:
    async with http_client(stack) as client:
        for case in HTTP_CASES:
            if case.chunked_bytes or case.status == 413:
                continue  # the server may close a connection whose body it did not read
            await check_http_case(client, case)
        resp = await client.get("/healthz")
        assert resp.status_code == 200


# --- gRPC cases -----------------------------------------------------------------------------


def gev(**fields: Any) -> pb.IngestEvent:
    base: dict[str, Any] = {"company_id": "acme", "source_name": "api", "payload_json": b"{}"}
    base.update(fields)
    return pb.IngestEvent(**base)


def gbatch(n: int, bad_index: int | None = None, **bad: Any) -> pb.IngestRequest:
    events = [gev(company_id=f"batch-{i}") for i in range(n)]
    if bad_index is not None:
        events[bad_index] = gev(**{"company_id": f"batch-{bad_index}", **bad})
    return pb.IngestRequest(events=events)


def one(**fields: Any) -> pb.IngestRequest:
    return pb.IngestRequest(events=[gev(**fields)])


GRPC_CASES: list[tuple[str, pb.IngestRequest, str]] = [
    ("empty-request", pb.IngestRequest(), "events"),
    ("too-many-events", gbatch(MAX_EVENTS + 1), "events"),
    ("missing-company_id", one(company_id=""), "events[0].company_id"),
    ("company_id-129-chars", one(company_id="a" * 129), "events[0].company_id"),
    ("company_id-space", one(company_id="acme corp"), "events[0].company_id"),
    ("company_id-control-char", one(company_id="ac\x01me"), "events[0].company_id"),
    ("company_id-trailing-newline", one(company_id="acme\n"), "events[0].company_id"),
    ("company_id-cyrillic", one(company_id="\u0430cme"), "events[0].company_id"),
    ("company_id-zero-width-space", one(company_id="ac\u200bme"), "events[0].company_id"),
    ("missing-source_name", one(source_name=""), "events[0].source_name"),
    ("statistic_key-space", one(statistic_key="a b"), "events[0].statistic_key"),
    ("event_id-space", one(event_id="id 1"), "events[0].event_id"),
    ("payload-malformed", one(payload_json=b'{"a": }'), "events[0].payload_json"),
    ("payload-truncated", one(payload_json=b'{"a": [1, 2'), "events[0].payload_json"),
    ("payload-non-utf8", one(payload_json=b'"\xff\xfe"'), "events[0].payload_json"),
    ("payload-over-limit", one(payload_json=b'"' + b"x" * MAX_PAYLOAD + b'"'),
     "events[0].payload_json"),
    ("payload-deeply-nested", one(payload_json=DEEP), "events[0].payload_json"),
    ("third-of-five-invalid", gbatch(5, 2, company_id="bad company"), "events[2].company_id"),
    ("fifth-of-five-bad-payload", gbatch(5, 4, payload_json=b"nope"), "events[4].payload_json"),
]  # fmt: skip


async def grpc_error(
    target: str, request: pb.IngestRequest, metadata: Iterable[tuple[str, str]] = ()
) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.IngestServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ingest(request, metadata=tuple(metadata), timeout=30)
    return info.value


async def check_grpc_case(target: str, request: pb.IngestRequest, field_path: str) -> None:
    err = await grpc_error(target, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    details = err.details() or ""
    assert details.startswith(f"{field_path}: "), details
    assert len(details) > len(field_path) + 2


@pytest.mark.parametrize(
    ("request_", "field_path"),
    [pytest.param(r, f, id=i) for i, r, f in GRPC_CASES],
)
async def test_grpc_bad_input_is_invalid_argument_naming_the_field(
    stack: RunningStack, request_: pb.IngestRequest, field_path: str
) -> None:
    await check_grpc_case(stack.ingest_grpc, request_, field_path)


def _raw_request_with_non_utf8_company_id() -> bytes:
    """An IngestRequest whose company_id is not UTF-8 (protobuf clients refuse to build it)."""
    cid, src = b"ac\xffme", b"api"
    event = b"\x0a" + bytes([len(cid)]) + cid + b"\x12" + bytes([len(src)]) + src
    return b"\x0a" + bytes([len(event)]) + event


async def send_non_utf8_grpc(stack: RunningStack) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(stack.ingest_grpc) as channel:
        call = channel.unary_unary(
            INGEST_METHOD,
            request_serializer=None,
            response_deserializer=pb.IngestResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(_raw_request_with_non_utf8_company_id(), timeout=30)
    return info.value


async def test_grpc_non_utf8_string_field_is_invalid_argument(stack: RunningStack) -> None:
    err = await send_non_utf8_grpc(stack)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err


async def send_oversized_grpc(stack: RunningStack) -> grpc.aio.AioRpcError:
    """An Ingest request over max_body_bytes (the HTTP body limit holds for gRPC too)."""
    request = pb.IngestRequest(
        events=[gev(company_id="huge", payload_json=b'"' + b"x" * MAX_BODY + b'"')]
    )
    assert request.ByteSize() > MAX_BODY
    return await grpc_error(stack.ingest_grpc, request)


async def test_grpc_request_over_the_body_limit_is_resource_exhausted(stack: RunningStack) -> None:
    err = await send_oversized_grpc(stack)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err


# --- "changes nothing" ----------------------------------------------------------------------


async def test_bad_input_writes_nothing(stack: RunningStack) -> None:
    # Send every bad request again, so this test does not depend on the order tests run in.
    async with http_client(stack) as client:
        for case in HTTP_CASES:
            await check_http_case(client, case)
    for _, request, field_path in GRPC_CASES:
        await check_grpc_case(stack.ingest_grpc, request, field_path)
    await send_non_utf8_grpc(stack)
    await send_oversized_grpc(stack)

    bootstrap = stack.settings.kafka.primary.bootstrap_servers
    topics = stack.settings.topics
    all_topics = topics.all_topics()
    sizes = await asyncio.gather(*(asyncio.to_thread(topic_size, bootstrap, t) for t in all_topics))
    assert dict(zip(all_topics, sizes, strict=True)) == dict.fromkeys(all_topics, 0)
    lanes = [topics.p30, topics.p20, topics.p10, topics.offload, topics.failed_writes]
    read = await asyncio.gather(
        *(asyncio.to_thread(read_topic, bootstrap, t, expect=None) for t in lanes)
    )
    assert dict(zip(lanes, read, strict=True)) == {t: [] for t in lanes}
    spool = stack.settings.backup.spool_dir
    assert not spool.exists() or not any(p.is_file() for p in spool.rglob("*"))


# --- auth, and the positive controls --------------------------------------------------------


async def test_http_api_key(auth_stack: RunningStack) -> None:
    good = js(ev(company_id="auth-ok"))
    bad_body = js(ev(company_id="auth bad"))
    refused: list[tuple[dict[str, str], bytes]] = [
        ({}, good),
        ({"authorization": f"Bearer {API_KEY}x"}, good),
        ({"authorization": f"Bearer {API_KEY[:-1]}"}, good),
        ({"authorization": f"Basic {API_KEY}"}, good),
        ({"authorization": API_KEY}, good),
        ({"authorization": "Bearer"}, good),
        ({"x-api-key": "wrong"}, good),
        ({"x-api-key": ""}, good),
        ({}, bad_body),  # auth is checked before the body: no validation detail leaks
    ]
    async with http_client(auth_stack) as client:
        for headers, body in refused:
            resp = await client.post(
                "/v1/events", content=body, headers={"content-type": "application/json", **headers}
            )
            assert_error(resp, 401, "authorization")
        accepted = [
            {"authorization": f"Bearer {API_KEY}"},
            {"authorization": f"bearer {API_KEY}"},
            {"x-api-key": API_KEY},
        ]
        for headers in accepted:
            resp = await client.post(
                "/v1/events",
                content=good,
                headers={"content-type": "application/json; charset=utf-8", **headers},
            )
            assert resp.status_code == 202, resp.text
            (result,) = resp.json()["events"]
            assert result["status"] == "PUBLISHED"
        # A valid key does not bypass validation.
        resp = await client.post(
            "/v1/events",
            content=bad_body,
            headers={"content-type": "application/json", "x-api-key": API_KEY},
        )
        assert_error(resp, 400, "company_id")
    keys = await lane_keys(auth_stack)
    assert keys.count(b"auth-ok") == len(accepted)
    assert b"auth bad" not in keys


async def test_grpc_api_key(auth_stack: RunningStack) -> None:
    request = one(company_id="grpc-auth-ok")
    for metadata in ([], [("x-api-key", "wrong")], [("x-api-key", API_KEY + "x")]):
        err = await grpc_error(auth_stack.ingest_grpc, request, metadata)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    # Auth is checked before validation.
    err = await grpc_error(auth_stack.ingest_grpc, one(company_id="bad company"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await grpc_error(
        auth_stack.ingest_grpc, one(company_id="bad company"), [("x-api-key", API_KEY)]
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("events[0].company_id: ")

    async with grpc.aio.insecure_channel(auth_stack.ingest_grpc) as channel:
        stub = pb_grpc.IngestServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
        resp = await stub.Ingest(request, metadata=(("x-api-key", API_KEY),), timeout=30)
    assert [r.status for r in resp.results] == [pb.PUBLISHED]
    keys = await lane_keys(auth_stack)
    assert keys.count(b"grpc-auth-ok") == 1


async def test_a_batch_with_one_invalid_event_writes_none_of_it(auth_stack: RunningStack) -> None:
    """Only event #3 of 5 is invalid: none of the 5 is written, over HTTP or gRPC."""
    auth = {"x-api-key": API_KEY}
    async with http_client(auth_stack, **auth) as client:
        resp = await client.post(
            "/v1/events",
            content=batch(5, 2, prefix="partial-http", company_id="bad company"),
            headers={"content-type": "application/json"},
        )
        assert_error(resp, 400, "events[2].company_id")
        resp = await client.post(
            "/v1/events",
            content=batch(5, 2, prefix="partial-http", payload="x" * MAX_PAYLOAD),
            headers={"content-type": "application/json"},
        )
        assert_error(resp, 413, "events[2].payload")
    grpc_bad = pb.IngestRequest(events=[gev(company_id=f"partial-grpc-{i}") for i in range(5)])
    grpc_bad.events[2].company_id = "bad company"
    err = await grpc_error(auth_stack.ingest_grpc, grpc_bad, list(auth.items()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("events[2].company_id: ")

    # The same batch with event #3 fixed is written whole: the refusal was all-or-nothing.
    async with http_client(auth_stack, **auth) as client:
        resp = await client.post(
            "/v1/events",
            content=batch(5, prefix="partial-ok"),
            headers={"content-type": "application/json"},
        )
        assert resp.status_code == 202, resp.text
    keys = {k for k in await lane_keys(auth_stack) if k is not None}
    assert {f"partial-ok-{i}".encode() for i in range(5)} <= keys
    assert not {k for k in keys if k.startswith((b"partial-http", b"partial-grpc"))}
