"""The dispatcher's rules, on a fake clock: credit-based dispatch, results, leases, streams.

Pure logic: the `RecordWriter` is a fake that records what it is asked to write and lets the
test settle each write (Kafka's answer). What these rules do against real Kafka and real
workers is in tests/integration/test_read_path.py.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import OrchestratorSettings, TopicSettings
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import (
    H_ATTEMPT,
    H_EVENT_ID,
    H_LAST_ERROR,
    H_ORIGINAL_TOPIC,
    H_REDRIVEN,
    H_RETRY_AT_MS,
    LANE_OF_PRIORITY,
    SLO_SECONDS,
    Priority,
    event_headers,
)
from eventgw.ingest.flow_control import decode as decode_signal
from eventgw.kafka.consumer import ConsumedRecord
from eventgw.metrics.backend import Metrics
from eventgw.orchestrator import commit_metadata
from eventgw.orchestrator.dispatcher import Dispatcher
from eventgw.orchestrator.flow_control import encode, evaluate

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventgw.kafka.producer import Record
    from eventgw.orchestrator.sessions import WorkerSession

TOPICS = TopicSettings()
LEASE_S = 30.0


@dataclass
class FakeWriter:
    """Records submissions; the test answers each with ``settle``."""

    pending: list[tuple[str, Record, Callable[[bool], None], bool]] = field(default_factory=list)

    def submit(
        self, topic: str, record: Record, done: Callable[[bool], None], *, forever: bool = False
    ) -> None:
        self.pending.append((topic, record, done, forever))

    def settle(self, ok: bool = True) -> list[tuple[str, Record]]:
        """Answer every pending write with ``ok``; return what was written."""
        settled, self.pending = self.pending, []
        for _, _, done, _ in settled:
            done(ok)
        return [(topic, record) for topic, record, _, _ in settled]


class Fixture:
    """A dispatcher on a fake clock, and records as the lane consumer would deliver them."""

    def __init__(self, *, time_scale: float = 1.0, **settings: object) -> None:
        self.clock = FakeClock()
        self.writer = FakeWriter()
        self.metrics = Metrics()
        settings.setdefault("lease_s", LEASE_S)
        self.metrics = Metrics()
        self.d = Dispatcher(
            OrchestratorSettings(**settings),  # type: ignore[arg-type]  # test keywords
            TOPICS,
            self.writer,
            self.metrics,
            now_ms=self.clock.wall_ms,
            monotonic=self.clock.monotonic,
            now_wall=lambda: self.clock.wall_ms() / 1000,
            time_scale=time_scale,
        )
        self._offsets = itertools.count()

    def record(
        self, priority: Priority, *, age_s: float = 0.0, topic: str | None = None, eid: str = ""
    ) -> ConsumedRecord:
        offset = next(self._offsets)
        ingested = self.clock.wall_ms() - int(age_s * 1000)
        event = pb.EventData(
            event_id=eid or f"e{offset}",
            company_id="acme",
            priority=priority.value,  # type: ignore[arg-type]  # same numbers
            ingested_at_ms=ingested,
            slo_deadline_ms=ingested + int(SLO_SECONDS[priority] * 1000),
        )
        return ConsumedRecord(
            topic or TOPICS.lane_topic(LANE_OF_PRIORITY[priority]),
            0,
            offset,
            b"acme",
            event.SerializeToString(),
            event_headers(event),
        )

    def add(self, *priorities: Priority, age_s: float = 0.0) -> list[str]:
        records = [self.record(p, age_s=age_s) for p in priorities]
        self.d.add_records(records)
        return [f"{r.topic}/{r.partition}/{r.offset}" for r in records]


async def sent(session: WorkerSession) -> list[pb.TaskBatch]:
    """Every message queued for ``session`` so far, parsed (kept apart where they were)."""
    if not session._outbox:
        return []
    return [pb.TaskBatch.FromString(m) for m in await session.wait_outgoing()]


async def sent_tasks(session: WorkerSession) -> list[pb.Task]:
    return [t for batch in await sent(session) for t in batch.tasks]


def result(
    task_id: str, kind: pb.ResultKind, *, delay_ms: int = 0, count: int = 0, error: str = ""
) -> pb.TaskResult:
    return pb.TaskResult(
        task_id=task_id, kind=kind, delay_ms=delay_ms, delivery_count=count, error=error
    )


# -- credit-based dispatch --------------------------------------------------------------------


async def test_a_new_session_is_welcomed_with_the_index_and_backlog() -> None:
    f = Fixture(index=0)
    f.add(Priority.P20, Priority.P20)
    session = f.d.open_session("w1")
    [welcome] = await sent(session)
    assert (len(welcome.tasks), welcome.backlog) == (0, 2)
    assert welcome.fleet == "primary"


async def test_work_arriving_while_no_worker_has_credit_here_is_hinted() -> None:
    """A worker whose credit is parked at another, idle orchestrator (the other fleet's)
    must hear of the backlog, or it never moves its credit here."""
    f = Fixture()
    session = f.d.open_session("w1")
    [welcome] = await sent(session)
    assert welcome.backlog == 0
    f.add(Priority.P30, Priority.P20)
    [hinted] = await sent(session)
    assert (len(hinted.tasks), hinted.backlog) == (0, 2)
    f.add(Priority.P10)
    assert await sent(session) == [], "once, until its credit runs out again"


async def test_the_welcome_names_the_fleet_and_later_hints_do_not() -> None:
    """The worker learns the replica's cluster once, at the welcome (config/fleets.py)."""
    f = Fixture(index=3, number_of_replicas=4)
    f.d.fleet = "rollout"
    session = f.d.open_session("w1")
    [welcome] = await sent(session)
    assert (welcome.orchestrator_index, welcome.fleet) == (3, "rollout")
    f.add(Priority.P20)
    f.d.grant(session, 1)
    assert all(batch.fleet == "" for batch in await sent(session))


async def test_credit_brings_ready_tasks_in_slo_order_and_never_more() -> None:
    f = Fixture()
    p10, p20, p30 = f.add(Priority.P10, Priority.P20, Priority.P30)
    session = f.d.open_session("w1")
    await sent(session)
    f.d.grant(session, 2)
    [batch] = await sent(session)
    assert [t.task_id for t in batch.tasks] == [p30, p20]
    assert batch.backlog == 1
    assert session.credit == 0
    assert {t.task_id for t in session.held()} == {p30, p20}
    assert [t.delivery_count for t in batch.tasks] == [1, 1]
    assert batch.tasks[0].rank < batch.tasks[1].rank, "ranks keep the buffer's order"
    f.d.grant(session, 5)
    assert [t.task_id for t in await sent_tasks(session)] == [p10]
    assert session.credit == 4


async def test_a_task_goes_out_as_soon_as_it_is_ready_when_credit_waits() -> None:
    f = Fixture()
    session = f.d.open_session("w1")
    f.d.grant(session, 3)
    await sent(session)
    [tid] = f.add(Priority.P20)
    assert [t.task_id for t in await sent_tasks(session)] == [tid]
    assert session.credit == 2


async def test_an_urgent_task_takes_the_next_free_slot() -> None:
    """Slots full of P10: a P30 that arrives is the next task out, at the next credit."""
    f = Fixture()
    f.add(*[Priority.P10] * 10)
    session = f.d.open_session("w1")
    f.d.grant(session, 4)  # the worker's slots and prefetch: all P10 now
    leased = [t.task_id for t in await sent_tasks(session)]
    assert len(leased) == 4
    f.clock.advance(0.5)
    [p30] = f.add(Priority.P30)
    assert await sent_tasks(session) == [], "no credit: nothing more is sent"
    f.clock.advance(0.01)  # one slot's time: a handler finishes and frees one credit
    f.d.apply_results([result(leased[0], pb.ACK)], session)
    f.d.grant(session, 1)
    assert [t.task_id for t in await sent_tasks(session)] == [p30]


async def test_a_backlog_without_credit_is_hinted_once_per_grant() -> None:
    f = Fixture()
    busy = f.d.open_session("busy")
    idle = f.d.open_session("idle")
    await sent(busy)
    await sent(idle)
    f.d.grant(busy, 1)
    f.add(Priority.P20, Priority.P20, Priority.P20)
    assert [(len(b.tasks), b.backlog) for b in await sent(busy)] == [(1, 2)]
    assert [(len(b.tasks), b.backlog) for b in await sent(idle)] == [(0, 2)]
    f.add(Priority.P20)
    assert await sent(idle) == [], "told once until it gives credit"
    f.d.grant(idle, 1)
    assert len(await sent_tasks(idle)) == 1


async def test_sessions_with_credit_are_served_in_turn() -> None:
    f = Fixture()
    a, b = f.d.open_session("a"), f.d.open_session("b")
    f.d.grant(a, 10)
    f.d.grant(b, 10)
    await sent(a)
    await sent(b)
    f.add(Priority.P20)
    f.add(Priority.P20)
    assert (len(await sent_tasks(a)), len(await sent_tasks(b))) == (1, 1)


async def test_revoke_gives_back_unused_credit_and_says_how_much() -> None:
    f = Fixture()
    session = f.d.open_session("w")
    f.d.grant(session, 5)
    await sent(session)
    assert f.d.revoke_credit(session, 3) == 3
    assert f.d.revoke_credit(session, 10) == 2
    messages = await sent(session)
    assert [m.credit_returned for m in messages] == [3, 2], "never joined: each answer counts"
    assert session.credit == 0
    f.add(Priority.P20)
    assert await sent_tasks(session) == []


async def test_nothing_is_dispatched_while_draining() -> None:
    f = Fixture()
    session = f.d.open_session("w")
    f.d.stop_serving()
    f.d.grant(session, 5)
    f.add(Priority.P30)
    assert await sent_tasks(session) == []


# -- the end of a stream and lease expiry ----------------------------------------------------


async def test_a_stream_that_ends_returns_its_leases_at_once() -> None:
    f = Fixture()
    ids = f.add(Priority.P20, Priority.P20, Priority.P20)
    gone, other = f.d.open_session("gone"), f.d.open_session("other")
    f.d.grant(gone, 3)
    assert len(await sent_tasks(gone)) == 3
    await sent(other)
    f.d.grant(other, 10)
    assert await sent_tasks(other) == []
    assert f.d.close_session(gone) == 3
    again = await sent_tasks(other)
    assert sorted(t.task_id for t in again) == sorted(ids)
    assert {t.delivery_count for t in again} == {2}, "the lost delivery counts"
    assert f.d.returned_on_disconnect == 3
    assert gone not in f.d.sessions


async def test_work_arriving_while_a_stream_closes_goes_to_the_sessions_still_open() -> None:
    """The stream's EOF closes its session; `close_session` runs only once its writer has
    sent what was left. Work read in between went to the closed session: push() raised and
    the orchestrator crashed (the fault matrix's chaos run, a processor killed)."""
    f = Fixture()
    closing, other = f.d.open_session("closing"), f.d.open_session("other")
    f.d.grant(closing, 5)
    f.d.grant(other, 5)
    await sent(closing)
    await sent(other)
    closing.close()  # EOF read; the writer still drains
    ids = f.add(Priority.P30, Priority.P20)
    assert sorted(t.task_id for t in await sent_tasks(other)) == sorted(ids)
    assert closing.held() == []
    assert f.d.close_session(closing) == 0


async def test_an_expired_lease_is_served_again_and_leaves_its_session() -> None:
    f = Fixture(lease_s=2.0)
    [tid] = f.add(Priority.P20)
    slow, fresh = f.d.open_session("slow"), f.d.open_session("fresh")
    f.d.grant(slow, 1)
    await sent(slow)
    await sent(fresh)
    f.d.grant(fresh, 1)
    f.clock.advance(2.5)
    f.d.tick()
    assert [t.task_id for t in await sent_tasks(fresh)] == [tid]
    assert tid not in {t.task_id for t in slow.held()}
    assert f.d.counters["p20"].expired == 1


# -- results ----------------------------------------------------------------------------------


async def _leased(f: Fixture, *priorities: Priority) -> tuple[WorkerSession, list[str]]:
    ids = f.add(*priorities)
    session = f.d.open_session("w")
    f.d.grant(session, len(ids))
    await sent(session)
    return session, ids


async def test_ack_finishes_the_task_and_its_offset_commits() -> None:
    f = Fixture()
    session, [a, b] = await _leased(f, Priority.P20, Priority.P20)
    assert f.d.apply_results([result(a, pb.ACK), result(b, pb.ACK)], session) == (2, 0)
    assert len(f.d.buffer) == 0
    assert f.d.committable() == {(TOPICS.p20, 0): 2}
    assert f.d.class_counters[20].processed == 2
    assert not session.held()


async def test_ack_is_accepted_in_any_state_but_only_once() -> None:
    """The work was done: a late ACK (lease expired, stream gone) still finishes the task."""
    f = Fixture(lease_s=1.0)
    session, [tid] = await _leased(f, Priority.P20)
    f.d.close_session(session)  # the worker went away; the lease came back
    assert f.d.apply_results([result(tid, pb.ACK)]) == (1, 0)
    assert f.d.apply_results([result(tid, pb.ACK)]) == (0, 1), "a second ACK is stale"
    assert len(f.d.buffer) == 0


async def test_release_serves_again_without_counting_a_delivery() -> None:
    f = Fixture()
    session, [tid] = await _leased(f, Priority.P20)
    assert f.d.apply_results([result(tid, pb.RELEASE, count=1)], session) == (1, 0)
    task = f.d.buffer.get(tid)
    assert task is not None
    assert (task.delivery_count, task.attempt) == (0, 0)
    assert f.d.buffer.has_ready()


async def test_a_result_for_another_streams_lease_is_stale() -> None:
    f = Fixture()
    _worker, [tid] = await _leased(f, Priority.P20)
    intruder = f.d.open_session("intruder")
    for kind in (pb.NACK, pb.RELEASE, pb.REJECT):
        assert f.d.apply_results([result(tid, kind)], intruder) == (0, 1)
    assert f.d.buffer.lease_of(tid) is not None, "still leased to its worker"
    assert f.d.stale_results == 3


async def test_an_ack_for_another_streams_lease_is_stale_and_the_lease_stays() -> None:
    """A second worker cannot finish the first one's task (docs/security.md, "Leases")."""
    f = Fixture()
    worker, [tid] = await _leased(f, Priority.P20)
    intruder = f.d.open_session("intruder")
    assert f.d.apply_results([], intruder, acked=[tid]) == (0, 1)
    assert f.d.apply_results([result(tid, pb.ACK)], intruder) == (0, 1)
    assert f.d.stale_results == 2
    assert f.d.buffer.lease_of(tid) is not None, "still leased to its worker"
    assert f.d.committable() == {}, "nothing finished"
    assert f.d.apply_results([], worker, acked=[tid]) == (1, 0), "its own worker's ACK counts"
    assert f.d.committable() == {(TOPICS.p20, 0): 1}


async def test_an_ack_on_a_new_stream_finishes_a_task_whose_lease_came_back() -> None:
    """Crash-dedupe keeps working: a reconnected worker's ACK of a returned lease counts."""
    f = Fixture()
    old, [tid] = await _leased(f, Priority.P20)
    f.d.close_session(old)  # the stream dropped; the task is ready again, leased to no one
    new = f.d.open_session("w")
    assert f.d.apply_results([], new, acked=[tid]) == (1, 0)
    assert f.d.buffer.get(tid) is None


async def test_a_result_for_an_older_delivery_is_stale() -> None:
    f = Fixture()
    session, [tid] = await _leased(f, Priority.P20)
    assert f.d.apply_results([result(tid, pb.NACK, count=7)], session) == (0, 1)


async def test_nack_with_a_short_delay_waits_in_memory_then_counts_an_attempt() -> None:
    f = Fixture()
    session, [tid] = await _leased(f, Priority.P20)
    f.d.apply_results([result(tid, pb.NACK, delay_ms=5000)], session)
    assert f.writer.pending == []
    assert not f.d.buffer.has_ready()
    f.clock.advance(5.0)
    f.d.tick()
    f.d.grant(session, 1)
    [again] = await sent_tasks(session)
    assert (again.task_id, again.event.attempt) == (tid, 1)


async def test_nack_with_a_long_delay_goes_to_its_retry_topic_once_kafka_confirms() -> None:
    f = Fixture()
    session, [tid] = await _leased(f, Priority.P20)
    f.d.apply_results([result(tid, pb.NACK, delay_ms=90_000, error="busy")], session)
    assert f.d.apply_results([result(tid, pb.ACK)], session) == (0, 1), "write in flight"
    assert len(f.d.buffer) == 1, "held until the write is confirmed"
    [(topic, (_key, value, headers))] = f.writer.settle(True)
    assert topic == TOPICS.retry_60s
    h = dict(headers)
    assert h[H_ORIGINAL_TOPIC] == TOPICS.p20.encode()
    assert h[H_LAST_ERROR] == b"busy"
    assert h[H_ATTEMPT] == b"1"
    assert int(h[H_RETRY_AT_MS]) == f.clock.wall_ms() + 60_000
    assert pb.EventData.FromString(value).attempt == 1
    assert len(f.d.buffer) == 0
    assert f.d.committable() == {(TOPICS.p20, 0): 1}


async def test_time_scale_shrinks_retry_delays_and_leases() -> None:
    """Tests run the real retry ladder in seconds (``OrchestratorService(time_scale=…)``)."""
    f = Fixture(lease_s=10.0, time_scale=0.1)
    session, [short, long] = await _leased(f, Priority.P20, Priority.P20)
    nacks = [result(short, pb.NACK, delay_ms=5000), result(long, pb.NACK, delay_ms=90_000)]
    f.d.apply_results(nacks, session)
    [(topic, (_key, _value, headers))] = f.writer.settle(True)
    assert topic == TOPICS.retry_60s
    assert int(dict(headers)[H_RETRY_AT_MS]) == f.clock.wall_ms() + 6_000, "60 s x 0.1"
    f.clock.advance(0.4)
    f.d.tick()
    assert not f.d.buffer.has_ready(), "5 s x 0.1 in memory: not due yet"
    f.clock.advance(0.2)
    f.d.tick()
    f.d.grant(session, 1)
    [again] = await sent_tasks(session)
    assert again.task_id == short
    f.clock.advance(0.9)
    f.d.tick()
    assert f.d.counters["p20"].expired == 0, "a lease of 10 s x 0.1 = 1 s"
    f.clock.advance(0.2)
    f.d.tick()
    assert f.d.counters["p20"].expired == 1


@pytest.mark.parametrize("time_scale", [0.0, -1.0, 1.5])
def test_a_time_scale_outside_0_1_is_refused(time_scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale"):
        Fixture(time_scale=time_scale)


async def test_a_retry_write_kafka_refuses_is_served_again_not_lost() -> None:
    f = Fixture()
    session, [tid] = await _leased(f, Priority.P20)
    f.d.apply_results([result(tid, pb.NACK, delay_ms=90_000)], session)
    f.writer.settle(False)
    assert f.d.committable() == {}
    f.d.grant(session, 1)
    assert [t.task_id for t in await sent_tasks(session)] == [tid]


async def test_past_max_attempts_and_reject_go_to_the_dlq() -> None:
    f = Fixture(max_attempts=1)
    session, [a, b] = await _leased(f, Priority.P30, Priority.P10)
    f.d.apply_results(
        [result(a, pb.NACK, error="boom"), result(b, pb.REJECT, error="bad")], session
    )
    written = f.writer.settle(True)
    assert [t for t, _ in written] == [TOPICS.dlq, TOPICS.dlq]
    assert [dict(r[2])[H_LAST_ERROR] for _, r in written] == [b"boom", b"bad"]
    assert f.d.class_counters[30].dead_lettered == f.d.class_counters[10].dead_lettered == 1


async def test_a_task_whose_stream_ended_during_its_retry_write_is_served_again() -> None:
    f = Fixture()
    session, [tid] = await _leased(f, Priority.P20)
    f.d.apply_results([result(tid, pb.NACK, delay_ms=90_000)], session)
    assert f.d.close_session(session) == 0, "a task being written stays leased"
    f.writer.settle(False)
    other = f.d.open_session("other")
    f.d.grant(other, 1)
    assert [t.task_id for t in await sent_tasks(other)] == [tid]


async def test_an_undecodable_record_is_dead_lettered_until_kafka_takes_it() -> None:
    f = Fixture()
    garbage = ConsumedRecord(TOPICS.p20, 0, 0, b"k", b"\xff\xfe not protobuf", [])
    assert f.d.add_records([garbage]) == 0
    [(topic, record, _, forever)] = f.writer.pending
    assert (topic, record[1], forever) == (TOPICS.dlq, garbage.value, True)
    assert f.d.committable() == {}
    f.writer.settle(True)
    assert f.d.committable() == {(TOPICS.p20, 0): 1}
    counted = 'eventgw_orchestrator_invalid_records_total{action="dead_lettered",source="lane"} 1.0'
    assert counted in f.metrics.render().decode()


@pytest.mark.parametrize(
    "value",
    [b"", pb.EventData(company_id="acme", priority=pb.P20).SerializeToString()],
    ids=["tombstone", "no-event-id"],
)
async def test_a_record_without_an_event_id_is_dead_lettered_not_served(value: bytes) -> None:
    """A tombstone (null value) parses as an empty EventData: it is no event (fault matrix)."""
    f = Fixture()
    empty = ConsumedRecord(TOPICS.p20, 0, 0, b"k", value, [])
    assert f.d.add_records([empty]) == 0
    session = f.d.open_session("w")
    f.d.grant(session, 1)
    assert await sent_tasks(session) == []
    [(topic, record, _, forever)] = f.writer.pending
    assert (topic, record[1], forever) == (TOPICS.dlq, value, True)
    f.writer.settle(True)
    assert f.d.committable() == {(TOPICS.p20, 0): 1}


async def test_revoked_partitions_leave_sessions_and_commit_what_is_done() -> None:
    f = Fixture()
    session, [a, b] = await _leased(f, Priority.P20, Priority.P20)
    f.d.apply_results([result(a, pb.ACK)], session)
    assert f.d.revoke_partitions([(TOPICS.p20, 0)]) == {(TOPICS.p20, 0): (1, "")}
    assert not session.held()
    assert f.d.apply_results([result(b, pb.ACK)], session) == (0, 1)


@pytest.mark.parametrize("kind", [pb.NACK, pb.REJECT, pb.RESULT_KIND_UNSPECIFIED])
async def test_failures_are_counted_as_results(kind: pb.ResultKind) -> None:
    f = Fixture(max_attempts=1)
    session, [tid] = await _leased(f, Priority.P20)
    assert f.d.apply_results([result(tid, kind)], session) == (1, 0)
    assert [t for t, _ in f.writer.settle(True)] == [TOPICS.dlq]


# -- redriven records: the parking lot (docs/failure-handling.md) ------------------------------


def _redriven(f: Fixture, priority: Priority, marker: bytes) -> ConsumedRecord:
    r = f.record(priority)
    headers = [*r.headers, (H_REDRIVEN, marker)]
    return ConsumedRecord(r.topic, r.partition, r.offset, r.key, r.value, headers)


async def test_a_redriven_record_that_fails_for_good_goes_to_the_parking_lot() -> None:
    f = Fixture(max_attempts=1)
    marker = f"{TOPICS.dlq}:1:17".encode()
    f.d.add_records([_redriven(f, Priority.P20, marker), _redriven(f, Priority.P30, marker)])
    f.add(Priority.P10)
    session = f.d.open_session("w")
    f.d.grant(session, 3)
    ids = [t.task_id for t in await sent_tasks(session)]
    kinds = {ids[0]: pb.REJECT, ids[1]: pb.NACK, ids[2]: pb.NACK}
    f.d.apply_results([result(tid, kind, error="again") for tid, kind in kinds.items()], session)
    written = {dict(r[2])[H_EVENT_ID]: (t, dict(r[2])) for t, r in f.writer.settle(True)}
    assert sorted(t for t, _ in written.values()) == sorted(
        [TOPICS.parking_lot, TOPICS.parking_lot, TOPICS.dlq]
    )
    for topic, headers in written.values():
        assert headers.get(H_REDRIVEN) == (marker if topic == TOPICS.parking_lot else None)
    assert f.d.class_counters[10].dead_lettered == 1
    assert f.d.class_counters[20].dead_lettered == f.d.class_counters[30].dead_lettered == 1


async def test_the_redriven_mark_survives_the_retry_topics() -> None:
    f = Fixture(max_attempts=2)
    marker = f"{TOPICS.dlq}:0:5".encode()
    f.d.add_records([_redriven(f, Priority.P20, marker)])
    session = f.d.open_session("w")
    f.d.grant(session, 1)
    [task] = await sent_tasks(session)
    f.d.apply_results([result(task.task_id, pb.NACK, delay_ms=90_000)], session)
    [(topic, (key, value, headers))] = f.writer.settle(True)
    assert topic == TOPICS.retry_60s
    assert dict(headers)[H_REDRIVEN] == marker
    # The retry consumer reads it back (attempt 1); it fails again past max_attempts.
    f.d.add_records([ConsumedRecord(TOPICS.retry_60s, 0, 0, key, value, headers)])
    f.d.grant(session, 1)
    [again] = await sent_tasks(session)
    f.d.apply_results([result(again.task_id, pb.NACK, error="still")], session)
    [(topic, (_, _, headers))] = f.writer.settle(True)
    assert topic == TOPICS.parking_lot
    assert dict(headers)[H_REDRIVEN] == marker
    assert H_RETRY_AT_MS not in dict(headers)


async def test_the_compact_ack_list_finishes_tasks_and_counts_stale_ones() -> None:
    f = Fixture()
    session, [a, b, c] = await _leased(f, Priority.P20, Priority.P20, Priority.P20)
    f.d.apply_results([result(c, pb.NACK, delay_ms=90_000)], session)  # c: write in flight
    assert f.d.apply_results([], session, acked=[a, b, c, "t/9/9"]) == (2, 2)
    assert f.d.buffer.get(a) is None
    assert f.d.buffer.get(b) is None
    assert f.d.class_counters[20].processed == 2
    assert f.d.stale_results == 2


# -- crash-dedupe: finished runs in commit metadata, early ACKs --------------------------------


async def test_a_stuck_partition_commits_the_runs_finished_above_it() -> None:
    f = Fixture()
    session, ids = await _leased(f, *[Priority.P20] * 5)  # offsets 0..4 of partition 0
    f.d.apply_results([], session, acked=[ids[1], ids[2], ids[4]])  # 0 and 3 still open
    assert f.d.committable() == {(TOPICS.p20, 0): 0}, "the position cannot move past 0"
    metadata = f.d.commit_metadata(TOPICS.p20, 0, 0)
    assert commit_metadata.decode(0, metadata) == [(1, 2), (4, 4)]
    revoked = f.d.revoke_partitions([(TOPICS.p20, 0)])
    assert revoked == {(TOPICS.p20, 0): (0, metadata)}, "the next owner learns them too"


async def test_records_a_previous_owner_finished_are_not_served_again() -> None:
    first = Fixture()
    session, ids = await _leased(first, *[Priority.P20] * 6)
    first.d.apply_results([], session, acked=[ids[1], ids[2], ids[4], ids[5]])
    metadata = first.d.commit_metadata(TOPICS.p20, 0, 0)
    # A new replica (or the same one restarted) reads the partition again from offset 0.
    again = Fixture()
    again.d.preset_finished(TOPICS.p20, 0, 0, metadata)
    records = [again.record(Priority.P20) for _ in range(6)]
    assert again.d.add_records(records) == 2, "only offsets 0 and 3 become tasks"
    assert again.d.skipped_finished == 4
    assert again.d.committable() == {(TOPICS.p20, 0): 0}
    other = again.d.open_session("w")
    again.d.grant(other, 10)
    assert sorted(t.task_id for t in await sent_tasks(other)) == [
        f"{TOPICS.p20}/0/0",
        f"{TOPICS.p20}/0/3",
    ]


async def test_an_ack_that_arrives_before_its_record_is_read_again_finishes_it() -> None:
    f = Fixture(lease_s=30.0)
    early = f"{TOPICS.p20}/0/0"
    session = f.d.open_session("w")
    assert f.d.apply_results([], session, acked=[early]) == (0, 1), "unknown: stale, kept"
    assert f.d.add_records([f.record(Priority.P20)]) == 0, "finished at intake, not served"
    assert f.d.committable() == {(TOPICS.p20, 0): 1}
    f.d.apply_results([], session, acked=[f"{TOPICS.p20}/0/1"])
    f.clock.advance(31)
    f.d.tick()  # past a lease's time the early ACK is forgotten
    assert f.d.add_records([f.record(Priority.P20)]) == 1


async def test_malformed_commit_metadata_finishes_nothing() -> None:
    f = Fixture()
    assert f.d.preset_finished(TOPICS.p20, 0, 0, "eg1:zz+1") == 0
    assert f.d.add_records([f.record(Priority.P20)]) == 1


# -- hostile records: whatever is on a lane or retry topic, the orchestrator goes on ---------

U32 = 2**32 - 1
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@pytest.mark.parametrize("kind", [pb.NACK, pb.REJECT])
async def test_a_record_at_the_largest_attempt_count_goes_to_the_dlq_without_overflow(
    kind: pb.ResultKind,
) -> None:
    """``attempt`` is a uint32 on the wire: counting one more on 2**32 - 1 raised ValueError
    inside `apply_results`, which ended the worker's stream (or the results reader)."""
    f = Fixture()
    now = f.clock.wall_ms()
    event = pb.EventData(
        event_id="e", company_id="acme", priority=pb.P20, ingested_at_ms=now,
        slo_deadline_ms=now + 60_000, attempt=U32,
    )  # fmt: skip
    f.d.add_records([ConsumedRecord(TOPICS.p20, 0, 0, b"acme", event.SerializeToString(), [])])
    session = f.d.open_session("w")
    f.d.grant(session, 1)
    [task] = await sent_tasks(session)
    assert f.d.apply_results([result(task.task_id, kind, delay_ms=120_000)], session) == (1, 0)
    [(topic, (_, value, _))] = f.writer.settle()
    assert topic == TOPICS.dlq
    assert pb.EventData.FromString(value).attempt <= U32
    assert f.d.committable() == {(TOPICS.p20, 0): 1}


events = st.builds(
    pb.EventData,
    event_id=st.text(max_size=40),
    company_id=st.text(max_size=20),
    payload=st.binary(max_size=64),
    priority=st.sampled_from([0, 10, 20, 30, -1, 7, 2**31 - 1]),
    ingested_at_ms=I64,
    slo_deadline_ms=I64,
    attempt=st.integers(min_value=0, max_value=U32),
    offloaded=st.booleans(),
)
header_names = st.sampled_from(
    [H_ORIGINAL_TOPIC, H_REDRIVEN, H_RETRY_AT_MS, H_ATTEMPT, H_EVENT_ID, H_LAST_ERROR, "x"]
)
values = st.one_of(
    events.map(lambda e: e.SerializeToString()),
    st.binary(max_size=200),
    events.map(lambda e: e.SerializeToString()[:-3] + b"\xff\xff\xff"),
)
topics = st.sampled_from([TOPICS.p30, TOPICS.p10, TOPICS.offload, TOPICS.retry_120s, "foreign"])
kinds = st.sampled_from([pb.ACK, pb.NACK, pb.REJECT, pb.RELEASE, pb.RESULT_KIND_UNSPECIFIED])


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(
        st.tuples(topics, values, st.lists(st.tuples(header_names, st.binary(max_size=30)))),
        min_size=1,
        max_size=12,
    ),
    outcomes=st.lists(st.tuples(kinds, st.integers(min_value=0, max_value=U32)), max_size=40),
)
def test_any_records_are_served_dead_lettered_or_ignored_and_nothing_raises(
    records: list[tuple[str, bytes, list[tuple[str, bytes]]]],
    outcomes: list[tuple[pb.ResultKind, int]],
) -> None:
    """Any values and headers on the lanes: every message a worker gets parses, every
    result is applied, every retry/DLQ record is well formed, and the buffer drains."""
    asyncio.run(_serve_hostile(records, outcomes))


async def _serve_hostile(
    records: list[tuple[str, bytes, list[tuple[str, bytes]]]],
    outcomes: list[tuple[pb.ResultKind, int]],
) -> None:
    f = Fixture(max_attempts=3)
    consumed = [
        ConsumedRecord(topic, 0, offset, None, value, headers)
        for offset, (topic, value, headers) in enumerate(records)
    ]
    f.d.add_records(consumed)
    session = f.d.open_session("w")
    f.d.grant(session, 100)
    pending = iter(outcomes)
    for _ in range(30):
        tasks = [t for batch in await sent(session) for t in batch.tasks]  # all must parse
        for t in tasks:
            kind, delay_ms = next(pending, (pb.ACK, 0))
            f.d.apply_results([result(t.task_id, kind, delay_ms=delay_ms)], session)
        for topic, (_, value, headers) in f.writer.settle():
            assert topic in (TOPICS.dlq, TOPICS.parking_lot, *f.d.retry_topics)
            assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
            # Only a record dead-lettered unchanged (a tombstone is no event) may be empty.
            assert value or (H_LAST_ERROR, b"undecodable: not an eventgw EventData") in headers
        f.clock.advance(61)
        f.d.tick()
        f.d.grant(session, 100 - session.credit)
        if not len(f.d.buffer):
            break
    assert not len(f.d.buffer), "every task finished: served, retried or dead-lettered"
    lane_records = [r for r in consumed if r.topic != "foreign"]
    for topic in {r.topic for r in lane_records}:
        last = max(r.offset for r in lane_records if r.topic == topic)
        assert f.d.tracker.committable(topic, 0) == last + 1
    signals = evaluate(f.d.buffer.statistics(), 0)
    for signal in signals:  # what the orchestrator tells ingest is still a valid signal
        decode_signal(encode(signal, f.clock.wall_ms()))
    f.d.stats()
