"""The read path against real Kafka: orchestrator + processors, crashes, retries, floods.

Events are written straight to the lane topics (as the prep publisher writes them). Each
test has its own topics and consumer group. Orchestrators and processors run in-process
when the test reads their internals, and as ``eventgw`` subprocesses when it kills them.
Delays and leases are shortened with ``OrchestratorService(time_scale=…)`` so the real retry
ladder runs in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

import confluent_kafka
import psutil
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from eventgw.core.envelope import (
    H_ATTEMPT,
    H_EVENT_ID,
    H_LAST_ERROR,
    H_ORIGINAL_TOPIC,
    H_RETRY_AT_MS,
    Priority,
)
from eventgw.kafka.admin import delete_topics
from eventgw.orchestrator.dispatcher import RETRY_DELAYS_S
from eventgw.orchestrator.service import OrchestratorService
from eventgw.processor import Command, ProcessorService, Retry
from tests.fixtures.procs import REPO_ROOT, Component, component_env, wait_http_ready
from tests.fixtures.read_path import (
    RECORD_FILE_ENV,
    Recorder,
    create_topics,
    get_stats,
    group_assignment,
    group_lag,
    group_members,
    lane_topics,
    make_event,
    mixed_events,
    orchestrator_env,
    produce,
    read_records,
    read_settings,
    running,
    subprocess_orchestrator,
    wait_lag_zero,
    with_processor,
)
from tests.fixtures.stack import unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from eventgw.config.settings import EventGwSettings, TopicSettings
    from eventgw.kafka.local_broker import LocalBroker
    from eventgw.orchestrator.dispatcher import Dispatcher
    from eventgw.orchestrator.priority_buffer import BufferedTask

pytestmark = pytest.mark.kafka


@pytest.fixture
def topics(kafka_broker: LocalBroker) -> Iterator[TopicSettings]:
    """Fresh uuid-named topics (3 partitions each, response included); deleted afterwards."""
    names = unique_topics()
    create_topics(kafka_broker.bootstrap, names)
    yield names
    delete_topics(kafka_broker.bootstrap, names.all_topics())


@pytest.fixture
async def components(tmp_path: Path) -> AsyncIterator[Callable[[str, dict[str, str]], Component]]:
    """Factory of ``eventgw`` subprocesses; every one still running is stopped at teardown."""
    made: list[Component] = []

    def make(name: str, env: dict[str, str]) -> Component:
        component = Component(name, env, tmp_path)
        made.append(component)
        return component

    yield make
    for component in reversed(made):
        await component.stop()


def orchestrator_address(service: OrchestratorService) -> str:
    """The gRPC address of a started in-process orchestrator."""
    return f"127.0.0.1:{service.grpc_port}"


def processor_for(
    settings: EventGwSettings, orchestrators: list[str], handler: Recorder, **fields: object
) -> ProcessorService:
    """An in-process processor of ``orchestrators`` running ``handler``."""
    return ProcessorService(
        with_processor(settings, orchestrators=orchestrators, **fields), handler
    )


# -- 1. end to end -----------------------------------------------------------------------------


async def test_end_to_end_every_event_processed_and_committed(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    """2,000 mixed events (offload lane too) → each handled once; lag 0 on every lane."""
    bootstrap = kafka_broker.bootstrap
    lanes = mixed_events(1900, "e2e")
    offload = [make_event(f"e2e-off-{i}", Priority.P20, company=f"c{i % 5}") for i in range(100)]
    await asyncio.to_thread(produce, bootstrap, topics, lanes)
    await asyncio.to_thread(produce, bootstrap, topics, offload, lane="offload")
    n = len(lanes) + len(offload)
    settings = read_settings(bootstrap, topics)
    orchestrator = OrchestratorService(settings)
    recorder = Recorder()
    started = time.monotonic()
    async with running(orchestrator):
        processor = processor_for(
            settings, [orchestrator_address(orchestrator)], recorder, concurrency=32
        )
        async with running(processor):
            await recorder.wait_for(lambda: recorder.distinct >= n, 60, f"{n} events")
            lag = await wait_lag_zero(
                bootstrap, settings.orchestrator.group_id, lane_topics(topics)
            )
            stats = await get_stats(orchestrator.status_port or 0)
    elapsed = time.monotonic() - started
    print(f"\n[e2e] {n} events in {elapsed:.1f}s, duplicates={recorder.duplicates()}")
    assert recorder.distinct == n
    assert recorder.duplicates() == 0, "a calm run must not redeliver"
    assert set(recorder.counts) == {e.event_id for e in lanes + offload}
    assert len(lag) == 4 * topics.partitions
    assert set(lag.values()) == {0}
    by_lane = stats["by_lane"]
    # Class counters count by original class: the offload events are P20.
    assert by_lane["P30"]["processed"] == sum(1 for e in lanes if e.priority == pb.P30)
    assert by_lane["P20"]["processed"] == sum(1 for e in lanes if e.priority == pb.P20) + 100
    assert by_lane["P10"]["processed"] == sum(1 for e in lanes if e.priority == pb.P10)
    assert by_lane["offload"]["processed"] == 100
    assert all(ln["buffered"] == 0 and ln["in_flight"] == 0 for ln in stats["lanes"])


async def test_an_undecodable_record_goes_to_the_dlq_and_the_rest_flows(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    """A lane record that is not an EventData: DLQ'd as it is, committed, processors unharmed."""
    bootstrap = kafka_broker.bootstrap
    before = [make_event(f"undec-a-{i}", Priority.P20) for i in range(50)]
    after = [make_event(f"undec-b-{i}", Priority.P20) for i in range(50)]
    await asyncio.to_thread(produce, bootstrap, topics, before)
    garbage = b"\xff\xfe not protobuf \x00\x01"
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    producer.produce(topics.p20, garbage, b"garbage-key", partition=0)
    assert producer.flush(10) == 0
    await asyncio.to_thread(produce, bootstrap, topics, after)
    settings = read_settings(bootstrap, topics)
    orchestrator = OrchestratorService(settings)
    recorder = Recorder()
    async with running(orchestrator):
        processor = processor_for(settings, [orchestrator_address(orchestrator)], recorder)
        async with running(processor):
            await recorder.wait_for(lambda: recorder.distinct >= 100, 30, "every event")
            lag = await wait_lag_zero(
                bootstrap, settings.orchestrator.group_id, lane_topics(topics)
            )
    assert set(recorder.counts) == {e.event_id for e in before + after}
    assert set(lag.values()) == {0}, "the undecodable record's offset is committed too"
    dlq = await asyncio.to_thread(read_records, bootstrap, topics.dlq, expect=1)
    assert [r.value for r in dlq] == [garbage]
    assert dlq[0].headers[H_ORIGINAL_TOPIC] == topics.p20.encode()
    assert dlq[0].headers[H_LAST_ERROR].startswith(b"undecodable")


