"""The read-back finds exactly the uncommitted failed writes already in Kafka, and stops
within its cap and deadline, keeping what it found (unfound ones are replayed again)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from eventgw.core.clock import FakeClock
from eventgw.core.envelope import H_EVENT_ID, H_RECOVERY_SOURCE
from eventgw.kafka.scanner import ScanError
from eventgw.kafka.testing import InMemoryKafka
from eventgw.recovery.read_back import CLOCK_MARGIN_MS, LaneReadBack

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from eventgw.kafka.scanner import ScannedRecord, Scanner

FW = "fw"
T0 = 1_700_000_000_000


def kafka_with_lanes(clock: FakeClock) -> InMemoryKafka:
    kafka = InMemoryKafka(clock)
    for topic in ("p30", "p20", "dlq"):
        kafka.create_topic(topic, partitions=2)
    return kafka


def copy(kafka: InMemoryKafka, topic: str, partition: int, source: bytes, ts: int) -> None:
    headers = [(H_EVENT_ID, b"e"), (H_RECOVERY_SOURCE, source)]
    kafka.append(topic, partition, b"k", b"v", headers, timestamp_ms=ts)


def read_back(
    scanners: Mapping[str, Scanner],
    clock: FakeClock,
    max_records: int = 1000,
    deadline_s: float = 30.0,
) -> LaneReadBack:
    targets = {"primary": ["p30", "p20", "dlq"], "rollout": ["p30"]}
    return LaneReadBack(
        scanners, targets, FW, max_records=max_records, deadline_s=deadline_s, clock=clock
    )


async def test_finds_copies_of_offsets_at_or_past_the_committed_position_since_the_intent() -> None:
    clock = FakeClock(wall_ms=T0)
    kafka = kafka_with_lanes(clock)
    copy(kafka, "p30", 0, b"fw:0:99", T0 - 60_000)  # before the intent: not read
    copy(kafka, "p30", 0, b"fw:0:100", T0)
    copy(kafka, "p20", 1, b"fw:0:101", T0 + 5)
    copy(kafka, "dlq", 0, b"fw:0:102", T0 + 6)  # parked: in Kafka too
    copy(kafka, "p30", 1, b"fw:0:98", T0 + 7)  # below the committed position: not ours to skip
    copy(kafka, "p30", 1, b"fw:1:5", T0 + 8)  # partition 1 is not asked about
    copy(kafka, "p30", 1, b"other:0:103", T0 + 9)  # another topic's source
    copy(kafka, "p20", 0, b"spool:k1", T0 + 9)  # a backup object's
    kafka.append("p20", 0, b"k", b"v", [(H_EVENT_ID, b"e")], timestamp_ms=T0 + 9)  # publisher's
    result = await read_back({"primary": kafka}, clock).find({0: 98}, sent_from_ms=T0)
    assert result.found == {0: {98, 100, 101, 102}}
    assert result.shortfalls == set()
    # Everything from the intent minus the clock margin, in every topic written.
    assert result.records_read == 8


async def test_the_clock_margin_reads_copies_stamped_slightly_before_the_intent() -> None:
    clock = FakeClock(wall_ms=T0)
    kafka = kafka_with_lanes(clock)
    copy(kafka, "p30", 0, b"fw:0:100", T0 - CLOCK_MARGIN_MS)
    copy(kafka, "p30", 0, b"fw:0:101", T0 - CLOCK_MARGIN_MS - 1)  # later in the log, but
    # stamped before the window: offsets_for_time starts at the first one at or after it.
    result = await read_back({"primary": kafka}, clock).find({0: 0}, sent_from_ms=T0)
    assert result.found == {0: {100, 101}}


async def test_the_cap_stops_the_read_and_keeps_what_was_found() -> None:
    clock = FakeClock(wall_ms=T0)
    kafka = kafka_with_lanes(clock)
    for o in range(10):
        copy(kafka, "p30", 0, b"fw:0:%d" % o, T0)
    result = await read_back({"primary": kafka}, clock, max_records=4).find({0: 0}, T0)
    assert result.shortfalls == {"cap"}
    # The fake hands out 3 records per step; the cap is checked after each step.
    assert result.found == {0: set(range(6))}
    assert result.records_read == 6


async def test_the_deadline_stops_the_read_between_steps() -> None:
    clock = FakeClock(wall_ms=T0)
    kafka = kafka_with_lanes(clock)
    for o in range(10):
        copy(kafka, "p30", 0, b"fw:0:%d" % o, T0)

    class SlowKafka:
        async def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
            return await kafka.watermarks(topic)

        async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
            return await kafka.offsets_for_time(topic, timestamp_ms)

        async def read(
            self, topic: str, partition: int, start: int, end: int
        ) -> AsyncGenerator[list[ScannedRecord], None]:
            async for batch in kafka.read(topic, partition, start, end):
                clock.advance(2.0)  # each step takes 2 s
                yield batch

    result = await read_back({"primary": SlowKafka()}, clock, deadline_s=3.0).find({0: 0}, T0)
    assert result.shortfalls == {"timeout"}
    assert result.found == {0: set(range(6))}, "two steps, then the deadline"


async def test_a_cluster_that_cannot_be_read_does_not_stop_the_other() -> None:
    clock = FakeClock(wall_ms=T0)
    kafka = kafka_with_lanes(clock)
    copy(kafka, "dlq", 1, b"fw:2:7", T0)

    class Down:
        calls = 0

        async def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
            raise ScanError(topic, None, "metadata: timed out")

        async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
            Down.calls += 1
            raise ScanError(topic, None, "metadata: timed out")

        def read(
            self, topic: str, partition: int, start: int, end: int
        ) -> AsyncGenerator[list[ScannedRecord], None]:
            raise AssertionError("never read after a failed metadata call")

    result = await read_back({"primary": kafka, "rollout": Down()}, clock).find({2: 7}, T0)
    assert result.found == {2: {7}}
    assert result.shortfalls == {"error"}
    assert Down.calls == 1, "a cluster that failed a step is not read further"


async def test_a_missing_topic_is_an_error_not_a_crash() -> None:
    clock = FakeClock(wall_ms=T0)
    kafka = InMemoryKafka(clock)
    kafka.create_topic("p30")
    copy(kafka, "p30", 0, b"fw:0:1", T0)
    result = await read_back({"primary": kafka}, clock).find({0: 0}, T0)
    assert result.found == {0: {1}}, "p30 was read before p20 (missing) failed"
    assert result.shortfalls == {"error"}


async def test_nothing_asked_reads_nothing() -> None:
    clock = FakeClock(wall_ms=T0)
    result = await read_back({"primary": kafka_with_lanes(clock)}, clock).find({}, T0)
    assert (result.found, result.records_read) == ({}, 0)


@pytest.mark.parametrize(("max_records", "deadline_s"), [(0, 1.0), (1, 0.0)])
def test_bad_bounds_are_refused(max_records: int, deadline_s: float) -> None:
    with pytest.raises(ValueError, match=r"max_records|deadline_s"):
        read_back({}, FakeClock(), max_records=max_records, deadline_s=deadline_s)
