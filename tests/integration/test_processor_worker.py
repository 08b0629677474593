"""Processor worker against a fake orchestrator: a real gRPC server on loopback.

No orchestrator exists yet, so `FakeOrchestrator` implements ``GetBatch`` / ``Ack`` over an
in-memory queue of tasks, with the lease bookkeeping the worker relies on (delivery count +1
per serve, RELEASE re-queues without counting an attempt, unknown results count stale).
The results-topic tests run against the real local Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.config.settings import (
    EventGwSettings,
    KafkaClusterSettings,
    KafkaSettings,
    ProcessorSettings,
    TopicSettings,
)
from eventgw.processor import Command, ProcessorService, Reject, Retry
from eventgw.processor.worker import Backoff, WorkerState
from tests.fixtures.stack import read_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from eventgw.processor.handlers import Handler

WORKER_ID = "test-worker"
LEASE_MS = 60_000


def make_events(n: int, *, payload: bytes = b'{"n":1}', prefix: str = "e") -> list[pb.EventData]:
    return [
        pb.EventData(
            event_id=f"{prefix}{i}",
            company_id=f"acme-{i % 3}",
            source_name="api",
            payload=payload,
            priority=pb.P20,
            attempt=0,
        )
        for i in range(n)
    ]


class FakeOrchestrator(pb_grpc.OrchestratorServicer):
    """In-memory GetBatch/Ack with just enough lease semantics for the worker's tests."""

    def __init__(self, events: list[pb.EventData], *, index: int = 0) -> None:
        self.index = index
        self.queue: deque[pb.Task] = deque(
            pb.Task(task_id=f"p20/0/{i}", event=e, lane="p20") for i, e in enumerate(events)
        )
        self.leased: dict[str, pb.Task] = {}
        self.results: list[pb.TaskResult] = []
        self.ack_calls = 0
        self.batches = 0
        self._changed = asyncio.Condition()

    async def GetBatch(self, request: pb.GetBatchRequest, context: Any) -> pb.GetBatchResponse:
        if not self.queue:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(request.wait_ms / 1000), self._changed:
                    await self._changed.wait_for(lambda: bool(self.queue))
        tasks: list[pb.Task] = []
        while self.queue and len(tasks) < (request.max_tasks or 100):
            task = self.queue.popleft()
            task.delivery_count += 1
            task.lease_expires_ms = int(time.time() * 1000) + LEASE_MS
            self.leased[task.task_id] = task
            tasks.append(task)
        if tasks:
            self.batches += 1
        return pb.GetBatchResponse(
            batch_id=f"b{self.batches}", tasks=tasks, orchestrator_index=self.index
        )

    async def Ack(self, request: pb.TaskResults, context: Any) -> pb.AckResponse:
        self.ack_calls += 1
        return self.apply(request.results)

    def apply(self, results: Any) -> pb.AckResponse:
        """Apply results (from Ack or read back from the response topic)."""
        accepted = stale = 0
        for r in results:
            task = self.leased.pop(r.task_id, None)
            if task is None:
                stale += 1
                continue
            accepted += 1
            self.results.append(r)
            if r.kind == pb.RELEASE:
                self.queue.append(task)  # served again; attempt unchanged
        return pb.AckResponse(accepted=accepted, stale=stale)

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_results(self, n: int, timeout_s: float = 15.0) -> list[pb.TaskResult]:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.results) >= n)
        return self.results

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            name = pb.ResultKind.Name(r.kind)
            out[name] = out.get(name, 0) + 1
        return out


class NotifyingFake(FakeOrchestrator):
    """A fake whose Ack wakes `wait_results` (it must run on the fake's own loop)."""

    async def Ack(self, request: pb.TaskResults, context: Any) -> pb.AckResponse:
        response = await super().Ack(request, context)
        await self.notify()
        return response


@contextlib.asynccontextmanager
async def serving(fake: FakeOrchestrator, port: int = 0) -> AsyncIterator[str]:
    server = grpc.aio.server()
    pb_grpc.add_OrchestratorServicer_to_server(fake, server)  # type: ignore[no-untyped-call]  # generated gRPC code is untyped
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(0)


def make_settings(
    orchestrator: str, *, bootstrap: str = "127.0.0.1:9", response: str = "resp", **processor: Any
) -> EventGwSettings:
    p: dict[str, Any] = {
        "orchestrators": [orchestrator],
        "results_via": "grpc",
        "metrics_port": 0,
        "wait_ms": 100,
        "concurrency": 8,
        "max_tasks_per_batch": 50,
        "shutdown_timeout_s": 5.0,
    }
    p.update(processor)
    return EventGwSettings(
        kafka=KafkaSettings(primary=KafkaClusterSettings(bootstrap_servers=bootstrap)),
        topics=TopicSettings(response=response),
        processor=ProcessorSettings(**p),
    )


