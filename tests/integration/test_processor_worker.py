"""Processor worker against fake orchestrators: real gRPC ``Work`` streams on loopback.

`FakeOrchestrator` speaks the worker side of docs/dispatch-protocol.md with a queue instead of
a priority buffer: it welcomes a stream, sends queued tasks up to the credit the worker gave,
answers revokes, and records every credit, result and revoke. That makes what the worker
does on the wire observable and exact. The fallback-results test runs against the real
local Kafka; the whole path with the real orchestrator is in test_read_path.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from eventgw.config.settings import (
    EventGwSettings,
    KafkaClusterSettings,
    KafkaSettings,
    OrchestratorSettings,
    ProcessorSettings,
    TopicSettings,
)
from eventgw.core.retry import Backoff
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from eventgw.processor import Command, ProcessorService, Reject, Retry, link
from eventgw.processor.worker import FALLBACK_TIMEOUT_S, WorkerState
from tests.fixtures.credentials import with_stack_credentials
from tests.fixtures.stack import read_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from eventgw.kafka.local_broker import LocalBroker
    from eventgw.processor.handlers import Handler
    from tests.fixtures.kafka import TopicFactory

WORKER_ID = "test-worker"
LEASE_MS = 60_000
P10_RANK = 2_000_000_000_000  # ranks as the orchestrator gives them: deadlines in wall ms
P30_RANK = 1_000_000_000_000


def make_events(
    n: int, *, payload: bytes = b'{"n":1}', prefix: str = "e", priority: int = pb.P20
) -> list[pb.EventData]:
    return [
        pb.EventData(
            event_id=f"{prefix}{i}",
            company_id=f"acme-{i % 3}",
            source_name="api",
            payload=payload,
            priority=priority,  # type: ignore[arg-type]  # pb.Priority values are ints
            attempt=0,
        )
        for i in range(n)
    ]


class FakeOrchestrator:
    """The orchestrator side of ``Work``, over a FIFO queue; records what the worker sends."""

    def __init__(
        self,
        events: Sequence[pb.EventData] = (),
        *,
        index: int = 0,
        rank: int = P10_RANK,
        fleet: str = "",
    ) -> None:
        self.index = index
        self.fleet = fleet  # told in the welcome (a test may change it between streams)
        self.queue: deque[pb.Task] = deque()
        self.leased: dict[str, pb.Task] = {}
        self.results: list[pb.TaskResult] = []
        self.credits: list[int] = []  # every credit message, in order
        self.revokes: list[int] = []
        self.credit = 0
        self.streams = 0
        self.worker_ids: list[str] = []
        self.end_stream = asyncio.Event()  # set: the current stream ends (server side)
        self.welcome_gate = asyncio.Event()  # cleared: the next welcome waits for it
        self.welcome_gate.set()
        self._changed = asyncio.Condition()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._n = 0
        self.add(events, rank=rank)

    def add(self, events: Sequence[pb.EventData], *, rank: int = P10_RANK) -> None:
        for e in events:
            self.queue.append(pb.Task(task_id=f"p/0/{self._n}", event=e, lane="p20", rank=rank))
            self._n += 1
        self._dispatch()

    def _dispatch(self) -> None:
        tasks = []
        while self.queue and self.credit > 0:
            task = self.queue.popleft()
            task.delivery_count += 1
            task.lease_expires_ms = int(time.time() * 1000) + LEASE_MS
            self.leased[task.task_id] = task
            tasks.append(task)
            self.credit -= 1
        if tasks:
            self._outbox.put_nowait(
                pb.TaskBatch(
                    tasks=tasks, orchestrator_index=self.index, backlog=len(self.queue)
                ).SerializeToString()
            )
        elif self.queue:
            self.hint()

    def hint(self) -> None:
        self._outbox.put_nowait(
            pb.TaskBatch(orchestrator_index=self.index, backlog=len(self.queue)).SerializeToString()
        )

    async def Work(self, context: Any) -> None:
        first = await context.read()
        self.streams += 1
        self.worker_ids.append(first.worker_id)
        self.end_stream.clear()
        self._outbox = asyncio.Queue()
        self.credit = 0

        async def welcome() -> None:
            await self.welcome_gate.wait()
            self._outbox.put_nowait(
                pb.TaskBatch(
                    orchestrator_index=self.index, backlog=len(self.queue), fleet=self.fleet
                ).SerializeToString()
            )

        async def write() -> None:
            while True:
                await context.write(await self._outbox.get())

        async with asyncio.TaskGroup() as tg:
            welcomer = tg.create_task(welcome())
            writer = tg.create_task(write())
            reader = tg.create_task(self._read(context, first))
            ender = tg.create_task(self.end_stream.wait())
            await asyncio.wait({reader, ender}, return_when=asyncio.FIRST_COMPLETED)
            for t in (welcomer, writer, reader, ender):
                t.cancel()
        # The stream is over: what it held comes back (the real orchestrator's rule).
        for task in self.leased.values():
            self.queue.appendleft(task)
        self.leased.clear()
        self.credit = 0

    async def _read(self, context: Any, first: pb.WorkRequest) -> None:
        request = first
        while request is not grpc.aio.EOF:
            await self.apply(request)
            request = await context.read()

    async def apply(self, request: pb.WorkRequest) -> None:
        for task_id in request.acked:  # the compact form of a plain ACK
            task = self.leased.pop(task_id, None)
            count = task.delivery_count if task is not None else 0
            self.results.append(pb.TaskResult(task_id=task_id, kind=pb.ACK, delivery_count=count))
        for r in request.results:
            task = self.leased.pop(r.task_id, None)
            self.results.append(r)
            if task is not None and r.kind == pb.RELEASE:
                task.delivery_count -= 1
                self.queue.append(task)
        if request.revoke:
            self.revokes.append(request.revoke)
            taken = min(request.revoke, self.credit)
            self.credit -= taken
            self._outbox.put_nowait(
                pb.TaskBatch(
                    orchestrator_index=self.index, backlog=len(self.queue), credit_returned=taken
                ).SerializeToString()
            )
        if request.credit:
            self.credits.append(request.credit)
            self.credit += request.credit
            self._dispatch()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Any, timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_results(self, n: int, timeout_s: float = 15.0) -> list[pb.TaskResult]:
        await self.wait_for(lambda: len(self.results) >= n, timeout_s)
        return self.results

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            name = pb.ResultKind.Name(r.kind)
            out[name] = out.get(name, 0) + 1
        return out


@contextlib.asynccontextmanager
async def serving(
    fake: FakeOrchestrator, port: int = 0, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    server = grpc.aio.server()

    async def work(request_iterator: Any, context: Any) -> None:
        await fake.Work(context)

    handler = grpc.stream_stream_rpc_method_handler(
        work, request_deserializer=pb.WorkRequest.FromString, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("eventgw.v1.Orchestrator", {"Work": handler}),)
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    try:
        yield f"{host}:{bound}"
    finally:
        await server.stop(0)


def make_settings(
    *orchestrators: str, bootstrap: str = "127.0.0.1:9", response: str = "resp", **processor: Any
) -> EventGwSettings:
    p: dict[str, Any] = {
        "orchestrators": list(orchestrators),
        "metrics_port": 0,
        "concurrency": 8,
        "shutdown_timeout_s": 5.0,
    }
    p.update(processor)
    settings = EventGwSettings(
        kafka=KafkaSettings(primary=KafkaClusterSettings(bootstrap_servers=bootstrap)),
        topics=TopicSettings(response=response),
        processor=ProcessorSettings(**p),
    )
    return with_stack_credentials(settings)


def make_service(
    settings: EventGwSettings, handler: Handler | str, **kwargs: Any
) -> ProcessorService:
    return ProcessorService(settings, handler, worker_id=WORKER_ID, **kwargs)


async def run_to_end(service: ProcessorService, timeout_s: float = 15.0) -> None:
    """Run a service that ends by itself (max_tasks)."""
    async with asyncio.timeout(timeout_s):
        await service.run(asyncio.Event(), asyncio.Event())


class Recorder:
    """A handler that records the events it saw and raises per event id."""

    def __init__(self, raises: dict[str, Exception] | None = None) -> None:
        self.seen: list[str] = []
        self.raises = raises or {}

    async def __call__(self, event: pb.EventData) -> None:
        self.seen.append(event.event_id)
        exc = self.raises.get(event.event_id)
        if exc is not None:
            raise exc


class GatedHandler:
    """Records each event it starts, sets ``running`` once ``n`` started, waits for ``gate``."""

    def __init__(self, running: int) -> None:
        self.n = running
        self.gate = asyncio.Event()
        self.running = asyncio.Event()
        self.started: list[str] = []
        self.active = 0

    async def __call__(self, event: pb.EventData) -> None:
        self.started.append(event.event_id)
        self.active += 1
        if len(self.started) == self.n:
            self.running.set()
        try:
            await self.gate.wait()
        finally:
            self.active -= 1


# --- (1) results over the stream --------------------------------------------------------


async def test_every_task_is_handled_once_and_acked_over_the_stream() -> None:
    fake = FakeOrchestrator(make_events(20), index=2)
    handler = Recorder()
    async with serving(fake) as addr:
        service = make_service(make_settings(addr, max_tasks=20), handler)
        await run_to_end(service)

    assert sorted(handler.seen) == sorted(f"e{i}" for i in range(20))
    assert fake.kinds() == {"ACK": 20}
    assert fake.worker_ids == [WORKER_ID]
    assert not fake.leased
    assert not fake.queue
    assert {r.delivery_count for r in fake.results} == {1}
    assert {r.task_id for r in fake.results} == {f"p/0/{i}" for i in range(20)}
    assert sum(fake.credits) <= 20, "max_tasks bounds the credit"
    assert service.tasks_handled == 20
    stats = service.statistics()
    assert stats is not None
    assert (stats.state, stats.tasks_received, stats.results["ack"]) == (
        WorkerState.STOPPED,
        20,
        20,
    )
    text = service.metrics.render().decode()
    assert 'eventgw_processor_tasks_total{result="ack"} 20.0' in text
    assert "eventgw_processor_tasks_received_total 20.0" in text
    assert "eventgw_processor_handler_duration_seconds_count 20.0" in text


# --- (2) outcome mapping ----------------------------------------------------------------


async def test_retry_reject_and_crash_map_to_their_results() -> None:
    fake = FakeOrchestrator(make_events(4))
    handler = Recorder(
        {
            "e1": Retry(delay=3, reason="downstream busy"),
            "e2": Reject("not an order"),
            "e3": KeyError("order_id"),
        }
    )
    async with serving(fake) as addr:
        await run_to_end(make_service(make_settings(addr, max_tasks=4), handler))

    by_id = {r.task_id: r for r in fake.results}
    assert (by_id["p/0/0"].kind, by_id["p/0/0"].error) == (pb.ACK, "")
    assert (by_id["p/0/1"].kind, by_id["p/0/1"].delay_ms, by_id["p/0/1"].error) == (
        pb.NACK,
        3000,
        "downstream busy",
    )
    assert (by_id["p/0/2"].kind, by_id["p/0/2"].error) == (pb.REJECT, "not an order")
    assert (by_id["p/0/3"].kind, by_id["p/0/3"].delay_ms, by_id["p/0/3"].error) == (
        pb.NACK,
        0,
        "KeyError: 'order_id'",
    )


# --- (3) bounded concurrency and credit -------------------------------------------------


async def test_concurrent_handler_calls_never_exceed_concurrency() -> None:
    concurrency = 3
    running = 0
    peak = 0
    saturated = asyncio.Event()

    async def handler(event: pb.EventData) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == concurrency:
            saturated.set()
        try:
            # Hold every slot until the bound is reached: proves both that tasks run
            # concurrently and that they never go past the bound.
            await saturated.wait()
            await asyncio.sleep(0)
        finally:
            running -= 1

    fake = FakeOrchestrator(make_events(12))
    async with serving(fake) as addr:
        settings = make_settings(addr, concurrency=concurrency, max_tasks=12)
        await run_to_end(make_service(settings, handler))

    assert peak == concurrency
    assert fake.kinds() == {"ACK": 12}


async def test_worker_holds_at_most_concurrency_plus_prefetch() -> None:
    """While every handler blocks, the credit given equals concurrency + prefetch, no more."""
    handler = GatedHandler(running=4)
    fake = FakeOrchestrator(make_events(50))
    stop = asyncio.Event()
    async with serving(fake) as addr:
        settings = make_settings(addr, concurrency=4, prefetch_window_ms=10)
        service = make_service(settings, handler)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await handler.running.wait()
            # Before any handler finished, one is assumed to take the window: prefetch = 4.
            await fake.wait_for(lambda: len(fake.leased) >= 8)
            await asyncio.sleep(0.2)  # time for a (wrong) extra grant to show up
            assert len(fake.leased) == 8
            assert sum(fake.credits) == 8
            stats = service.statistics()
            assert stats is not None
            assert (stats.running, stats.queued, stats.prefetch) == (4, 4, 4)
            stop.set()
            handler.gate.set()
    assert fake.kinds() == {"ACK": 4, "RELEASE": 4}


async def test_prefetch_follows_the_handlers_speed() -> None:
    """50 ms handlers, window 10 ms, concurrency 10: prefetch becomes ceil(10 x 10/50) = 2."""

    async def slow(event: pb.EventData) -> None:
        await asyncio.sleep(0.05)

    fake = FakeOrchestrator(make_events(200))
    stop = asyncio.Event()
    async with serving(fake) as addr:
        settings = make_settings(addr, concurrency=10, prefetch_window_ms=10)
        service = make_service(settings, slow)
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await fake.wait_for(lambda: len(fake.results) >= 120)
            stats = service.statistics()
            assert stats is not None
            assert stats.prefetch == 2
            # Held unstarted: never more than the prefetch plus one grant's rounding.
            assert len(fake.leased) <= 10 + 2 + 3
            stop.set()


async def received(service: ProcessorService, n: int) -> None:
    """Wait until the worker has received ``n`` tasks (its counters: nothing to await)."""
    async with asyncio.timeout(10):
        while (stats := service.statistics()) is None or stats.tasks_received < n:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class PerEventGates:
    """A handler whose every event waits for its own gate; records the start order."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.changed = asyncio.Event()

    def gate(self, event_id: str) -> asyncio.Event:
        return self.gates.setdefault(event_id, asyncio.Event())

    async def __call__(self, event: pb.EventData) -> None:
        self.started.append(event.event_id)
        self.changed.set()
        await self.gate(event.event_id).wait()

    async def wait_started(self, n: int) -> None:
        async with asyncio.timeout(10):
            while len(self.started) < n:
                self.changed.clear()
                await self.changed.wait()


