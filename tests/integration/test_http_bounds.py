"""Bounded everything at the HTTP door: each bound against a real ingest on the real broker.

A slow or greedy client must not hold the door: a body trickled slowly (408, its slot in the
door freed), a request head trickled slowly or never sent (408, closed), too many or too large
headers (431), too many connections (503 with Retry-After), idle kept-alive connections
(closed). Every refusal is the JSON error of every other refusal, names the field, closes the
connection and writes nothing. Raw sockets: an HTTP client library would not misbehave on
purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio

from tests.fixtures.stack import make_settings, topics_and_stack, unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.stack import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

TIMEOUT_S = 1.0  # body, head and keep-alive deadlines of the stack under test
MAX_CONNECTIONS = 6
MAX_HEADERS = 20
MAX_HEAD_BYTES = 4096
BOUNDS = {
    "body_read_timeout_s": TIMEOUT_S,
    "header_read_timeout_s": TIMEOUT_S,
    "keep_alive_timeout_s": TIMEOUT_S,
    "max_http_connections": MAX_CONNECTIONS,
    "max_header_count": MAX_HEADERS,
    "max_header_bytes": MAX_HEAD_BYTES,
    "max_in_flight_requests": 1,  # past 2 requests in flight, the door refuses whole (429)
}
EVENT = b'{"company_id":"acme","source_name":"api","payload":{"n":1}}'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    topics = unique_topics()
    settings = make_settings(
        primary=kafka_broker.bootstrap,
        topics=topics,
        spool_dir=tmp_path_factory.mktemp("spool"),
        ingest=BOUNDS,
    )
    async with topics_and_stack(kafka_broker.bootstrap, settings) as running:
        yield running


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    closed: bool  # the server closed the connection after it


@contextlib.asynccontextmanager
async def connection(stack: RunningStack) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    assert stack.ingest.http_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.ingest.http_port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> Answer:
    """One response; ``closed`` when the server closed the connection right after it."""
    async with asyncio.timeout(timeout_s):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await read_body(reader, headers)
        closed = await _closed(reader)
    return Answer(int(status_line.split()[1]), headers, json.loads(body), closed)


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """A body framed by content-length, or chunked (the app's answers through uvicorn)."""
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    assert headers.get("transfer-encoding") == "chunked", headers
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readexactly(2)
    return body


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(0.5):
            return await reader.read(1) == b""
    except TimeoutError:
        return False


def head(content_length: int | None, *extra: str) -> bytes:
    lines = ["POST /v1/events HTTP/1.1", "host: ingest", "content-type: application/json"]
    if content_length is not None:
        lines.append(f"content-length: {content_length}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_refused(answer: Answer, status: int, code: str, field: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.body["error"]["code"] == code, answer.body
    assert answer.body["error"]["field"] == field, answer.body
    assert answer.body["error"]["message"]
    assert answer.closed, "every refusal here closes the connection"


async def post_ok(stack: RunningStack) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        return await client.post(
            "/v1/events", content=EVENT, headers={"content-type": "application/json"}
        )


def counted(stack: RunningStack, code: int) -> float:
    value = stack.ingest.metrics.registry.get_sample_value(
        "eventgw_ingest_requests_total", {"code": str(code)}
    )
    return value or 0.0


def in_flight_requests(stack: RunningStack) -> int:
    assert stack.ingest.door is not None
    return stack.ingest.door.in_flight_requests


# --- the body -----------------------------------------------------------------------------------


async def test_a_slow_body_answers_408_and_frees_its_slot_in_the_door(stack: RunningStack) -> None:
    """Two requests that send half a body and stall fill the door (max_in_flight_requests=1:
    refused whole past 2); each is answered 408 at the deadline, and the door takes requests
    again."""
    async with connection(stack) as (r1, w1), connection(stack) as (r2, w2):
        for w in (w1, w2):
            w.write(head(len(EVENT)) + EVENT[:20])
            await w.drain()
        async with asyncio.timeout(5):
            while in_flight_requests(stack) < 2:  # noqa: ASYNC110  (the door has no event)
                await asyncio.sleep(0.01)
        refused = await post_ok(stack)
        assert refused.status_code == 429, "the stalled bodies hold the door"
        started = time.monotonic()
        answers = [await read_answer(r1), await read_answer(r2)]
        assert time.monotonic() - started < TIMEOUT_S + 2
        for answer in answers:
            assert_refused(answer, 408, "request_timeout", "body")
        assert counted(stack, 408) >= 2
    assert in_flight_requests(stack) == 0
    ok = await post_ok(stack)
    assert ok.status_code == 202, ok.text


async def test_a_body_trickled_a_byte_at_a_time_is_timed_as_a_whole(stack: RunningStack) -> None:
    async with connection(stack) as (reader, writer):
        writer.write(head(len(EVENT)))
        answer_task = asyncio.create_task(read_answer(reader))
        for byte in EVENT[:-1]:  # every byte well within the deadline; the whole not
            if answer_task.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TIMEOUT_S / 8)
        assert_refused(await answer_task, 408, "request_timeout", "body")


# --- the request head ---------------------------------------------------------------------------


async def test_a_slowly_trickled_request_head_is_answered_408_and_closed(
    stack: RunningStack,
) -> None:
    async with connection(stack) as (reader, writer):
        answer_task = asyncio.create_task(read_answer(reader))
        started = time.monotonic()
        writer.write(b"POST /v1/events HTTP/1.1\r\nhost: ingest\r\n")
        for i in range(50):  # a header every fifth of the deadline, the head never ends
            if answer_task.done():
                break
            writer.write(f"x-slow-{i}: {i}\r\n".encode())
            await writer.drain()
            await asyncio.sleep(TIMEOUT_S / 5)
        assert_refused(await answer_task, 408, "request_timeout", "headers")
        assert time.monotonic() - started < TIMEOUT_S + 2


async def test_a_connection_that_sends_nothing_is_closed(stack: RunningStack) -> None:
    async with connection(stack) as (reader, _):
        answer = await read_answer(reader, timeout_s=TIMEOUT_S + 3)
    assert_refused(answer, 408, "request_timeout", "headers")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([f"x-h-{i}: v" for i in range(MAX_HEADERS + 1)], f"more than {MAX_HEADERS} headers"),
        ([f"x-big: {'v' * MAX_HEAD_BYTES}"], f"over {MAX_HEAD_BYTES} bytes"),
        ([], f"over {MAX_HEAD_BYTES} bytes"),  # the request line: a very long URL
    ],
    ids=["too-many-headers", "one-huge-header", "huge-url"],
)
async def test_too_many_or_too_large_headers_answer_431(
    stack: RunningStack, extra: list[str], message: str
) -> None:
    before = counted(stack, 431)
    request = head(len(EVENT), *extra) + EVENT
    if not extra:
        request = request.replace(b"/v1/events", b"/v1/events?" + b"q" * MAX_HEAD_BYTES, 1)
    async with connection(stack) as (reader, writer):
        writer.write(request)
        await writer.drain()
        answer = await read_answer(reader)
    assert_refused(answer, 431, "request_header_fields_too_large", "headers")
    assert message in answer.body["error"]["message"]
    assert counted(stack, 431) == before + 1


