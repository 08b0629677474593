"""Replaying a retry-topic range: copies at the end of the same topic, marked, rate-limited."""

from __future__ import annotations

import asyncio

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import (
    H_ORIGINAL_TOPIC,
    H_REPLAYED,
    H_RETRY_AT_MS,
    header_value,
)
from eventgw.dlq.rate import RateLimiter
from eventgw.dlq.record import DlqRecord
from eventgw.dlq.replayer import RetryReplayer, replay_record
from eventgw.dlq.selection import OffsetRange, Selection
from eventgw.kafka.testing import InMemoryKafka
from tests.fixtures.dlq import make_event

RETRY = "retry-60s"


class Sleeper:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.clock.advance(seconds)


def make_kafka(n: int = 6) -> InMemoryKafka:
    kafka = InMemoryKafka(FakeClock())
    kafka.create_topic(RETRY, 1)
    for i in range(n):
        event = make_event(f"r{i}", attempt=2)
        headers = [(H_ORIGINAL_TOPIC, b"lane-p20"), (H_RETRY_AT_MS, b"%d" % (5000 + i))]
        kafka.append(RETRY, 0, b"acme", event.SerializeToString(), headers, timestamp_ms=100 + i)
    kafka.append(RETRY, 0, b"acme", b"\xffjunk", [], timestamp_ms=106)
    return kafka


def replayer(kafka: InMemoryKafka, batch_size: int = 2) -> RetryReplayer:
    clock = FakeClock()
    return RetryReplayer(
        scanner=kafka,
        producer=kafka,
        limiter=RateLimiter(1000, clock, Sleeper(clock)),
        batch_size=batch_size,
    )


async def test_a_range_is_copied_to_the_end_with_everything_kept() -> None:
    kafka = make_kafka()
    selection = Selection(offset_ranges=(OffsetRange(0, 2, 4),))
    report = await replayer(kafka).run(RETRY, selection)
    assert (report.selected, report.replayed, report.failed, report.error) == (3, 3, 0, None)
    copies = kafka.records(RETRY)[7:]
    assert [c.offset for c in copies] == [7, 8, 9]
    originals = kafka.records(RETRY)[2:5]
    for original, copy in zip(originals, copies, strict=True):
        assert (copy.key, copy.value) == (original.key, original.value)
        assert pb.EventData.FromString(copy.value).attempt == 2  # the ladder goes on
        assert header_value(copy.headers, H_RETRY_AT_MS) == header_value(
            original.headers, H_RETRY_AT_MS
        )
        assert header_value(copy.headers, H_ORIGINAL_TOPIC) == b"lane-p20"
        assert header_value(copy.headers, H_REPLAYED) == f"{RETRY}:0:{original.offset}".encode()


async def test_a_replayed_copy_is_marked_once_with_its_own_source() -> None:
    kafka = make_kafka()
    await replayer(kafka).run(RETRY, Selection(offset_ranges=(OffsetRange(0, 0, 0),)))
    await replayer(kafka).run(RETRY, Selection(offset_ranges=(OffsetRange(0, 7, 7),)))
    twice = kafka.records(RETRY)[-1]
    assert [v for k, v in twice.headers if k == H_REPLAYED] == [f"{RETRY}:0:7".encode()]


async def test_time_range_undecodable_and_the_run_never_reads_its_own_copies() -> None:
    kafka = make_kafka()
    report = await replayer(kafka).run(RETRY, Selection(since_ms=103))
    assert (report.selected, report.replayed, report.undecodable) == (4, 3, 1)
    assert len(kafka.records(RETRY)) == 7 + 3


async def test_dry_run_writes_nothing() -> None:
    kafka = make_kafka()
    shown: list[DlqRecord] = []
    report = await replayer(kafka).run(
        RETRY, Selection(since_ms=0), dry_run=True, on_record=shown.append
    )
    assert report.dry_run
    assert report.replayed == 6 == len(shown)
    assert kafka.sends == 0


async def test_failures_stop_the_run() -> None:
    kafka = make_kafka()
    kafka.failing_topics.add(RETRY)
    report = await replayer(kafka).run(RETRY, Selection(since_ms=0))
    assert (report.replayed, report.failed) == (0, 2)
    assert report.error is not None
    assert "not confirmed" in report.error


async def test_stop_between_batches() -> None:
    kafka = make_kafka()
    stop = asyncio.Event()
    report = await replayer(kafka).run(
        RETRY, Selection(since_ms=0), stop=stop, on_record=lambda r: stop.set()
    )
    assert report.replayed == 2
    assert report.error is not None
    assert "stopped" in report.error


def test_replay_record_without_key() -> None:
    event = make_event("x")
    record = DlqRecord(RETRY, 0, 3, 0, None, event.SerializeToString(), [], event)
    assert replay_record(record)[0] == b""