def make_service(
    settings: EventGwSettings, handler: Handler | str, **kwargs: Any
) -> ProcessorService:
    return ProcessorService(settings, handler, worker_id=WORKER_ID, **kwargs)


async def run_to_end(service: ProcessorService, timeout_s: float = 15.0) -> None:
    """Run a service that ends by itself (max_batches)."""
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


# --- (1) results over gRPC --------------------------------------------------------------


async def test_every_task_is_handled_once_and_acked_over_grpc():
    fake = FakeOrchestrator(make_events(20), index=2)
    handler = Recorder()
    async with serving(fake) as addr:
        service = make_service(make_settings(addr, max_tasks_per_batch=8, max_batches=3), handler)
        await run_to_end(service)

    assert sorted(handler.seen) == sorted(f"e{i}" for i in range(20))
    assert fake.kinds() == {"ACK": 20}
    assert fake.ack_calls == 3  # one Ack per batch: 8 + 8 + 4
    assert not fake.leased
    assert not fake.queue
    r = fake.results[0]
    assert (r.worker_id, r.orchestrator_index, r.delivery_count) == (WORKER_ID, 2, 1)
    assert {x.event_id for x in fake.results} == set(handler.seen)
    assert service.tasks_handled == 20
    stats = service.statistics()
    assert stats is not None
    assert (stats.state, stats.batches, stats.results["ack"]) == (WorkerState.STOPPED, 3, 20)
    text = service.metrics.render().decode()
    assert 'eventgw_processor_tasks_total{result="ack"} 20.0' in text
    assert "eventgw_processor_batches_total 3.0" in text
    assert "eventgw_processor_handler_duration_seconds_count 20.0" in text


# --- (2) outcome mapping ----------------------------------------------------------------


async def test_retry_reject_and_crash_map_to_their_results():
    fake = FakeOrchestrator(make_events(4))
    handler = Recorder(
        {
            "e1": Retry(delay=3, reason="downstream busy"),
            "e2": Reject("not an order"),
            "e3": KeyError("order_id"),
        }
    )
    async with serving(fake) as addr:
        await run_to_end(make_service(make_settings(addr, max_batches=1), handler))

    by_id = {r.event_id: r for r in fake.results}
    assert (by_id["e0"].kind, by_id["e0"].error) == (pb.ACK, "")
    assert (by_id["e1"].kind, by_id["e1"].delay_ms, by_id["e1"].error) == (
        pb.NACK,
        3000,
        "downstream busy",
    )
    assert (by_id["e2"].kind, by_id["e2"].error) == (pb.REJECT, "not an order")
    assert (by_id["e3"].kind, by_id["e3"].delay_ms, by_id["e3"].error) == (
        pb.NACK,
        0,
        "KeyError: 'order_id'",
    )


# --- (3) bounded concurrency ------------------------------------------------------------


async def test_concurrent_handler_calls_never_exceed_concurrency():
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
            # Hold every slot until the bound is reached: proves both that the batch runs
            # concurrently and that it never goes past the bound.
            await saturated.wait()
            await asyncio.sleep(0)
        finally:
            running -= 1

    fake = FakeOrchestrator(make_events(12))
    async with serving(fake) as addr:
        settings = make_settings(addr, concurrency=concurrency, max_batches=1)
        await run_to_end(make_service(settings, handler))

    assert peak == concurrency
    assert fake.kinds() == {"ACK": 12}


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_pipeline_depth_bounds_batches_in_flight_and_overlaps_them(depth):
    """The next batch is fetched and runs while the previous one's last task still runs.

    Every task of each batch holds until released; the first event of every batch is slow.
    With depth d, d batches are leased at once (never more), and their handlers overlap.
    """
    per_batch = 4
    fake = NotifyingFake(make_events(per_batch * 6))
    release = asyncio.Event()
    started: list[str] = []
    enough = asyncio.Event()

    async def handler(event: pb.EventData) -> None:
        started.append(event.event_id)
        if len(started) >= depth * per_batch:
            enough.set()
        await release.wait()

    async with serving(fake) as addr:
        settings = make_settings(
            addr, concurrency=64, max_tasks_per_batch=per_batch, max_batches=6, pipeline_depth=depth
        )
        service = make_service(settings, handler)
        run = asyncio.create_task(run_to_end(service, timeout_s=30))
        async with asyncio.timeout(10):
            await enough.wait()
        await asyncio.sleep(0.3)  # time for a (wrong) extra fetch to show up
        assert fake.batches == depth, "exactly pipeline_depth batches leased while all block"
        assert len(fake.leased) == depth * per_batch
        assert len(started) == depth * per_batch, "the batches' handlers run at once"
        release.set()
        await run
    assert fake.batches == 6, "max_batches is exact with several loops"
    assert fake.kinds() == {"ACK": per_batch * 6}
    assert sorted(r.task_id for r in fake.results) == sorted(f"p20/0/{i}" for i in range(24))


