"""Hostile input, generated: a real ingest never crashes, never answers 5xx, writes nothing refused.

Property tests (hypothesis) against one write path on the real broker (publisher + ingest,
`tests/fixtures/stack.py`): HTTP bodies (nested and huge JSON, NaN/Infinity/1e400, invalid
UTF-8, duplicate keys, wrong types, truncations, random bytes), content types and extra
headers; gRPC requests as raw bytes (mutated and random messages, invalid UTF-8 in string
fields) with random metadata. Every answer is a documented one (2xx or a 4xx naming the field,
never a 5xx or a dropped connection), and at the end Kafka holds exactly the events that were
answered PUBLISHED — nothing of any refused request (the approach of test_bad_input.py: read
back every topic of the stack).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from tests.fixtures.stack import make_settings, read_topic, start_stack, unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.stack import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

LIMITS = {"max_body_bytes": 64 << 10, "max_events_per_request": 10, "max_payload_bytes": 1024}
HTTP_ANSWERS = {202, 400, 404, 405, 413, 415, 429, 431}
GRPC_ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
INGEST_METHOD = "/eventgw.v1.IngestService/Ingest"
FUZZ = settings(
    max_examples=300,  # about 3 s per test against the real servers
    deadline=None,  # network round trips; the whole module stays within about a minute
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Events answered PUBLISHED, by event id (a client may send the same id twice).
PUBLISHED: Counter[str] = Counter()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    topics = unique_topics()
    settings_ = make_settings(
        primary=kafka_broker.bootstrap,
        topics=topics,
        spool_dir=tmp_path_factory.mktemp("spool"),
        ingest=LIMITS,
    )
    specs = [TopicSpec(n, topics.partitions) for n in topics.all_topics()]
    await asyncio.to_thread(ensure_topics, kafka_broker.bootstrap, specs)
    try:
        running = await start_stack(settings_)
        try:
            yield running
        finally:
            await running.stop()
    finally:
        await asyncio.to_thread(delete_topics, kafka_broker.bootstrap, topics.all_topics())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(stack: RunningStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ingest_call(stack: RunningStack) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(stack.ingest_grpc) as channel:
        yield channel.unary_unary(
            INGEST_METHOD, request_serializer=None, response_deserializer=None
        )


# --- strategies -----------------------------------------------------------------------------


def mostly(usual: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """``usual`` four times in five, else ``hostile``: enough requests pass to check the
    accept path too (that exactly what was answered PUBLISHED is in Kafka)."""
    return st.integers(min_value=0, max_value=4).flatmap(lambda i: usual if i else hostile)


identities = st.one_of(
    st.sampled_from(
        ["acme", "api", "a" * 129, "", " acme", "ac\x00me", "\u0430cme", "acme\n", "x:y@z/1+2=3"]
    ),
    st.text(max_size=40),
)
valid_ids = st.sampled_from(["acme", "api", "globex", "x:y@z/1+2=3", "A1"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
hostile_values = identities | json_values
events = st.fixed_dictionaries(
    {
        "company_id": mostly(valid_ids, hostile_values),
        "source_name": mostly(valid_ids, hostile_values),
    },
    optional={
        "statistic_key": mostly(st.sampled_from(["", "checkout", "a.b-c"]), hostile_values),
        "payload": json_values,
        "event_id": mostly(st.uuids().map(str), hostile_values),
        "priority": json_values,  # not a field: refused, naming it
    },
)
documents = mostly(
    events | st.fixed_dictionaries({"events": st.lists(events, min_size=1, max_size=4)}),
    st.one_of(
        st.fixed_dictionaries({"events": st.lists(events, max_size=12)}),
        st.fixed_dictionaries({"events": json_values}),
        json_values,
    ),
)
# Byte-level edits applied to a serialized document: (what, where).
EDITS = [
    ("number", b"1e400"),
    ("number", b"-1e400"),
    ("number", b"NaN"),
    ("number", b"Infinity"),
    ("number", b"9" * 5000),
    ("nest", b"[" * 100_000 + b"]" * 100_000),
    ("nest", b'{"a":' * 2000 + b"1" + b"}" * 2000),
    ("bytes", b"\xff"),
    ("bytes", b"\xc3\x28"),
    ("bytes", b"\xed\xa0\x80"),  # a UTF-8-encoded surrogate
    ("bytes", b'"\\udc00"'),
    ("duplicate", b'"company_id":"dup-a","company_id":"dup-b",'),
    ("duplicate", b'"events":[],'),
]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(mostly(st.just("document"), st.sampled_from(["edited", "cut", "random"])))
    if kind == "random":
        return draw(st.binary(max_size=300))
    text = json.dumps(draw(documents)).encode()
    if kind == "cut":
        return text[: draw(st.integers(min_value=0, max_value=len(text)))]
    if kind == "document":
        return text
    what, edit = draw(st.sampled_from(EDITS))
    if what == "duplicate":
        return text.replace(b"{", b"{" + edit, 1) if text.startswith(b"{") else edit + text
    at = draw(st.integers(min_value=0, max_value=len(text)))
    if what != "bytes" and b"null" in text:
        return text.replace(b"null", edit, 1)  # in place of a value: still valid around it
    return text[:at] + edit + text[at:]


content_types = mostly(
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json;charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ]
    )
    # HTTP clients refuse a value with whitespace at either end: the server never sees it.
    | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
        str.strip
    ),
)
header_names = st.from_regex(r"\Ax-[a-z0-9-]{1,20}\Z")
printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# HTTP clients refuse values with whitespace at either end: the server never sees them.
header_values = st.text(alphabet=printable, max_size=200).map(str.strip)


# --- HTTP -----------------------------------------------------------------------------------


async def post(
    client: httpx.AsyncClient, body: bytes, content_type: str | None, extra: dict[str, str]
) -> httpx.Response:
    headers = dict(extra)
    if content_type is not None:
        headers["content-type"] = content_type
    return await client.post("/v1/events", content=body, headers=headers)


def check_http_answer(response: httpx.Response) -> None:
    """A documented answer; PUBLISHED events are remembered for the final Kafka check."""
    assert response.status_code in HTTP_ANSWERS, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    if response.status_code in (202, 429) and "events" in body:
        for event in body["events"]:
            assert event["status"] in ("PUBLISHED", "DEFERRED"), event
            if event["status"] == "PUBLISHED":
                PUBLISHED[event["event_id"]] += 1
        return
    error = body["error"]
    assert error["field"], error
    assert error["message"], error


@FUZZ
@given(
    body=bodies(),
    content_type=st.one_of(st.none(), content_types),
    extra=st.dictionaries(header_names, header_values, max_size=5),
)
async def test_http_any_request_gets_a_documented_answer(
    http: httpx.AsyncClient, body: bytes, content_type: str | None, extra: dict[str, str]
) -> None:
    check_http_answer(await post(http, body, content_type, extra))


# --- gRPC -----------------------------------------------------------------------------------


def string_field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field: lets a test send strings that are not UTF-8."""
    return bytes([number << 3 | 2]) + _varint(len(value)) + value


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


