"""Load generators: a plain confluent-kafka producer, and closed-loop HTTP and gRPC clients.

Every generator runs the same closed loop: ``concurrency`` callers, each sending one batch of
``batch`` events and waiting for its acknowledgement before sending the next, until
``events`` have been acknowledged. A batch is acknowledged when every event in it is durable:
for the raw producer when the last delivery report of the batch arrived, for the gateway when
the 202 / OK came back with every event ``PUBLISHED``.

The clients are built to cost as little CPU as possible, because they share the two cores
with the gateway: request bodies are encoded once and reused (ingest assigns a fresh
``event_id`` to every event it receives), the HTTP client is a keep-alive asyncio protocol
with the httptools parser, and the gRPC clients send pre-serialized bytes.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
import httptools

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.local_credentials import with_local_credentials
from eventgw.config.settings import EventGwSettings
from eventgw.core.envelope import SLO_SECONDS, Priority, event_headers, new_event_id
from eventgw.grpc_auth import bearer_metadata
from eventgw.kafka.jar_cache import default_home

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import confluent_kafka

COMPANY_ID = "acme-bench"  # the read-path benchmark's single company
SOURCE_NAME = "bench"
STATISTIC_KEY = "bench.write_path"
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]
_PUBLISHED_JSON = b'"status":"PUBLISHED"'


@dataclass(frozen=True)
class Workload:
    """How much to send and how: ``events`` in batches of ``batch`` from ``concurrency`` callers."""

    events: int
    batch: int
    concurrency: int
    payload_bytes: int
    # Events come from a pool of ``companies`` companies; each batch carries
    # ``companies_per_batch`` of them (interleaved) and consecutive batches move on through
    # the pool. With one company the gateway's hot-tenant isolation (2,000 events/s per
    # company by default) would rightly offload the flood.
    companies: int = 1000
    companies_per_batch: int = 10

    def __post_init__(self) -> None:
        if self.batch < 1 or self.concurrency < 1:
            raise ValueError(
                f"batch and concurrency must be >= 1, got {self.batch}, {self.concurrency}"
            )
        if not 1 <= self.companies_per_batch <= self.companies:
            raise ValueError(
                f"need 1 <= companies_per_batch ({self.companies_per_batch}) "
                f"<= companies ({self.companies})"
            )
        if self.events < self.batch or self.events % self.batch:
            raise ValueError(f"events ({self.events}) must be a multiple of batch ({self.batch})")
        if self.payload_bytes < 16:
            raise ValueError(f"payload_bytes must be >= 16, got {self.payload_bytes}")

    @property
    def requests(self) -> int:
        """Number of batches."""
        return self.events // self.batch

    @property
    def variants(self) -> int:
        """Distinct batches (by their companies) the generators cycle through."""
        return max(1, self.companies // self.companies_per_batch)

    def batch_companies(self, variant: int) -> list[str]:
        """The company of each event of batch ``variant``, in order."""
        per = self.companies_per_batch
        first = variant * per
        return [company_name((first + j % per) % self.companies) for j in range(self.batch)]


def company_name(n: int) -> str:
    """Company ``n`` of the pool; every name has the same length, so every record does."""
    return f"acme-{n:06d}"


@dataclass
class LoadResult:
    """What one closed-loop run measured."""

    events: int
    elapsed_s: float
    batch_latencies_s: list[float]
    record_latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def payload_json(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes: ``{"data":"xxx…"}``."""
    return b'{"data":"' + b"x" * (size - len(b'{"data":""}')) + b'"}'


def sample_event(payload_bytes: int, company_id: str = COMPANY_ID) -> pb.EventData:
    """The ``EventData`` ingest builds for one benchmark event (same fields, same sizes)."""
    now_ms = time.time_ns() // 1_000_000
    return pb.EventData(
        event_id=new_event_id(),
        company_id=company_id,
        source_name=SOURCE_NAME,
        statistic_key=STATISTIC_KEY,
        payload=payload_json(payload_bytes),
        priority=pb.P20,
        ingested_at_ms=now_ms,
        slo_deadline_ms=now_ms + int(SLO_SECONDS[Priority.P20] * 1000),
        request_id=new_event_id(),
    )