async def test_an_urgent_task_overtakes_prefetched_work_at_the_next_free_slot() -> None:
    """Slots full of P10, P10 prefetched: a P30 that arrives starts at the next free slot."""
    handler = PerEventGates()
    fake = FakeOrchestrator(make_events(2, prefix="p10-"), rank=P10_RANK)
    stop = asyncio.Event()
    async with serving(fake) as addr:
        # concurrency 2 + prefetch 2: the worker holds 4.
        settings = make_settings(addr, concurrency=2, max_prefetch=2)
        service = make_service(settings, handler)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await handler.wait_started(2)
            fake.add([make_events(4, prefix="p10-")[i] for i in (2, 3)], rank=P10_RANK)
            await fake.wait_for(lambda: len(fake.leased) == 4)  # two prefetched P10
            fake.add(make_events(1, prefix="p30-", priority=pb.P30), rank=P30_RANK)
            handler.gate("p10-0").set()  # a slot frees: p10-2 starts, its credit brings the P30
            await handler.wait_started(3)
            await received(service, 5)
            handler.gate("p10-1").set()  # the next slot frees: the P30 goes before p10-3
            await handler.wait_started(4)
            for gate in ("p10-2", "p10-3", "p30-0"):
                handler.gate(gate).set()
            await fake.wait_for(lambda: len(fake.results) == 5)
            stop.set()
    assert handler.started == ["p10-0", "p10-1", "p10-2", "p30-0", "p10-3"]