hostile_strings = st.one_of(
    identities.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"ac\xffme", b"\xc3\x28", b"\xed\xa0\x80"]),
)
payloads = mostly(
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.sampled_from([b"1e400", b"NaN", b"[" * 5000 + b"]" * 5000, b"", b"\xff", b'{"a":1,"a":2}'])
    | st.binary(max_size=100),
)


@st.composite
def grpc_event(draw: st.DrawFn) -> bytes:
    ids = valid_ids.map(str.encode)
    fields = [
        (1, draw(mostly(ids, hostile_strings))),
        (2, draw(mostly(ids, hostile_strings))),
        (4, draw(payloads)),
    ]
    if draw(st.booleans()):
        fields.append((5, draw(mostly(st.uuids().map(lambda u: str(u).encode()), hostile_strings))))
    if draw(st.booleans()):
        fields.append((3, draw(mostly(st.just(b"checkout"), hostile_strings))))
    return b"".join(string_field(n, v) for n, v in draw(st.permutations(fields)))


@st.composite
def grpc_requests(draw: st.DrawFn) -> bytes:
    kind = draw(mostly(st.just("fields"), st.sampled_from(["flipped", "random"])))
    if kind == "random":
        return draw(st.binary(max_size=300))
    out = b"".join(string_field(1, e) for e in draw(st.lists(grpc_event(), max_size=12)))
    if kind == "flipped" and out:
        at = draw(st.integers(min_value=0, max_value=len(out) - 1))
        out = out[:at] + bytes([out[at] ^ draw(st.integers(1, 255))]) + out[at + 1 :]
    return out