def raw_record(
    payload_bytes: int, company_id: str = COMPANY_ID
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a record the gateway would write for the same event."""
    event = sample_event(payload_bytes, company_id)
    return event.company_id.encode(), event.SerializeToString(), event_headers(event)


class _RawBatch:
    __slots__ = ("remaining", "started")

    def __init__(self, size: int) -> None:
        self.started = time.perf_counter()
        self.remaining = size


def run_raw_producer(
    producer: confluent_kafka.Producer, topic: str, w: Workload, timeout_s: float
) -> LoadResult:
    """Produce ``w.events`` records with ``w.concurrency`` batches of ``w.batch`` in flight.

    Per-record latency is delivery-callback time minus produce time; batch latency is the
    first produce of a batch to its last delivery report. Callbacks run in ``poll`` on this
    thread. Raises TimeoutError after ``timeout_s``.
    """
    by_company = {
        company: raw_record(w.payload_bytes, company)
        for company in {c for v in range(w.variants) for c in w.batch_companies(v)}
    }
    batches = [[by_company[c] for c in w.batch_companies(v)] for v in range(w.variants)]
    clock = time.perf_counter
    record_lat = array("d")
    batch_lat: list[float] = []
    errors: list[str] = []
    finished: list[_RawBatch] = []

    def on_delivery(batch: _RawBatch, produced: float, err: Any, _msg: Any) -> None:
        now = clock()
        record_lat.append(now - produced)
        if err is not None:
            errors.append(str(err))
        batch.remaining -= 1
        if batch.remaining == 0:
            batch_lat.append(now - batch.started)
            finished.append(batch)

    produce = producer.produce

    def launch(n: int) -> None:
        batch = _RawBatch(w.batch)
        for key, value, headers in batches[n % len(batches)]:
            while True:
                try:
                    produce(
                        topic,
                        value,
                        key,
                        headers=headers,  # type: ignore[arg-type]  # list is invariant; bytes values
                        on_delivery=partial(on_delivery, batch, clock()),
                    )
                    break
                except BufferError:
                    producer.poll(0.005)

    started = clock()
    deadline = started + timeout_s
    launched = completed = 0
    while launched < min(w.concurrency, w.requests):
        launch(launched)
        launched += 1
    while completed < w.requests:
        producer.poll(0.05)
        while finished:
            finished.pop()
            completed += 1
            if launched < w.requests:
                launch(launched)
                launched += 1
        if clock() > deadline:
            raise TimeoutError(f"raw producer: {completed}/{w.requests} batches in {timeout_s} s")
    elapsed = clock() - started
    return LoadResult(w.events - len(errors), elapsed, batch_lat, record_lat.tolist(), errors[:5])


async def _closed_loop(
    w: Workload, callers: list[Callable[[int], Awaitable[int]]], timeout_s: float
) -> LoadResult:
    """Run one worker per caller; call ``n`` sends batch ``n`` and returns events PUBLISHED."""
    clock = time.perf_counter
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    confirmed = 0

    async def worker(call: Callable[[int], Awaitable[int]]) -> None:
        nonlocal issued, confirmed
        while issued < w.requests:
            n = issued
            issued += 1
            t0 = clock()
            try:
                ok = await call(n)
            except (OSError, grpc.aio.AioRpcError, ConnectionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append(clock() - t0)
            confirmed += ok
            if ok != w.batch:
                errors.append(f"batch acknowledged {ok}/{w.batch} events as PUBLISHED")

    started = clock()
    async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
        for call in callers:
            tg.create_task(worker(call))
    return LoadResult(confirmed, clock() - started, latencies, errors=errors[:5])


def http_body(w: Workload, variant: int = 0) -> bytes:
    """``{"events": [...]}``: batch ``variant`` of ``w``, no ``event_id`` (ingest assigns one)."""
    payload = payload_json(w.payload_bytes)
    events = [
        b'{"company_id":"%s","source_name":"%s","statistic_key":"%s","payload":%s}'
        % (company.encode(), SOURCE_NAME.encode(), STATISTIC_KEY.encode(), payload)
        for company in w.batch_companies(variant)
    ]
    return b'{"events":[' + b",".join(events) + b"]}"


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``post`` sends a prepared request, one at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP connection

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body, self._body = b"".join(self._body), []
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self._transport is None:
            raise ConnectionError("not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def run_http(port: int, w: Workload, timeout_s: float, client: str = "raw") -> LoadResult:
    """POST batches to ``/v1/events`` over ``w.concurrency`` keep-alive connections."""
    bodies = [http_body(w, v) for v in range(w.variants)]
    if client == "httpx":
        return await _run_httpx(port, w, bodies, timeout_s)
    requests = [
        (
            b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % (port, len(body))
        )
        + body
        for body in bodies
    ]
    loop = asyncio.get_running_loop()
    conns = [
        (await loop.create_connection(_HttpConnection, "127.0.0.1", port))[1]
        for _ in range(w.concurrency)
    ]

    def caller(conn: _HttpConnection) -> Callable[[int], Awaitable[int]]:
        async def call(n: int) -> int:
            status, reply = await conn.post(requests[n % len(requests)])
            if status != 202:
                raise ConnectionError(f"HTTP {status}: {reply[:200]!r}")
            return reply.count(_PUBLISHED_JSON)

        return call

    try:
        return await _closed_loop(w, [caller(c) for c in conns], timeout_s)
    finally:
        for c in conns:
            c.close()


async def _run_httpx(port: int, w: Workload, bodies: list[bytes], timeout_s: float) -> LoadResult:
    import httpx

    limits = httpx.Limits(max_connections=w.concurrency, max_keepalive_connections=w.concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout_s
    ) as client:

        async def call(n: int) -> int:
            body = bodies[n % len(bodies)]
            resp = await client.post("/v1/events", content=body, headers=headers)
            if resp.status_code != 202:
                raise ConnectionError(f"HTTP {resp.status_code}: {resp.content[:200]!r}")
            return resp.content.count(_PUBLISHED_JSON)

        return await _closed_loop(w, [call] * w.concurrency, timeout_s)


async def run_ingest_grpc(port: int, w: Workload, timeout_s: float) -> LoadResult:
    """Call ``eventgw.v1.IngestService/Ingest`` with ``w.batch`` events per call."""
    payload = payload_json(w.payload_bytes)
    requests = [
        pb.IngestRequest(
            events=[
                pb.IngestEvent(
                    company_id=company,
                    source_name=SOURCE_NAME,
                    statistic_key=STATISTIC_KEY,
                    payload_json=payload,
                )
                for company in w.batch_companies(v)
            ]
        ).SerializeToString()
        for v in range(w.variants)
    ]
    return await _grpc_load(
        port, "/eventgw.v1.IngestService/Ingest", requests, pb.IngestResponse, w, timeout_s
    )


async def run_publisher_grpc(port: int, w: Workload, timeout_s: float) -> LoadResult:
    """Call ``eventgw.v1.PrepPublisher/Publish`` directly (ingest skipped), same events."""
    requests = [
        pb.PublishRequest(
            events=[sample_event(w.payload_bytes, c) for c in w.batch_companies(v)]
        ).SerializeToString()
        for v in range(w.variants)
    ]
    # The publisher takes only calls with its token: the local stack's, as the CLI uses.
    settings = with_local_credentials(EventGwSettings(), default_home())
    metadata = bearer_metadata(settings.internal_auth.token_for("publisher"))
    return await _grpc_load(
        port,
        "/eventgw.v1.PrepPublisher/Publish",
        requests,
        pb.PublishResponse,
        w,
        timeout_s,
        metadata,
    )


async def _grpc_load(
    port: int,
    method: str,
    requests: list[bytes],
    response_type: type[pb.IngestResponse] | type[pb.PublishResponse],
    w: Workload,
    timeout_s: float,
    metadata: tuple[tuple[str, str], ...] = (),
) -> LoadResult:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_GRPC_OPTIONS) as channel:
        # No serializer: the request is already bytes, the response is parsed below.
        rpc = channel.unary_unary(method)
        await channel.channel_ready()

        async def call(n: int) -> int:
            reply = response_type.FromString(
                await rpc(requests[n % len(requests)], timeout=timeout_s, metadata=metadata)
            )
            return sum(1 for r in reply.results if r.status == pb.PUBLISHED)

        return await _closed_loop(w, [call] * w.concurrency, timeout_s)
