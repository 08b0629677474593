"""Planning and running filtered scans; fetching one record."""

from __future__ import annotations

import pytest

from eventgw.core.clock import FakeClock
from eventgw.dlq.reader import TopicReader
from eventgw.dlq.selection import Coordinate, Selection
from eventgw.kafka.scanner import ScanError
from eventgw.kafka.testing import InMemoryKafka
from tests.fixtures.dlq import dead_letter, make_event

TOPIC = "dlq"


def make_kafka() -> InMemoryKafka:
    """Partition 0: offsets 0-6 at t=1000..1006; partition 1: 0-2 at t=2000..2002."""
    kafka = InMemoryKafka(FakeClock())
    kafka.create_topic(TOPIC, 2)
    for partition, count, t0 in ((0, 7, 1000), (1, 3, 2000)):
        for i in range(count):
            event = make_event(f"e{partition}-{i}", company="acme" if i % 2 else "globex")
            record = dead_letter(event, origin_topic="lane")
            kafka.append(TOPIC, partition, *record, timestamp_ms=t0 + i)
    return kafka


async def collect(reader: TopicReader, selection: Selection) -> tuple[list[str], list[int], int]:
    plan = await reader.plan(TOPIC, selection)
    found: list[str] = []
    progress: list[int] = []
    async for step in reader.scan(plan, selection):
        found += [r.coordinate for r in step.matches]
        progress.append(step.scanned)
    return found, progress, plan.total


async def test_scan_is_partition_then_offset_order_with_monotonic_progress() -> None:
    found, progress, total = await collect(TopicReader(make_kafka()), Selection())
    assert found == [f"0:{i}" for i in range(7)] + [f"1:{i}" for i in range(3)]
    assert total == 10
    assert progress == sorted(progress)
    assert progress[-1] == 10


async def test_filters_limit_and_time_index() -> None:
    reader = TopicReader(make_kafka())
    assert (await collect(reader, Selection(companies=frozenset({"acme"}))))[0] == [
        "0:1",
        "0:3",
        "0:5",
        "1:1",
    ]
    assert (await collect(reader, Selection(limit=4)))[0] == ["0:0", "0:1", "0:2", "0:3"]
    found, _, total = await collect(reader, Selection(since_ms=1005, until_ms=2001))
    assert found == ["0:5", "0:6", "1:0", "1:1"]
    assert total == 2 + 3  # partition 0 starts at the time index, not at 0


async def test_retention_gaps_and_coordinates() -> None:
    kafka = make_kafka()
    kafka.delete_before(TOPIC, 0, 4)
    reader = TopicReader(kafka)
    assert (await collect(reader, Selection()))[0][:2] == ["0:4", "0:5"]
    picked = Selection(coordinates=frozenset({Coordinate(0, 5), Coordinate(1, 2)}))
    assert (await collect(reader, picked))[0] == ["0:5", "1:2"]


async def test_get_one_record() -> None:
    kafka = make_kafka()
    reader = TopicReader(kafka)
    record = await reader.get(TOPIC, Coordinate(1, 2))
    assert record is not None
    assert record.event_id == "e1-2"
    assert await reader.get(TOPIC, Coordinate(1, 3)) is None  # past the end
    assert await reader.get(TOPIC, Coordinate(5, 0)) is None  # no such partition
    kafka.delete_before(TOPIC, 0, 4)
    assert await reader.get(TOPIC, Coordinate(0, 1)) is None  # deleted


async def test_a_missing_topic_is_a_scan_error() -> None:
    with pytest.raises(ScanError, match="missing: topic does not exist"):
        await TopicReader(make_kafka()).plan("missing", Selection())