# -- 7. dry run --------------------------------------------------------------------------------


async def test_dry_run_leaves_every_event_unprocessed(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    """``Command().run(execute=False)`` shows and releases; a real processor then gets all."""
    bootstrap = kafka_broker.bootstrap
    n = 60
    events = mixed_events(n, "dry")
    await asyncio.to_thread(produce, bootstrap, topics, events)
    settings = read_settings(bootstrap, topics)
    group = settings.orchestrator.group_id
    orchestrator = OrchestratorService(settings)
    async with running(orchestrator):
        d = orchestrator.dispatcher
        assert d is not None
        async with asyncio.timeout(20):
            while len(d.buffer) < n:  # noqa: ASYNC110  (the fetch loop has no event to await)
                await asyncio.sleep(0.05)
        dry_settings = with_processor(settings, metrics_port=0)
        shown_lines: list[str] = []
        command = Command(dry_settings)
        shown = await asyncio.to_thread(
            command.run,
            execute=False,
            max_tasks=n,
            orchestrator_host=orchestrator_address(orchestrator),
            show=shown_lines.append,
        )
        assert shown == n
        shown_ids = {line.split("event_id=")[1].split()[0] for line in shown_lines}
        assert shown_ids == {e.event_id for e in events}, "each buffered event shown once"
        # Released, not retried: every task ready again, no attempt or delivery counted.
        st = d.buffer.statistics()
        assert (st.ready, st.leased, st.delayed) == (n, 0, 0)
        tasks = [d.buffer.get(f"{t}") for t in list(d.buffer._tasks)]
        assert all(t is not None and t.attempt == 0 and t.delivery_count == 0 for t in tasks)
        stats = await get_stats(orchestrator.status_port or 0)
        assert all(ln["processed"] == ln["retried"] == 0 for ln in stats["lanes"])
        lag = await asyncio.to_thread(group_lag, bootstrap, group, lane_topics(topics))
        assert sum(lag.values()) == n, "a dry run commits nothing"

        recorder = Recorder()
        processor = processor_for(settings, [orchestrator_address(orchestrator)], recorder)
        async with running(processor):
            await recorder.wait_for(lambda: recorder.distinct >= n, 30, f"{n} events")
            await wait_lag_zero(bootstrap, group, lane_topics(topics))
        stats = await get_stats(orchestrator.status_port or 0)
    assert recorder.distinct == n
    assert recorder.duplicates() == 0
    assert {attempt for _, attempt, _, _ in recorder.calls} == {0}
    assert sum(ln["processed"] for ln in stats["lanes"][:3]) == n
    assert all(ln["retried"] == 0 for ln in stats["lanes"])


# -- 5. NACK: memory retry, retry topics, DLQ ---------------------------------------------------


def fail_first_delivery(delay_s: float) -> Callable[[pb.EventData], None]:
    """A ``Recorder.fail`` that NACKs each event's first delivery with ``Retry(delay_s)``."""
    failed: set[str] = set()

    def fail(event: pb.EventData) -> None:
        if event.event_id not in failed:
            failed.add(event.event_id)
            raise Retry(delay=delay_s, reason="first try fails")

    return fail


async def test_nack_short_delay_is_retried_from_memory(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    """Retry(delay=1): served again from memory after >= 1 s, attempt 1; no retry topic."""
    bootstrap = kafka_broker.bootstrap
    n = 20
    events = [make_event(f"short-{i}", Priority.P20, company=f"c{i}") for i in range(n)]
    await asyncio.to_thread(produce, bootstrap, topics, events)
    settings = read_settings(bootstrap, topics)
    orchestrator = OrchestratorService(settings)
    recorder = Recorder(fail=fail_first_delivery(1.0))
    async with running(orchestrator):
        processor = processor_for(settings, [orchestrator_address(orchestrator)], recorder)
        async with running(processor):
            await recorder.wait_for(lambda: len(recorder.calls) >= 2 * n, 30, "two deliveries")
            await wait_lag_zero(bootstrap, settings.orchestrator.group_id, lane_topics(topics))
        stats = await get_stats(orchestrator.status_port or 0)
    assert recorder.distinct == n
    assert set(recorder.counts.values()) == {2}
    for event_id in recorder.counts:
        (_, a0, t0, _), (_, a1, t1, _) = [c for c in recorder.calls if c[0] == event_id]
        assert (a0, a1) == (0, 1), f"{event_id}: attempts {a0}, {a1}"
        assert t1 - t0 >= 1.0, f"{event_id} served again after {t1 - t0:.2f}s (< 1 s delay)"
    p20 = stats["by_lane"]["P20"]
    assert (p20["processed"], p20["retried"], p20["dead_lettered"]) == (n, n, 0)
    for topic in (topics.retry_60s, topics.dlq):
        assert await asyncio.to_thread(read_records, bootstrap, topic) == []


async def test_nack_long_delay_walks_retry_topics_then_dlq(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    """Retry(delay=90) every time: 60s → 120s → 240s → 480s topics, held until due, then DLQ."""
    bootstrap = kafka_broker.bootstrap
    scale = 0.01
    events = [make_event(f"long-{i}", Priority.P20, company=f"c{i}") for i in range(3)]
    ids = {e.event_id for e in events}
    await asyncio.to_thread(produce, bootstrap, topics, events)
    # The lease is scaled too: 120 s keeps it at 1.2 s, as long as the delays' first step.
    settings = read_settings(bootstrap, topics, orchestrator={"lease_s": 120, "max_attempts": 5})

    def always_fail(event: pb.EventData) -> None:
        raise Retry(delay=90, reason=f"downstream down (attempt {event.attempt})")

    orchestrator = OrchestratorService(settings, time_scale=scale)
    recorder = Recorder(fail=always_fail)
    async with running(orchestrator):
        processor = processor_for(settings, [orchestrator_address(orchestrator)], recorder)
        async with running(processor):
            # 0.6 + 1.2 + 2.4 + 4.8 s of retry delays, then the DLQ.
            await recorder.wait_for(lambda: len(recorder.calls) >= 15, 45, "5 attempts each")
            dlq = await asyncio.to_thread(read_records, bootstrap, topics.dlq, expect=3)
            await wait_lag_zero(bootstrap, settings.orchestrator.group_id, lane_topics(topics))
            retry_topics = [topics.retry_60s, topics.retry_120s, topics.retry_240s]
            retry_topics.append(topics.retry_480s)
            await wait_lag_zero(bootstrap, f"{settings.orchestrator.group_id}-retry", retry_topics)
        stats = await get_stats(orchestrator.status_port or 0)

    # Each event was handled 5 times, attempts 0..4, then dead-lettered.
    assert len(recorder.calls) == 15
    for event_id in ids:
        attempts = [a for e, a, _, _ in recorder.calls if e == event_id]
        assert attempts == [0, 1, 2, 3, 4]
    # Attempt k (k = 1..4) went through retry topic k, with retry-at = write time + delay.
    by_topic = []
    for k, topic in enumerate(retry_topics, start=1):
        records = await asyncio.to_thread(read_records, bootstrap, topic, expect=3)
        by_topic.append(records)
        assert len(records) == 3, f"{topic}: {len(records)} records"
        for r in records:
            event = pb.EventData.FromString(r.value)
            assert event.event_id in ids
            assert event.attempt == k
            assert r.headers[H_ATTEMPT] == b"%d" % k
            assert r.headers[H_ORIGINAL_TOPIC] == topics.p20.encode()
            assert r.headers[H_LAST_ERROR] == f"downstream down (attempt {k - 1})".encode()
            retry_at = int(r.headers[H_RETRY_AT_MS])
            delay_ms = RETRY_DELAYS_S[k - 1] * scale * 1000
            written_ms = r.timestamp_ms
            assert abs(retry_at - written_ms - delay_ms) < 500, (topic, retry_at - written_ms)
            # Held until due: the delivery with attempt k came at or after retry-at.
            [served_ms] = [w for e, a, _, w in recorder.calls if e == event.event_id and a == k]
            assert served_ms >= retry_at, f"{topic}: served {retry_at - served_ms} ms early"
    # In order: each event's records were written 60s topic first, then 120s, 240s, 480s.
    for event_id in ids:
        written = [
            r.timestamp_ms
            for records in by_topic
            for r in records
            if pb.EventData.FromString(r.value).event_id == event_id
        ]
        assert len(written) == 4
        assert written == sorted(written)
    assert len(dlq) == 3
    for r in dlq:
        event = pb.EventData.FromString(r.value)
        assert event.event_id in ids
        assert event.attempt == 5
        assert event.priority == pb.P20, "the original class is kept"
        assert r.headers[H_EVENT_ID] == event.event_id.encode()
        assert r.headers[H_ORIGINAL_TOPIC] == topics.p20.encode()
        assert r.headers[H_LAST_ERROR] == b"downstream down (attempt 4)"
    p20 = stats["by_lane"]["P20"]
    assert (p20["processed"], p20["retried"], p20["dead_lettered"]) == (0, 12, 3)


# -- 2. orchestrator kill -9 and restart --------------------------------------------------------


async def test_orchestrator_kill9_restart_loses_nothing(
    kafka_broker: LocalBroker,
    topics: TopicSettings,
    components: Callable[[str, dict[str, str]], Component],
) -> None:
    """kill -9 mid-stream, restart with the same index: every event processed, lag 0."""
    bootstrap = kafka_broker.bootstrap
    n = 3000
    events = mixed_events(n, "crash")
    settings = read_settings(bootstrap, topics, orchestrator={"commit_interval_s": 0.5})
    orch = subprocess_orchestrator(settings)
    proc = components("orchestrator", orchestrator_env(bootstrap, topics, orch))
    ready_url = f"http://127.0.0.1:{orch.metrics_port}/readyz"
    await proc.start()
    await wait_http_ready(ready_url, proc)
    await asyncio.to_thread(produce, bootstrap, topics, events)
    recorder = Recorder(sleep_s=0.005)
    processor = processor_for(settings, [f"127.0.0.1:{orch.grpc_port}"], recorder, concurrency=16)
    async with running(processor):
        await recorder.wait_for(lambda: recorder.distinct >= n // 3, 60, "a third processed")
        await proc.kill9()
        at_kill = recorder.distinct
        await proc.start()
        await wait_http_ready(ready_url, proc)
        await recorder.wait_for(lambda: recorder.distinct >= n, 90, "every event")
        lag = await wait_lag_zero(bootstrap, orch.group_id, lane_topics(topics))
    duplicates = recorder.duplicates()
    print(f"\n[orchestrator kill -9] processed {at_kill}/{n} at kill; duplicates={duplicates}")
    assert at_kill < n, "the kill must land mid-stream"
    assert set(recorder.counts) == {e.event_id for e in events}
    assert set(lag.values()) == {0}
    # Crash-dedupe: the restarted replica finishes what the workers ACKed since its last
    # commit (they send their recent ACKs again on the new stream) and what its commit
    # metadata lists, instead of serving it again.
    assert duplicates <= n // 100, f"{duplicates} duplicates of {n}"


# -- 3. processor kill -9 / hung processor --------------------------------------------------------


async def _start_slow_worker(
    bootstrap: str,
    topics: TopicSettings,
    address: str,
    record_file: Path,
    components: Callable[[str, dict[str, str]], Component],
) -> Component:
    """A subprocess worker (concurrency 4) whose handler records each start, then hangs."""
    env = component_env(
        bootstrap,
        topics,
        EVENTGW_PROCESSOR__ORCHESTRATORS=json.dumps([address]),
        EVENTGW_PROCESSOR__HANDLER="tests.fixtures.read_path:recording_sleeper",
        EVENTGW_PROCESSOR__CONCURRENCY="4",
        EVENTGW_PROCESSOR__METRICS_PORT=str(free_port()),
        PYTHONPATH=str(REPO_ROOT),
    )
    env[RECORD_FILE_ENV] = str(record_file)
    slow = components("processor", env)
    await slow.start()
    async with asyncio.timeout(30):
        # The subprocess's handler writes to a file: nothing to await but the file itself.
        while len(record_file.read_text().split()) < 4:  # noqa: ASYNC240  (a few bytes)
            assert slow.proc is not None
            assert slow.proc.returncode is None, slow.log_tail()
            await asyncio.sleep(0.05)
    return slow


def _leased(d: Dispatcher) -> list[BufferedTask]:
    return [t for t in list(d.buffer._tasks.values()) if d.buffer.lease_of(t.task_id)]


async def _wait_leased(d: Dispatcher, n: int) -> list[BufferedTask]:
    async with asyncio.timeout(10):
        while len(_leased(d)) < n:  # noqa: ASYNC110  (no event to await in the buffer)
            await asyncio.sleep(0.05)
    return _leased(d)


async def test_processor_kill9_returns_its_leases_at_once(
    kafka_broker: LocalBroker,
    topics: TopicSettings,
    components: Callable[[str, dict[str, str]], Component],
    tmp_path: Path,
) -> None:
    """A worker killed holding tasks: its stream ends, its leases come back at once.

    The lease is 60 s: a redelivery within it can only come from the stream ending.
    """
    bootstrap = kafka_broker.bootstrap
    n = 60
    events = [make_event(f"lease-{i}", Priority.P20, company=f"c{i % 5}") for i in range(n)]
    await asyncio.to_thread(produce, bootstrap, topics, events)
    settings = read_settings(bootstrap, topics, orchestrator={"lease_s": 60})
    orchestrator = OrchestratorService(settings)
    record_file = tmp_path / "slow-started.txt"
    record_file.touch()
    async with running(orchestrator):
        d = orchestrator.dispatcher
        assert d is not None
        async with asyncio.timeout(20):
            while len(d.buffer) < n:  # noqa: ASYNC110  (the fetch loop has no event to await)
                await asyncio.sleep(0.05)
        slow = await _start_slow_worker(
            bootstrap, topics, orchestrator_address(orchestrator), record_file, components
        )
        # 4 running + a prefetch of 4: before any handler finished, a handler is assumed to
        # take prefetch_window_ms, so the slots start 4 more within that window.
        leased = await _wait_leased(d, 8)
        assert len(leased) == 8, "the worker holds concurrency + prefetch, not more"
        await slow.kill9()
        killed_at = time.monotonic()
        leased_ids = {pb.EventData.FromString(t.value).event_id for t in leased}
        started = set(record_file.read_text().split())
        assert started <= leased_ids

        recorder = Recorder()
        processor = processor_for(settings, [orchestrator_address(orchestrator)], recorder)
        async with running(processor):
            await recorder.wait_for(lambda: recorder.distinct >= n, 30, "every event")
            done_s = time.monotonic() - killed_at
            await wait_lag_zero(bootstrap, settings.orchestrator.group_id, lane_topics(topics))
        returned = d.returned_on_disconnect
        expired = d.counters["p20"].expired
    print(
        f"\n[processor kill -9] held={len(leased_ids)} started={len(started)} "
        f"returned={returned} all done {done_s:.1f}s after the kill"
    )
    assert set(recorder.counts) == {e.event_id for e in events}, "nothing lost"
    assert recorder.duplicates() == 0
    assert returned == len(leased_ids), "every lease of the dead worker came back"
    assert expired == 0, "nothing waited for its lease to expire"
    assert done_s < 30


async def test_hung_processor_leases_expire_and_are_served_again(
    kafka_broker: LocalBroker,
    topics: TopicSettings,
    components: Callable[[str, dict[str, str]], Component],
    tmp_path: Path,
) -> None:
    """A worker frozen (SIGSTOP) keeps its stream open: its tasks come back at lease expiry."""
    bootstrap = kafka_broker.bootstrap
    n = 30
    events = [make_event(f"hung-{i}", Priority.P20, company=f"c{i % 5}") for i in range(n)]
    await asyncio.to_thread(produce, bootstrap, topics, events)
    settings = read_settings(bootstrap, topics, orchestrator={"lease_s": 60})
    lease_s = 60 * 0.05
    orchestrator = OrchestratorService(settings, time_scale=0.05)
    record_file = tmp_path / "hung-started.txt"
    record_file.touch()
    async with running(orchestrator):
        d = orchestrator.dispatcher
        assert d is not None
        async with asyncio.timeout(20):
            while len(d.buffer) < n:  # noqa: ASYNC110  (the fetch loop has no event to await)
                await asyncio.sleep(0.05)
        slow = await _start_slow_worker(
            bootstrap, topics, orchestrator_address(orchestrator), record_file, components
        )
        leased = await _wait_leased(d, 8)
        expires = {pb.EventData.FromString(t.value).event_id: t.lease_expires for t in leased}
        os.kill(slow.pid, signal.SIGSTOP)
        try:
            recorder = Recorder()
            processor = processor_for(settings, [orchestrator_address(orchestrator)], recorder)
            async with running(processor):
                await recorder.wait_for(lambda: recorder.distinct >= n, 30, "every event")
                await wait_lag_zero(bootstrap, settings.orchestrator.group_id, lane_topics(topics))
            expired = d.counters["p20"].expired
        finally:
            # Killed while frozen: its handlers never return, so a SIGTERM at teardown would
            # wait out the drain and the 20 s before the fixture's SIGKILL.
            await slow.kill9()
    first_call: dict[str, float] = {}
    for event_id, _, mono, _ in recorder.calls:
        first_call.setdefault(event_id, mono)
    early = {e: round(exp - first_call[e], 3) for e, exp in expires.items() if first_call[e] < exp}
    print(f"\n[hung processor] held={len(expires)} expired={expired} lease={lease_s}s")
    assert set(recorder.counts) == {e.event_id for e in events}, "nothing lost"
    assert expired >= len(expires)
    assert not early, f"served again before the lease expired: {early}"


# -- 4. two orchestrators, one killed -----------------------------------------------------------


async def test_surviving_orchestrator_takes_over_partitions(
    kafka_broker: LocalBroker,
    topics: TopicSettings,
    components: Callable[[str, dict[str, str]], Component],
) -> None:
    """Replicas 0 and 1 share the lanes; kill -9 replica 1 → replica 0 owns every partition."""
    bootstrap = kafka_broker.bootstrap
    settings = read_settings(bootstrap, topics, orchestrator={"index": 0, "number_of_replicas": 2})
    group = settings.orchestrator.group_id
    orch1 = subprocess_orchestrator(settings, index=1, replicas=2)
    env = orchestrator_env(bootstrap, topics, orch1)
    # The broker's least session (group.min.session.timeout.ms), not eventgw's 10 s: the
    # group drops the killed replica 4 s sooner; what happens then is the same.
    env["EVENTGW_KAFKA__PRIMARY__CLIENT_OVERRIDES"] = json.dumps({"session.timeout.ms": "6000"})
    other = components("orchestrator", env)
    await other.start()
    await wait_http_ready(f"http://127.0.0.1:{orch1.metrics_port}/readyz", other)
    all_lanes = {(t, p) for t in lane_topics(topics) for p in range(topics.partitions)}
    orchestrator = OrchestratorService(settings)
    first = mixed_events(1500, "two-a")
    second = mixed_events(600, "two-b")
    recorder = Recorder(sleep_s=0.01)
    async with running(orchestrator):
        async with asyncio.timeout(30):
            while True:
                members = await asyncio.to_thread(group_assignment, bootstrap, group)
                if len(members) == 2 and all(members.values()):
                    break
                await asyncio.sleep(0.2)
        assert set(members) == {"orchestrator-0", "orchestrator-1"}
        assert members["orchestrator-0"] | members["orchestrator-1"] == all_lanes
        # P30 is read by each replica's urgent member alone: its own fetch queue, never
        # behind another lane's read-ahead.
        readers = await asyncio.to_thread(group_members, bootstrap, group)
        p30 = {(topics.p30, p) for p in range(topics.partitions)}
        urgent = {name: parts for name, parts in readers.items() if name.endswith("-urgent")}
        assert set().union(*urgent.values()) == p30
        assert all(not parts & p30 for name, parts in readers.items() if name not in urgent)
        await asyncio.to_thread(produce, bootstrap, topics, first)
        addresses = [orchestrator_address(orchestrator), f"127.0.0.1:{orch1.grpc_port}"]
        processor = processor_for(settings, addresses, recorder, concurrency=8)
        async with running(processor):
            await recorder.wait_for(lambda: recorder.distinct >= 300, 60, "300 processed")
            await other.kill9()
            killed_at = time.monotonic()
            at_kill = recorder.distinct
            # Written after the kill: replica 1's partitions get some; only replica 0 is left.
            await asyncio.to_thread(produce, bootstrap, topics, second)
            n = len(first) + len(second)
            await recorder.wait_for(lambda: recorder.distinct >= n, 90, "every event")
            took_over_s = time.monotonic() - killed_at
            lag = await wait_lag_zero(bootstrap, group, lane_topics(topics))
            members = await asyncio.to_thread(group_assignment, bootstrap, group)
    print(
        f"\n[replica kill -9] processed {at_kill}/{len(first)} at kill; all done "
        f"{took_over_s:.1f}s after; duplicates={recorder.duplicates()}"
    )
    assert set(recorder.counts) == {e.event_id for e in first + second}, "nothing lost"
    assert set(lag.values()) == {0}
    assert members == {"orchestrator-0": all_lanes}
    # The survivor learns what the dead replica finished: from its commit metadata, and from
    # the workers, which send their recent ACKs of the lost stream to the other replicas.
    n = len(first) + len(second)
    assert recorder.duplicates() <= n // 100, f"{recorder.duplicates()} duplicates of {n}"


# -- 6. P10 flood with a small buffer -----------------------------------------------------------


async def test_p10_flood_pauses_p10_and_p30_keeps_its_slo(
    kafka_broker: LocalBroker,
    topics: TopicSettings,
    components: Callable[[str, dict[str, str]], Component],
) -> None:
    """20k x 1 KiB P10 into a 2 MiB buffer: P10 pauses, P30 stays < 5 s, RSS bounded, P10 done."""
    bootstrap = kafka_broker.bootstrap
    n_flood, n_p30 = 20_000, 40
    settings = read_settings(bootstrap, topics, orchestrator={"buffer_budget_bytes": 2 << 20})
    orch = subprocess_orchestrator(settings)
    proc = components("orchestrator", orchestrator_env(bootstrap, topics, orch))
    await proc.start()
    await wait_http_ready(f"http://127.0.0.1:{orch.metrics_port}/readyz", proc)
    rss = psutil.Process(proc.pid)
    baseline = rss.memory_info().rss
    peak = baseline

    payload = b'{"pad":"' + b"x" * 1000 + b'"}'
    flood = [
        make_event(f"flood-{i}", Priority.P10, payload=payload, company=f"bulk-{i % 11}")
        for i in range(n_flood)
    ]
    await asyncio.to_thread(produce, bootstrap, topics, flood)

    async def sample_rss(stop: asyncio.Event) -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss.memory_info().rss)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await stop.wait()

    async def send_p30(done: asyncio.Event) -> None:
        for i in range(n_p30):
            event = make_event(f"p30-{i}", Priority.P30, company=f"vip-{i % 3}")
            await asyncio.to_thread(produce, bootstrap, topics, [event])
            await asyncio.sleep(0.1)
        done.set()

    # Nothing is processed yet: the buffer fills to P10's share and P10 pauses.
    async with asyncio.timeout(20):
        stats = await get_stats(orch.metrics_port)
        # /stats is HTTP in another process: there is no event to await.
        while not stats["by_lane"]["P10"]["paused"]:
            await asyncio.sleep(0.1)
            stats = await get_stats(orch.metrics_port)
    p10_at_pause = stats["by_lane"]["P10"]
    # P10 alone stops: its fetches must not push the buffer past the higher lanes' shares.
    assert not stats["by_lane"]["P30"]["paused"]
    assert not stats["by_lane"]["P20"]["paused"]
    assert stats["buffer_bytes"] < 0.5 * stats["buffer_budget_bytes"]

    recorder = Recorder(sleep_s=0.002)
    processor = processor_for(settings, [f"127.0.0.1:{orch.grpc_port}"], recorder, concurrency=32)
    stop_sampling = asyncio.Event()
    p30_sent = asyncio.Event()
    started = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sample_rss(stop_sampling))
        async with running(processor):
            tg.create_task(send_p30(p30_sent))
            async with asyncio.timeout(30):
                await p30_sent.wait()
            flood_left = n_flood - sum(1 for e in recorder.counts if e.startswith("flood-"))
            total = n_flood + n_p30
            await recorder.wait_for(lambda: recorder.distinct >= total, 120, "every event")
            drained_s = time.monotonic() - started
            lag = await wait_lag_zero(bootstrap, orch.group_id, lane_topics(topics))
            stats = await get_stats(orch.metrics_port)
        stop_sampling.set()

    latencies = sorted(
        wall - recorder.events[e].ingested_at_ms
        for e, _, _, wall in recorder.calls
        if e.startswith("p30-")
    )
    grown_mib = (peak - baseline) / (1 << 20)
    print(
        f"\n[flood] P10 paused at buffered={p10_at_pause['buffered']}; P30 latency ms: "
        f"p50={latencies[len(latencies) // 2]} max={latencies[-1]}; P10 left when the P30 "
        f"burst ended: {flood_left}; all drained in {drained_s:.1f}s; RSS baseline "
        f"{baseline / (1 << 20):.0f} MiB, peak +{grown_mib:.0f} MiB"
    )
    assert flood_left > 0, "the P30 events must be sent while the flood is being served"
    assert latencies[-1] < 5000, f"P30 over its SLO during the flood: {latencies[-5:]} ms"
    assert grown_mib < 150
    assert set(recorder.counts) == {e.event_id for e in flood} | {f"p30-{i}" for i in range(40)}
    assert set(lag.values()) == {0}
    p10 = stats["by_lane"]["P10"]
    assert not p10["paused"]
    assert p10["buffered"] == 0
    assert p10["processed"] == n_flood


async def test_orchestrator_without_its_topics_exits_2_naming_them(
    kafka_broker: LocalBroker,
) -> None:
    """A configuration fault found while starting (missing topics): exit 2, one clear line."""
    missing = unique_topics()  # never created
    env = component_env(
        kafka_broker.bootstrap,
        missing,
        EVENTGW_ORCHESTRATOR__GRPC_PORT=str(free_port()),
        EVENTGW_ORCHESTRATOR__METRICS_PORT=str(free_port()),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventgw.cli.main",
        "orchestrator",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, stderr = await proc.communicate()
    text = stderr.decode()
    assert proc.returncode == 2, text
    assert "eventgw: invalid configuration: topics: missing on" in text
    assert "Traceback" not in text