# --- (4) dry run ------------------------------------------------------------------------


async def test_dry_run_shows_and_releases_without_calling_the_handler():
    async def must_not_run(event: pb.EventData) -> None:
        raise AssertionError("the handler ran in a dry run")

    payload = b'{"k":"' + b"x" * 300 + b'"}'
    fake = FakeOrchestrator(make_events(3, payload=payload))
    lines: list[str] = []
    async with serving(fake) as addr:
        # results_via=topic is ignored by a dry run: no producer, release over gRPC.
        settings = make_settings(addr, execute=False, results_via="topic", max_batches=1)
        service = make_service(settings, must_not_run, show=lines.append)
        await run_to_end(service)

    assert fake.kinds() == {"RELEASE": 3}
    assert [r.delivery_count for r in fake.results] == [1, 1, 1]  # as served, untouched
    assert [t.event.attempt for t in fake.queue] == [0, 0, 0]  # released: no attempt counted
    assert len(fake.queue) == 3  # all back in the queue to be served again
    assert service.tasks_handled == 3
    assert len(lines) == 3
    line = lines[0]
    for part in ("event_id=e0", "class=P20", "lane=p20", "company=acme-0", "delivery_count=1"):
        assert part in line
    assert "\n" not in line
    assert f"(+{len(payload) - 200} bytes)" in line  # cut to 200 bytes
    assert "x" * 194 in line
    assert "x" * 195 not in line


# --- (5) results via the response topic (real Kafka) ------------------------------------


@pytest.mark.kafka
async def test_results_record_lands_on_the_orchestrator_index_partition(kafka_broker, new_topic):
    response = new_topic(partitions=2)
    fake = FakeOrchestrator(make_events(5), index=1)
    async with serving(fake) as addr:
        settings = make_settings(
            addr,
            bootstrap=kafka_broker.bootstrap,
            response=response,
            results_via="topic",
            max_batches=1,
        )
        service = make_service(settings, Recorder())
        await run_to_end(service, timeout_s=30)

    assert fake.ack_calls == 0  # the topic took them; no gRPC fallback
    records = await asyncio.to_thread(read_topic, kafka_broker.bootstrap, response, expect=1)
    assert len(records) == 1
    record = records[0]
    assert record.partition == 1
    assert record.key == WORKER_ID.encode()
    results = pb.TaskResults.FromString(record.value).results
    assert [r.kind for r in results] == [pb.ACK] * 5
    assert {r.orchestrator_index for r in results} == {1}
    assert fake.apply(results).accepted == 5  # what the orchestrator would read back


@pytest.mark.kafka
async def test_failed_results_write_falls_back_to_grpc_ack(kafka_broker, new_topic):
    response = new_topic(partitions=2)
    fake = FakeOrchestrator(make_events(4), index=5)  # the topic has no partition 5
    async with serving(fake) as addr:
        settings = make_settings(
            addr,
            bootstrap=kafka_broker.bootstrap,
            response=response,
            results_via="topic",
            max_batches=1,
        )
        service = make_service(settings, Recorder())
        await run_to_end(service, timeout_s=30)

    assert fake.ack_calls == 1
    assert fake.kinds() == {"ACK": 4}
    stats = service.statistics()
    assert stats is not None
    assert stats.report_fallbacks == 1


# --- (6) shutdown mid-batch -------------------------------------------------------------


class GatedHandler:
    """Records each event it starts, sets ``running`` once ``n`` started, waits for ``gate``."""

    def __init__(self, running: int) -> None:
        self.n = running
        self.gate = asyncio.Event()
        self.running = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, event: pb.EventData) -> None:
        self.started.append(event.event_id)
        if len(self.started) == self.n:
            self.running.set()
        await self.gate.wait()


async def test_stop_mid_batch_drains_running_and_releases_unstarted():
    handler = GatedHandler(running=2)
    gate, two_running, started = handler.gate, handler.running, handler.started

    fake = FakeOrchestrator(make_events(6))
    stop = asyncio.Event()
    async with serving(fake) as addr:
        service = make_service(make_settings(addr, concurrency=2), handler)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await two_running.wait()
            stop.set()
            gate.set()  # the two running handlers finish within the drain

    assert started == ["e0", "e1"]
    by_id = {r.event_id: r.kind for r in fake.results}
    assert by_id == {
        "e0": pb.ACK,
        "e1": pb.ACK,
        "e2": pb.RELEASE,
        "e3": pb.RELEASE,
        "e4": pb.RELEASE,
        "e5": pb.RELEASE,
    }
    assert service.tasks_handled == 2