grpc_metadata = st.lists(
    st.tuples(st.from_regex(r"\Ax-[a-z0-9-]{1,20}\Z"), header_values), max_size=4
)


@FUZZ
@given(request=grpc_requests(), metadata=grpc_metadata)
async def test_grpc_any_request_gets_a_documented_answer(
    ingest_call: Any, request: bytes, metadata: list[tuple[str, str]]
) -> None:
    code, details, raw = await call(ingest_call, request, metadata)
    assert code in GRPC_ANSWERS, (code, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, sep, text = details.partition(": ")
        assert field, details
        assert sep, details
        assert text, details
    for result in pb.IngestResponse.FromString(raw).results:
        assert result.status == pb.PUBLISHED, result
        PUBLISHED[result.event_id] += 1


async def call(
    ingest_call: Any, request: bytes, metadata: list[tuple[str, str]]
) -> tuple[grpc.StatusCode, str, bytes]:
    """(status code, details, answer bytes: empty unless OK)."""
    try:
        raw: bytes = await ingest_call(request, metadata=tuple(metadata), timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", b""
    return grpc.StatusCode.OK, "", raw


# --- nothing refused in Kafka ----------------------------------------------------------------


async def test_kafka_holds_exactly_what_was_answered_published(
    stack: RunningStack, http: httpx.AsyncClient, ingest_call: Any
) -> None:
    """Runs after the property tests (it also sends its own requests, so it checks something
    when run alone): every record in every topic of the stack is an event that was answered
    PUBLISHED, as many times as it was; nothing else anywhere, nothing in the spool."""
    marker = f"control-{uuid.uuid4().hex[:8]}"
    valid = json.dumps({"company_id": marker, "source_name": "api", "event_id": marker})
    for body in (valid.encode(), b'{"company_id":' + b"[" * 50_000, b"\xff" + valid.encode()):
        check_http_answer(await post(http, body, "application/json", {}))
    assert PUBLISHED[marker] == 1, "the valid control event was accepted"
    bad = string_field(1, string_field(1, b"ac\xffme") + string_field(2, b"api"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ingest_call(bad, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    bootstrap = stack.settings.kafka.primary.bootstrap_servers
    topics = stack.settings.topics
    names = topics.all_topics()
    contents = await asyncio.gather(
        *(
            asyncio.to_thread(read_topic, bootstrap, t, expect=None, timeout_s=30, idle_s=1.0)
            for t in names
        )
    )
    in_kafka: Counter[str] = Counter()
    for topic, records in zip(names, contents, strict=True):
        lane = topic in (topics.p30, topics.p20, topics.p10, topics.offload)
        assert lane or not records, f"{len(records)} records in {topic}"
        in_kafka.update(pb.EventData.FromString(r.value).event_id for r in records)
    assert in_kafka == PUBLISHED
    spool = stack.settings.backup.spool_dir
    assert not spool.exists() or not any(p.is_file() for p in spool.rglob("*"))