async def test_malformed_http_answers_a_json_400(stack: RunningStack) -> None:
    async with connection(stack) as (reader, writer):
        writer.write(b"POST /v1/events HTTP/1.1\r\ncontent-length: 1e9\r\n\r\n")
        await writer.drain()
        answer = await read_answer(reader)
    assert_refused(answer, 400, "invalid_argument", "request")


# --- connections ----------------------------------------------------------------------------


async def test_past_the_connection_limit_a_request_is_answered_503_and_closed(
    stack: RunningStack,
) -> None:
    async with contextlib.AsyncExitStack() as idle:
        for _ in range(MAX_CONNECTIONS):
            await idle.enter_async_context(connection(stack))
        async with connection(stack) as (reader, writer):
            writer.write(head(len(EVENT)) + EVENT)
            await writer.drain()
            answer = await read_answer(reader)
        assert_refused(answer, 503, "unavailable", "connections")
        assert answer.headers["retry-after"] == "1"
        assert counted(stack, 503) >= 1
    # The idle ones are gone (closed here, or by the head deadline): a request is served.
    async with asyncio.timeout(10):
        while True:
            response = await post_ok(stack)
            if response.status_code != 503:
                break
            await asyncio.sleep(0.1)  # the server may not have seen the closes yet
    assert response.status_code == 202, response.text


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    stack: RunningStack,
) -> None:
    async with connection(stack) as (reader, writer):
        writer.write(head(len(EVENT)) + EVENT)
        await writer.drain()
        async with asyncio.timeout(30):
            first = await reader.readuntil(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 202"), first
            await read_body(reader, {"transfer-encoding": "chunked"})
        started = time.monotonic()
        async with asyncio.timeout(TIMEOUT_S + 3):
            assert await reader.read(1) == b"", "closed by the server"
        assert time.monotonic() - started >= TIMEOUT_S * 0.8