# --- (4) dry run ------------------------------------------------------------------------


async def test_dry_run_shows_and_releases_without_calling_the_handler() -> None:
    async def must_not_run(event: pb.EventData) -> None:
        raise AssertionError("the handler ran in a dry run")

    payload = b'{"k":"' + b"x" * 300 + b'"}'
    fake = FakeOrchestrator(make_events(3, payload=payload))
    lines: list[str] = []
    async with serving(fake) as addr:
        settings = make_settings(addr, execute=False, max_tasks=3)
        service = make_service(settings, must_not_run, show=lines.append)
        await run_to_end(service)

    assert fake.kinds() == {"RELEASE": 3}
    assert [r.delivery_count for r in fake.results] == [1, 1, 1]  # as served, untouched
    assert [t.event.attempt for t in fake.queue] == [0, 0, 0]  # released: no attempt counted
    assert len(fake.queue) == 3  # all back in the queue to be served again
    assert service.tasks_handled == 3
    assert len(lines) == 3, "held until the end: no task shown twice"
    line = lines[0]
    for part in ("event_id=e0", "class=P20", "lane=p20", "company=acme-0", "delivery_count=1"):
        assert part in line
    assert "\n" not in line
    assert f"(+{len(payload) - 200} bytes)" in line  # cut to 200 bytes
    assert "x" * 194 in line
    assert "x" * 195 not in line


