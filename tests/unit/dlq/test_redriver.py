"""The redrive protocol on the in-memory Kafka: once per record, nothing lost, at every crash.

Crash points are simulated by `InMemoryKafka.crash_on_send` (the n-th write raises, as if the
process died there); the next run is a fresh `Redriver` on the same topics. The real-broker
version, with ``kill -9``, is in tests/integration/test_dlq_tools.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import TopicSettings
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import H_REDRIVEN, LANE_OF_PRIORITY, Priority, header_value
from eventgw.dlq.rate import RateLimiter
from eventgw.dlq.redrive_log import RedriveLog
from eventgw.dlq.redriver import Redriver
from eventgw.dlq.selection import Coordinate, Selection
from eventgw.kafka.testing import InMemoryKafka, SimulatedCrash
from tests.fixtures.dlq import dead_letter, make_event, undecodable_dead_letter

if TYPE_CHECKING:
    from eventgw.dlq.record import DlqRecord
    from eventgw.dlq.report import Progress

TOPICS = TopicSettings()
LANES = [TOPICS.p30, TOPICS.p20, TOPICS.p10, TOPICS.offload]
CLASSES = (Priority.P30, Priority.P20, Priority.P10)


class Sleeper:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.slept_s = 0.0

    async def __call__(self, seconds: float) -> None:
        self.slept_s += seconds
        self.clock.advance(seconds)


def make_kafka(n: int = 12, undecodable: int = 0) -> InMemoryKafka:
    """The lanes (3 partitions), a DLQ (2 partitions) holding ``n`` dead letters, the log."""
    kafka = InMemoryKafka(FakeClock())
    for lane in LANES:
        kafka.create_topic(lane, 3)
    kafka.create_topic(TOPICS.dlq, 2)
    kafka.create_topic(TOPICS.parking_lot, 1)
    kafka.create_topic(TOPICS.dlq_redrive_log, 2)
    for i in range(n):
        priority = CLASSES[i % 3]
        event = make_event(f"ev-{i}", priority, company=f"c{i % 4}", ingested_at_ms=1000 + i)
        origin = TOPICS.offload if i == 0 else TOPICS.lane_topic(LANE_OF_PRIORITY[priority])
        kafka.append(TOPICS.dlq, i % 2, *dead_letter(event, origin_topic=origin, error=f"err {i}"))
    for j in range(undecodable):
        kafka.append(
            TOPICS.dlq, 0, *undecodable_dead_letter(b"\xff%d" % j, origin_topic=TOPICS.p20)
        )
    return kafka


def redriver(kafka: InMemoryKafka, *, rate: float = 1000, batch_size: int = 4) -> Redriver:
    clock = FakeClock()
    return Redriver(
        topics=TOPICS,
        scanner=kafka,
        log=RedriveLog(TOPICS.dlq_redrive_log, kafka, kafka),
        producer=kafka,
        limiter=RateLimiter(rate, clock, Sleeper(clock)),
        clock=clock,
        batch_size=batch_size,
    )


def lane_copies(kafka: InMemoryKafka) -> Counter[str]:
    """How many lane records carry each ``eventgw-redriven`` marker."""
    return Counter(
        (header_value(r.headers, H_REDRIVEN) or b"").decode()
        for lane in LANES
        for r in kafka.records(lane)
        if header_value(r.headers, H_REDRIVEN)
    )


def dlq_keys(kafka: InMemoryKafka) -> set[str]:
    return {f"{TOPICS.dlq}:{r.partition}:{r.offset}" for r in kafka.records(TOPICS.dlq)}


async def test_every_selected_record_goes_to_its_lane_once_and_is_logged() -> None:
    kafka = make_kafka(12)
    seen: list[tuple[str, str]] = []
    report = await redriver(kafka).run(
        TOPICS.dlq, Selection(), on_record=lambda r, t: seen.append((r.coordinate, t))
    )
    assert (report.selected, report.redriven, report.failed, report.error) == (12, 12, 0, None)
    assert report.scanned == 12
    assert sum(report.by_target.values()) == 12
    assert report.by_target[TOPICS.offload] == 1  # ev-0's origin lane
    assert len(seen) == 12
    assert lane_copies(kafka) == Counter(dict.fromkeys(dlq_keys(kafka), 1))
    for lane in LANES:
        for r in kafka.records(lane):
            event = pb.EventData.FromString(r.value)
            assert event.attempt == 0
            assert (
                event.slo_deadline_ms
                == 1000
                + int(event.event_id[3:])
                + {
                    30: 5_000,
                    20: 60_000,
                    10: 1_200_000,
                }[event.priority]
            )
    log = await RedriveLog(TOPICS.dlq_redrive_log, kafka).load(TOPICS.dlq)
    assert {e.state for e in log.values()} == {"done"}
    assert set(log) == dlq_keys(kafka)
    assert kafka.records(TOPICS.dlq)  # the DLQ is left as it was


async def test_a_second_run_redrives_nothing() -> None:
    kafka = make_kafka(6)
    await redriver(kafka).run(TOPICS.dlq, Selection())
    before = kafka.sends
    report = await redriver(kafka).run(TOPICS.dlq, Selection())
    assert (report.selected, report.redriven, report.already_redriven) == (6, 0, 6)
    assert kafka.sends == before  # not even the log is written
    assert set(lane_copies(kafka).values()) == {1}


async def test_a_dry_run_writes_nothing_and_says_what_it_would_do() -> None:
    kafka = make_kafka(5, undecodable=1)
    seen: list[str] = []
    report = await redriver(kafka).run(
        TOPICS.dlq, Selection(), dry_run=True, on_record=lambda r, t: seen.append(t)
    )
    assert report.dry_run
    assert (report.redriven, report.undecodable) == (5, 1)
    assert len(seen) == 5
    assert kafka.sends == 0
    assert not any(kafka.records(lane) for lane in LANES)
    assert not kafka.records(TOPICS.dlq_redrive_log)


async def test_filters_select_and_a_later_run_takes_the_rest() -> None:
    kafka = make_kafka(12)
    only = Selection(companies=frozenset({"c1"}), classes=frozenset({Priority.P20}))
    report = await redriver(kafka).run(TOPICS.dlq, only)
    assert report.redriven == 1  # ev-1 is the only c1 P20 (ev-5 is c1 P10, ev-9 c1 P30)
    assert list(lane_copies(kafka)) == [f"{TOPICS.dlq}:1:0"]
    rest = await redriver(kafka).run(TOPICS.dlq, Selection())
    assert (rest.redriven, rest.already_redriven) == (11, 1)


async def test_explicit_records_and_limit() -> None:
    kafka = make_kafka(12)
    picked = Selection(coordinates=frozenset({Coordinate(0, 2), Coordinate(1, 0)}))
    assert (await redriver(kafka).run(TOPICS.dlq, picked)).redriven == 2
    assert set(lane_copies(kafka)) == {f"{TOPICS.dlq}:0:2", f"{TOPICS.dlq}:1:0"}
    limited = await redriver(kafka).run(TOPICS.dlq, Selection(limit=3))
    assert (limited.selected, limited.redriven, limited.already_redriven) == (3, 2, 1)


async def test_undecodable_records_are_skipped_and_stay_in_the_dlq() -> None:
    kafka = make_kafka(3, undecodable=2)
    report = await redriver(kafka).run(TOPICS.dlq, Selection())
    assert (report.selected, report.redriven, report.undecodable) == (5, 3, 2)
    assert len(kafka.records(TOPICS.dlq)) == 5


async def test_the_parking_lot_is_redriven_under_its_own_keys() -> None:
    kafka = make_kafka(0)
    event = make_event("ev-p", Priority.P30)
    marker = f"{TOPICS.dlq}:0:0".encode()
    kafka.append(
        TOPICS.parking_lot, 0, *dead_letter(event, origin_topic=TOPICS.p30, redriven_from=marker)
    )
    report = await redriver(kafka).run(TOPICS.parking_lot, Selection())
    assert report.redriven == 1
    assert list(lane_copies(kafka)) == [f"{TOPICS.parking_lot}:0:0"]  # the new source


# -- crash points -----------------------------------------------------------------------
# Writes per batch: 1 = intents to the log, 2.. = one per target lane, last = done entries.


async def test_crash_before_the_intents_are_confirmed_loses_and_duplicates_nothing() -> None:
    kafka = make_kafka(12)
    kafka.crash_on_send = 1
    with pytest.raises(SimulatedCrash):
        await redriver(kafka).run(TOPICS.dlq, Selection())
    assert not any(kafka.records(lane) for lane in LANES)
    kafka.crash_on_send = None
    report = await redriver(kafka).run(TOPICS.dlq, Selection())
    assert (report.redriven, report.recovered) == (12, 0)
    assert lane_copies(kafka) == Counter(dict.fromkeys(dlq_keys(kafka), 1))


async def test_crash_between_the_lane_write_and_the_log_is_recovered_by_header() -> None:
    kafka = make_kafka(12)
    kafka.crash_on_send = 2  # batch 1: the first lane write lands, then the process dies
    kafka.crash_after_write = True
    with pytest.raises(SimulatedCrash):
        await redriver(kafka).run(TOPICS.dlq, Selection())
    written = sum(lane_copies(kafka).values())
    assert written >= 1
    kafka.crash_on_send = None
    report = await redriver(kafka).run(TOPICS.dlq, Selection())
    assert report.recovered == written  # found in the lane, logged done, not written again
    assert report.redriven + report.already_redriven == 12
    assert lane_copies(kafka) == Counter(dict.fromkeys(dlq_keys(kafka), 1))
    log = await RedriveLog(TOPICS.dlq_redrive_log, kafka).load(TOPICS.dlq)
    assert {e.state for e in log.values()} == {"done"}


async def test_crash_then_retention_duplicates_at_most_one_batch_and_loses_nothing() -> None:
    kafka = make_kafka(12)
    # Batch 1 (ev-0, 2, 4, 6: four lanes) is sends 1-6; batch 2 (ev-8, 10, 1, 3: three
    # lanes) starts with its intents (7), then its first lane write (8): crash after it.
    kafka.crash_on_send = 8
    kafka.crash_after_write = True
    with pytest.raises(SimulatedCrash):
        await redriver(kafka, batch_size=4).run(TOPICS.dlq, Selection())
    first_run_writes = sum(lane_copies(kafka).values())
    assert first_run_writes == 4 + 1
    # Retention deletes the lanes' records before the next run: the header check finds none.
    for lane in LANES:
        for partition, (_, high) in (await kafka.watermarks(lane)).items():
            kafka.delete_before(lane, partition, high)
    kafka.crash_on_send = None
    report = await redriver(kafka, batch_size=4).run(TOPICS.dlq, Selection())
    assert (report.recovered, report.already_redriven, report.redriven) == (0, 4, 8)
    duplicates = first_run_writes + report.redriven - 12
    assert 0 < duplicates <= 4  # at most the batch in flight at the crash
    log = await RedriveLog(TOPICS.dlq_redrive_log, kafka).load(TOPICS.dlq)
    assert {k for k, e in log.items() if e.state == "done"} == dlq_keys(kafka)  # none lost


async def test_a_refused_intent_stops_before_any_lane_write() -> None:
    kafka = make_kafka(4)
    kafka.failing_topics.add(TOPICS.dlq_redrive_log)
    report = await redriver(kafka).run(TOPICS.dlq, Selection())
    assert report.error is not None
    assert "did not confirm" in report.error
    assert report.redriven == 0
    assert not any(kafka.records(lane) for lane in LANES)


async def test_a_failed_lane_write_stops_the_run_and_leaves_the_record_to_the_next() -> None:
    kafka = make_kafka(6)
    kafka.failing_topics.add(TOPICS.p10)
    report = await redriver(kafka, batch_size=6).run(TOPICS.dlq, Selection())
    assert report.failed == 2  # ev-2 and ev-5 are P10
    assert report.error is not None
    assert "not confirmed" in report.error
    assert report.redriven == 4
    kafka.failing_topics.clear()
    again = await redriver(kafka).run(TOPICS.dlq, Selection())
    assert (again.redriven, again.already_redriven, again.recovered) == (2, 4, 0)
    assert lane_copies(kafka) == Counter(dict.fromkeys(dlq_keys(kafka), 1))


async def test_stop_ends_the_run_between_batches() -> None:
    kafka = make_kafka(12)
    stop = asyncio.Event()
    done: list[str] = []

    def on_record(record: DlqRecord, target: str) -> None:
        done.append(record.coordinate)
        stop.set()

    report = await redriver(kafka, batch_size=4).run(
        TOPICS.dlq, Selection(), stop=stop, on_record=on_record
    )
    assert len(done) == 4
    assert report.error is not None
    assert "stopped" in report.error
    assert sum(lane_copies(kafka).values()) == 4


async def test_progress_and_rate() -> None:
    kafka = make_kafka(12)
    clock = FakeClock()
    sleeper = Sleeper(clock)
    runner = Redriver(
        topics=TOPICS,
        scanner=kafka,
        log=RedriveLog(TOPICS.dlq_redrive_log, kafka, kafka),
        producer=kafka,
        limiter=RateLimiter(4, clock, sleeper),
        clock=clock,
        batch_size=4,
    )
    updates: list[Progress] = []
    await runner.run(TOPICS.dlq, Selection(), on_progress=updates.append)
    assert sleeper.slept_s == pytest.approx(2.0)  # 3 batches of 4 at 4/s: 0 + 1 + 1
    assert [u.scanned for u in updates] == sorted(u.scanned for u in updates)
    assert updates[-1].scanned == updates[-1].total == 12
    assert updates[-1].written == 12


async def test_stop_also_ends_a_scan_that_selects_nothing() -> None:
    kafka = make_kafka(12)
    stop = asyncio.Event()
    stop.set()
    nobody = Selection(companies=frozenset({"nobody"}))
    report = await redriver(kafka).run(TOPICS.dlq, nobody, stop=stop)
    assert report.error is not None
    assert "stopped" in report.error
    assert report.scanned == 3  # one step of the in-memory scanner, not the whole DLQ