async def test_stop_with_two_batches_held_drains_both_and_reports_every_task_once():
    """pipeline_depth 2: both held batches drain; each task gets exactly one result."""
    handler = GatedHandler(running=2)
    gate, two_running, started = handler.gate, handler.running, handler.started

    fake = NotifyingFake(make_events(8))
    stop = asyncio.Event()
    async with serving(fake) as addr:
        settings = make_settings(addr, concurrency=2, max_tasks_per_batch=4, pipeline_depth=2)
        service = make_service(settings, handler)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await two_running.wait()
            while fake.batches < 2:  # noqa: ASYNC110  (the second loop's fetch: no event)
                await asyncio.sleep(0.01)
            assert len(fake.leased) == 8, "two batches of 4 held at once"
            stop.set()
            gate.set()  # the running handlers finish within the drain

    kinds: dict[str, list[int]] = {}
    for r in fake.results:
        kinds.setdefault(r.event_id, []).append(r.kind)
    assert sorted(kinds) == [f"e{i}" for i in range(8)]
    assert all(len(k) == 1 for k in kinds.values()), "one result per task"
    acked = {e for e, k in kinds.items() if k == [pb.ACK]}
    assert acked == set(started), "what ran is ACKed, the rest RELEASEd"
    assert {e for e, k in kinds.items() if k == [pb.RELEASE]} == set(kinds) - acked
    assert service.tasks_handled == len(started) == 2


async def test_handlers_past_the_shutdown_timeout_are_cancelled_and_released():
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
        settings = make_settings(addr, concurrency=2, shutdown_timeout_s=0.2)
        service = make_service(settings, stuck)
        async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
            tg.create_task(service.run(asyncio.Event(), stop))
            await running.wait()
            stop.set()

    assert sorted(cancelled) == ["e0", "e1"]
    assert fake.kinds() == {"RELEASE": 3}
    assert service.tasks_handled == 0


# --- (7) orchestrator down, then up -----------------------------------------------------


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_worker_backs_off_while_the_orchestrator_is_down_and_recovers():
    port = free_port()
    backoff = RecordingBackoff(signal_after=3)
    fake = NotifyingFake(make_events(5))
    stop = asyncio.Event()
    service = make_service(make_settings(f"127.0.0.1:{port}"), Recorder(), backoff=backoff)
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(service.run(asyncio.Event(), stop))
        await backoff.backed_off.wait()  # nothing listens yet: calls fail, the worker waits
        async with serving(fake, port):
            await fake.wait_results(5)
            stop.set()

    assert backoff.attempts[:3] == [0, 1, 2]  # growing back-off while down
    assert all(0.01 <= backoff.delay_s(a) <= 0.2 for a in range(40))  # jittered, capped
    assert fake.kinds() == {"ACK": 5}
    stats = service.statistics()
    assert stats is not None
    assert stats.fetch_failures >= 3


def test_backoff_is_exponential_jittered_and_capped():
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    for attempt, base in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (50, 1.0)]:
        delays = [backoff.delay_s(attempt) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0)


# --- (8) Command ------------------------------------------------------------------------


class ThreadedOrchestrator:
    """A fake orchestrator on its own loop in a thread, for the synchronous Command API."""

    def __init__(self, fake: FakeOrchestrator) -> None:
        self.fake = fake
        self.addr = ""
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
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


def test_command_dry_run_returns_after_max_batches(capsys):
    fake = FakeOrchestrator(make_events(8))
    base = make_settings("unused:1", wait_ms=100)
    command = Command(base)
    with ThreadedOrchestrator(fake).running() as addr:
        handled = command.run(
            execute=False,
            max_batches=1,
            max_tasks_per_batch=5,
            kafka_bootstrap_servers="127.0.0.1:1",
            orchestrator_host=addr,
            statsd_root="eventgw.processor",
        )

    assert handled == 5
    assert fake.kinds() == {"RELEASE": 5}
    assert command.statsd_root == "eventgw.processor"
    assert command.service is not None
    s = command.service.settings
    assert s.observability.statsd_root == "eventgw.processor"
    assert s.kafka.primary.bootstrap_servers == "127.0.0.1:1"
    assert (s.processor.execute, s.processor.orchestrators) == (False, [addr])
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out] == [f"event_id=e{i}" for i in range(5)]


def test_command_refuses_bad_arguments():
    from eventgw.core.errors import ConfigError

    command = Command(make_settings("unused:1"))
    with pytest.raises(ConfigError, match=r"processor\.concurrency"):
        command.run(concurrency=0)
    with pytest.raises(ConfigError, match="orchestrator_host"):
        command.run(orchestrator_host=" , ")
    with pytest.raises(ConfigError, match=r"processor\.handler.*no attribute"):
        command.run(handler="eventgw.processor.handlers:nope")