# --- (5) results a stream could not take (real Kafka) -----------------------------------


@pytest.fixture
def quick_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Results of a lost stream go to the response topic after 1 s, not `FALLBACK_AFTER_S`.

    These tests prove where such results land; how long they first wait for their
    orchestrator to come back does not change that, and 10 s of it per test was waiting.
    """
    assert link.FALLBACK_AFTER_S > 1.0
    monkeypatch.setattr(link, "FALLBACK_AFTER_S", 1.0)


@pytest.mark.kafka
@pytest.mark.usefixtures("quick_fallback")
async def test_results_of_a_lost_stream_go_to_the_response_topic(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    """The orchestrator goes away while handlers run: results land on partition = its index."""
    response = new_topic(partitions=2)
    handler = GatedHandler(running=3)
    fake = FakeOrchestrator(make_events(3), index=1)
    stop = asyncio.Event()
    settings_for: dict[str, EventGwSettings] = {}
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        async with serving(fake) as addr:
            settings_for["s"] = make_settings(
                addr, bootstrap=kafka_broker.bootstrap, response=response, concurrency=3
            )
            service = make_service(settings_for["s"], handler)
            tg.create_task(service.run(asyncio.Event(), stop))
            await handler.running.wait()
        # The server is gone (as in a crash): the worker cannot reconnect.
        handler.gate.set()
        records = await asyncio.to_thread(read_topic, kafka_broker.bootstrap, response, expect=1)
        stop.set()

    assert records[0].partition == 1
    assert records[0].key == WORKER_ID.encode()
    results = [r for record in records for r in pb.TaskResults.FromString(record.value).results]
    assert sorted(r.task_id for r in results) == ["p/0/0", "p/0/1", "p/0/2"]
    assert {(r.kind, r.orchestrator_index, r.worker_id) for r in results} == {
        (pb.ACK, 1, WORKER_ID)
    }
    assert {r.event_id for r in results} == {"e0", "e1", "e2"}
    stats = service.statistics()
    assert stats is not None
    assert stats.report_fallbacks >= 1
    assert stats.results_lost == 0


async def test_unstarted_tasks_of_an_ended_stream_are_dropped_not_run() -> None:
    """The orchestrator returned those leases when the stream ended: running them is waste."""
    handler = GatedHandler(running=2)
    fake = FakeOrchestrator(make_events(10))
    stop = asyncio.Event()
    async with serving(fake) as addr:
        settings = make_settings(addr, concurrency=2, max_prefetch=2)
        service = make_service(settings, handler)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await handler.running.wait()
            await fake.wait_for(lambda: len(fake.leased) == 4)
            fake.end_stream.set()
            await fake.wait_for(lambda: fake.streams == 2)  # it reconnects at once
            handler.gate.set()
            await fake.wait_for(
                lambda: len({r.task_id for r in fake.results if r.kind == pb.ACK}) >= 10
            )
            stop.set()
    stats = service.statistics()
    assert stats is not None
    assert stats.dropped == 2
    counts = {e: handler.started.count(e) for e in set(handler.started)}
    assert sorted(counts) == [f"e{i}" for i in range(10)]
    # e0 and e1 were running when the stream ended: their leases came back and they ran
    # again (at-least-once); the two prefetched ones were dropped, so they ran once.
    assert counts["e2"] == counts["e3"] == 1
    assert counts["e0"] == counts["e1"] == 2


# --- (6) shutdown -----------------------------------------------------------------------


async def test_stop_drains_running_and_releases_unstarted() -> None:
    handler = GatedHandler(running=2)
    fake = FakeOrchestrator(make_events(6))
    stop = asyncio.Event()
    async with serving(fake) as addr:
        service = make_service(make_settings(addr, concurrency=2), handler)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await handler.running.wait()
            await fake.wait_for(lambda: len(fake.leased) == 4)  # 2 running + 2 prefetched
            stop.set()
            handler.gate.set()  # the two running handlers finish within the drain

    assert handler.started == ["e0", "e1"]
    by_id = {r.task_id: r.kind for r in fake.results}
    assert by_id == {
        "p/0/0": pb.ACK,
        "p/0/1": pb.ACK,
        "p/0/2": pb.RELEASE,
        "p/0/3": pb.RELEASE,
    }
    assert len(fake.results) == 4, "one result per task"
    assert sorted(t.task_id for t in fake.queue) == ["p/0/2", "p/0/3", "p/0/4", "p/0/5"]
    assert service.tasks_handled == 2


async def test_handlers_past_the_shutdown_timeout_are_cancelled_and_released() -> None:
    cancelled: list[str] = []
    running = asyncio.Event()

    async def stuck(event: pb.EventData) -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(event.event_id)
            raise

    fake = FakeOrchestrator(make_events(3))
    stop = asyncio.Event()
    async with serving(fake) as addr:
        settings = make_settings(addr, concurrency=2, shutdown_timeout_s=0.2, max_prefetch=1)
        service = make_service(settings, stuck)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await running.wait()
            await fake.wait_for(lambda: len(fake.leased) == 3)
            stop.set()

    assert sorted(cancelled) == ["e0", "e1"]
    assert fake.kinds() == {"RELEASE": 3}
    assert service.tasks_handled == 0


# --- (7) orchestrator down, then up; several orchestrators -------------------------------


class RecordingBackoff(Backoff):
    """Short delays; records each back-off and signals after ``signal_after`` of them."""

    def __init__(self, signal_after: int) -> None:
        super().__init__(initial_s=0.02, max_s=0.2)
        self.attempts: list[int] = []
        self.backed_off = asyncio.Event()
        self._signal_after = signal_after

    def delay_s(self, attempt: int) -> float:
        self.attempts.append(attempt)
        if len(self.attempts) >= self._signal_after:
            self.backed_off.set()
        return super().delay_s(attempt)


async def test_worker_backs_off_while_the_orchestrator_is_down_and_recovers() -> None:
    port = free_port()
    backoff = RecordingBackoff(signal_after=3)
    fake = FakeOrchestrator(make_events(5))
    stop = asyncio.Event()
    service = make_service(make_settings(f"127.0.0.1:{port}"), Recorder(), backoff=backoff)
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(service.run(asyncio.Event(), stop))
        await backoff.backed_off.wait()  # nothing listens yet: streams fail, the worker waits
        async with serving(fake, port):
            started = time.monotonic()
            await fake.wait_results(5)
            resumed_s = time.monotonic() - started
            stop.set()

    assert backoff.attempts[:3] == [0, 1, 2]  # growing back-off while down
    assert fake.kinds() == {"ACK": 5}
    assert resumed_s < 1.5, f"traffic resumed {resumed_s:.2f}s after the orchestrator came up"
    stats = service.statistics()
    assert stats is not None
    assert stats.connect_failures >= 3


async def test_credit_moves_to_the_orchestrator_with_a_backlog() -> None:
    """Two orchestrators: credit parked at the idle one is revoked for the one with work."""
    first = FakeOrchestrator(index=0)
    second = FakeOrchestrator(index=1)
    handler = Recorder()
    stop = asyncio.Event()
    async with serving(first) as a, serving(second) as b:
        settings = make_settings(a, b, concurrency=4, max_prefetch=4)
        service = make_service(settings, handler)
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await first.wait_for(lambda: first.streams == 1)
            await second.wait_for(lambda: second.streams == 1)
            # Whichever connected first holds the idle credit; work goes to both in turn.
            first.add(make_events(200, prefix="a"))
            await first.wait_for(lambda: len(first.results) >= 200)
            second.add(make_events(200, prefix="b"))
            await second.wait_for(lambda: len(second.results) >= 200)
            first.add(make_events(20, prefix="c"))
            await first.wait_for(lambda: len(first.results) >= 220)
            stop.set()
    assert first.kinds() == {"ACK": 220}
    assert second.kinds() == {"ACK": 200}
    assert first.revokes, "its parked credit was taken back for the other"
    assert second.revokes, "its parked credit was taken back for the other"
    assert sorted(handler.seen) == sorted(
        [f"a{i}" for i in range(200)] + [f"b{i}" for i in range(200)] + [f"c{i}" for i in range(20)]
    )


def test_backoff_is_exponential_jittered_and_capped() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    for attempt, base in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (50, 1.0)]:
        delays = [backoff.delay_s(attempt) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0)


# --- (8) Command ------------------------------------------------------------------------


class ThreadedOrchestrator:
    """A fake orchestrator on its own loop in a thread, for the synchronous Command API."""

    def __init__(self, events: list[pb.EventData]) -> None:
        self.events = events
        self.fake: FakeOrchestrator | None = None
        self.addr = ""
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.fake = FakeOrchestrator(self.events)
        async with serving(self.fake) as addr:
            self.addr = addr
            self._started.set()
            await self._stop.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("fake orchestrator did not start")
        try:
            yield self.addr
        finally:
            assert self._loop is not None
            assert self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)


def test_command_dry_run_returns_after_max_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    orchestrator = ThreadedOrchestrator(make_events(8))
    base = make_settings("unused:1")
    command = Command(base)
    with orchestrator.running() as addr:
        handled = command.run(
            execute=False,
            max_tasks=5,
            kafka_bootstrap_servers="127.0.0.1:1",
            orchestrator_host=addr,
            statsd_root="eventgw.processor",
        )

    assert handled == 5
    assert orchestrator.fake is not None
    assert orchestrator.fake.kinds() == {"RELEASE": 5}
    assert command.statsd_root == "eventgw.processor"
    assert command.service is not None
    s = command.service.settings
    assert s.observability.statsd_root == "eventgw.processor"
    assert s.kafka.primary.bootstrap_servers == "127.0.0.1:1"
    assert (s.processor.execute, s.processor.orchestrators) == (False, [addr])
    out = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[1] for line in out) == [f"event_id=e{i}" for i in range(5)]


def test_command_leaves_settings_alone_unless_an_argument_is_given() -> None:
    """Arguments left out keep the settings (env, TOML); given ones replace them."""
    orchestrator = ThreadedOrchestrator(make_events(3))
    with orchestrator.running() as addr:
        base = make_settings(addr, concurrency=3, max_tasks=3, execute=False)
        command = Command(base)
        assert command.run() == 3
    assert command.service is not None
    p = command.service.settings.processor
    assert (p.concurrency, p.max_tasks, p.execute, p.orchestrators) == (3, 3, False, [addr])
    assert command.service.settings.kafka == base.kafka


def test_command_refuses_bad_arguments() -> None:
    from eventgw.core.errors import ConfigError

    command = Command(make_settings("unused:1"))
    with pytest.raises(ConfigError, match=r"processor\.concurrency"):
        command.run(concurrency=0)
    with pytest.raises(ConfigError, match="orchestrator_host"):
        command.run(orchestrator_host=" , ")
    with pytest.raises(ConfigError, match=r"processor\.handler.*no attribute"):
        command.run(handler="eventgw.processor.handlers:nope")


async def test_the_handler_receives_the_public_event_type() -> None:
    """What a handler gets is an `eventgw.processor.EventData` (the public name; README)."""
    from eventgw.processor import EventData

    received: list[object] = []

    async def handle(event: EventData) -> None:
        received.append(event)

    fake = FakeOrchestrator(make_events(2))
    async with serving(fake) as addr:
        await run_to_end(make_service(make_settings(addr, max_tasks=2), handle))
    assert [type(e) for e in received] == [EventData, EventData]
    assert sorted(e.event_id for e in received if isinstance(e, EventData)) == ["e0", "e1"]


# --- (8) fleets: orchestrators of two Kafka clusters -------------------------------------


async def test_acks_of_an_ended_stream_are_sent_again_only_within_its_fleet() -> None:
    """Task ids repeat across clusters: a rollout-fleet replica must never be told that a
    primary task id is finished (it would finish its own, unprocessed record)."""
    a = FakeOrchestrator(make_events(20), index=0, fleet="primary")
    b = FakeOrchestrator(index=1, fleet="primary")
    c = FakeOrchestrator(index=2, fleet="rollout")
    stop = asyncio.Event()
    async with serving(a) as addr_a, serving(b) as addr_b, serving(c) as addr_c:
        service = make_service(make_settings(addr_a, addr_b, addr_c), Recorder())
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await a.wait_results(20)
            await c.wait_for(lambda: c.streams == 1)
            a.end_stream.set()  # a's stream ends: its recent ACKs go to the same fleet
            await b.wait_results(20)
            await a.wait_for(lambda: a.streams == 2 and len(a.results) >= 40)
            # A sentinel through c: anything queued for it before would be sent first.
            c.add(make_events(1, prefix="c"))
            await c.wait_results(1)
            stop.set()
    acked = {f"p/0/{i}" for i in range(20)}
    assert {r.task_id for r in b.results} == acked, "the other primary replica got them"
    assert {r.delivery_count for r in b.results} == {0}, "as ACKs of tasks it never leased"
    assert {r.task_id for r in a.results[20:]} == acked, "and the replica itself, again"
    assert [r.task_id for r in c.results] == ["p/0/0"], "the rollout replica: its own only"
    assert c.results[0].delivery_count == 1


async def test_a_replica_that_moved_to_another_fleet_gets_nothing_of_the_old_one() -> None:
    """Same address, new fleet (the replica drained and serves the other cluster): results
    of tasks from before the move are dropped, not sent to the new cluster."""
    handler = GatedHandler(running=2)
    fake = FakeOrchestrator(make_events(4), fleet="primary")
    stop = asyncio.Event()
    async with serving(fake) as addr:
        service = make_service(make_settings(addr, concurrency=2, max_prefetch=2), handler)
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await handler.running.wait()
            await fake.wait_for(lambda: len(fake.leased) == 4)
            fake.fleet = "rollout"
            fake.end_stream.set()
            await fake.wait_for(lambda: fake.streams == 2)
            handler.gate.set()  # e0 and e1 finish now: tasks of the old fleet's stream
            await fake.wait_for(lambda: len(fake.results) >= 4)
            stop.set()
    acks = [r.task_id for r in fake.results if r.kind == pb.ACK]
    assert sorted(acks) == [f"p/0/{i}" for i in range(4)], "each once: from the new stream"
    assert {r.delivery_count for r in fake.results} == {2}
    stats = service.statistics()
    assert stats is not None
    assert stats.results_lost == 2, "the two results of the old fleet's tasks"
    assert stats.dropped == 2


async def test_nothing_is_sent_on_a_new_stream_before_its_welcome_names_the_fleet() -> None:
    """Results of the old fleet's tasks, finished after the stream ended but before the new
    stream's welcome, are not written ahead of it: they would reach the other cluster's
    fleet, which remembers an ACK for a task id it does not hold and would skip its own
    record of that id (lane/partition/offset repeat across clusters)."""
    handler = GatedHandler(running=2)
    fake = FakeOrchestrator(make_events(4), fleet="primary")
    stop = asyncio.Event()
    async with serving(fake) as addr:
        service = make_service(make_settings(addr, concurrency=2, max_prefetch=2), handler)
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await handler.running.wait()
            await fake.wait_for(lambda: len(fake.leased) == 4)
            fake.fleet = "rollout"
            fake.welcome_gate.clear()
            fake.end_stream.set()
            await fake.wait_for(lambda: fake.streams == 2)
            handler.gate.set()  # e0 and e1 of the old fleet finish; no welcome yet
            await asyncio.sleep(0.5)  # the worker would write them on the new stream now
            before_welcome = list(fake.results)
            fake.welcome_gate.set()
            await fake.wait_for(lambda: len(fake.results) >= 4)
            stop.set()
    assert before_welcome == []
    acks = [r.task_id for r in fake.results if r.kind == pb.ACK]
    assert sorted(acks) == [f"p/0/{i}" for i in range(4)], "each once: from the new stream"
    assert {r.delivery_count for r in fake.results} == {2}
    stats = service.statistics()
    assert stats is not None
    assert stats.results_lost == 2, "the two results of the old fleet's tasks"


@pytest.mark.kafka
@pytest.mark.usefixtures("quick_fallback")
async def test_fallback_results_of_a_rollout_replica_go_to_the_rollout_cluster(
    kafka_broker: LocalBroker, kafka_broker_2: LocalBroker, new_topic: TopicFactory
) -> None:
    """Its stream lost while handlers run: the results land on the rollout cluster's
    response topic (partition = its index), and nothing on the primary's."""
    response = new_topic(partitions=2)
    await asyncio.to_thread(
        ensure_topics, kafka_broker_2.bootstrap, [TopicSpec(response, partitions=2)]
    )
    handler = GatedHandler(running=3)
    fake = FakeOrchestrator(make_events(3), index=1, fleet="rollout")
    stop = asyncio.Event()
    try:
        # One fallback write may take up to FALLBACK_TIMEOUT_S before it is tried again:
        # the read waits that long and more, so a slow first write on a busy machine is not
        # taken for a lost one.
        async with asyncio.timeout(FALLBACK_TIMEOUT_S + 30), asyncio.TaskGroup() as tg:
            async with serving(fake) as addr:
                settings = make_settings(
                    addr, bootstrap=kafka_broker.bootstrap, response=response, concurrency=3
                )
                settings = settings.model_copy(
                    update={
                        "kafka": KafkaSettings(
                            primary=settings.kafka.primary,
                            rollout=KafkaClusterSettings(
                                bootstrap_servers=kafka_broker_2.bootstrap
                            ),
                        )
                    }
                )
                service = make_service(settings, handler)
                tg.create_task(service.run(asyncio.Event(), stop))
                await handler.running.wait()
            handler.gate.set()
            records = await asyncio.to_thread(
                read_topic,
                kafka_broker_2.bootstrap,
                response,
                expect=1,
                timeout_s=FALLBACK_TIMEOUT_S + 15,
            )
            stats = service.statistics()
            on_primary = await asyncio.to_thread(
                read_topic, kafka_broker.bootstrap, response, idle_s=1.0
            )
            stop.set()
    finally:
        await asyncio.to_thread(delete_topics, kafka_broker_2.bootstrap, [response])
    assert on_primary == []
    assert {r.partition for r in records} == {1}, f"nothing on the rollout cluster: {stats}"
    results = [r for record in records for r in pb.TaskResults.FromString(record.value).results]
    assert sorted(r.task_id for r in results) == ["p/0/0", "p/0/1", "p/0/2"]
    assert {(r.kind, r.orchestrator_index) for r in results} == {(pb.ACK, 1)}


async def test_the_address_template_finds_every_replica() -> None:
    """processor.orchestrator_address_template: one address per index, whatever the list says
    (loopback 127.0.0.10 and 127.0.0.11 stand for two StatefulSet pods' names)."""
    port = free_port()
    replicas = [FakeOrchestrator(make_events(5, prefix=f"r{i}-"), index=i) for i in range(2)]
    async with serving(replicas[0], port, "127.0.0.10"), serving(replicas[1], port, "127.0.0.11"):
        settings = make_settings("127.0.0.1:9", max_tasks=10).model_copy(
            update={
                "orchestrator": OrchestratorSettings(number_of_replicas=2),
                "processor": ProcessorSettings(
                    orchestrator_address_template=f"127.0.0.1{{index}}:{port}",
                    max_tasks=10,
                    metrics_port=0,
                ),
            }
        )
        service = make_service(settings, Recorder())
        assert service.settings.processor.orchestrators == [
            f"127.0.0.10:{port}",
            f"127.0.0.11:{port}",
        ]
        await run_to_end(service)
    assert [fake.kinds() for fake in replicas] == [{"ACK": 5}, {"ACK": 5}]
