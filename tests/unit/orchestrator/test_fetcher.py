"""The fetchers: memory pauses survive a rebalance; hostile records stop no loop.

Partitions newly assigned to a consumer fetch unpaused. While the retry lane is over its
share of the buffer, the fetcher must pause them again, not only when the share is first
crossed. A retry time no retry delay can produce is clamped (it held its partition for
centuries); a response record that is not ``TaskResults`` is skipped and counted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import H_RETRY_AT_MS, Priority
from eventgw.kafka.consumer import ConsumedRecord
from eventgw.metrics.backend import Metrics
from eventgw.orchestrator.dispatcher import Dispatcher
from eventgw.orchestrator.fetcher import LaneFetcher, ResultsReader, RetryFetcher
from tests.unit.orchestrator.test_dispatcher import TOPICS
from tests.unit.orchestrator.test_dispatcher import Fixture as DispatcherFixture

MAX_HOLD_MS = 480_000


class FakeRetryConsumer:
    def __init__(self, stop: asyncio.Event) -> None:
        self.assigned: list[tuple[str, int]] = [("retry-60s", 0)]
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []
        self._stop = stop

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[Any]:
        self._stop.set()  # one loop iteration per run
        return []

    async def pause(self, partitions: list[tuple[str, int]]) -> None:
        self.calls.append(("pause", list(partitions)))

    async def resume(self, partitions: list[tuple[str, int]]) -> None:
        self.calls.append(("resume", list(partitions)))


class FakeBuffer:
    def __init__(self, over_share: bool) -> None:
        self.over_share = over_share

    def should_pause(self, lane: str) -> bool:
        assert lane == "retry"
        return self.over_share


class FakeDispatcher:
    def __init__(self, over_share: bool) -> None:
        self.buffer = FakeBuffer(over_share)

    def add_records(self, records: list[Any]) -> int:
        return len(records)


async def run_once(fetcher: RetryFetcher, stop: asyncio.Event) -> None:
    stop.clear()
    await fetcher.run(stop)


async def test_partitions_assigned_while_over_share_are_paused_again() -> None:
    stop = asyncio.Event()
    retry = FakeRetryConsumer(stop)
    d = FakeDispatcher(over_share=True)
    fetcher = RetryFetcher(
        retry,  # type: ignore[arg-type]  # fakes of the protocols
        d,  # type: ignore[arg-type]
        100,
        max_hold_ms=MAX_HOLD_MS,
        metrics=Metrics(),
    )
    await run_once(fetcher, stop)
    assert retry.calls == [("pause", [("retry-60s", 0)])]  # crossing the share pauses

    await run_once(fetcher, stop)
    assert len(retry.calls) == 1  # still over: nothing to do

    # A rebalance hands this replica a new partition; it fetches unpaused until re-paused.
    retry.assigned = [("retry-60s", 0), ("retry-60s", 1)]
    fetcher.on_assign()
    await run_once(fetcher, stop)
    assert retry.calls[-1] == ("pause", [("retry-60s", 0), ("retry-60s", 1)])

    d.buffer.over_share = False
    await run_once(fetcher, stop)
    assert retry.calls[-1] == ("resume", [("retry-60s", 0), ("retry-60s", 1)])


# -- hostile records ---------------------------------------------------------------------------


class RecordsConsumer(FakeRetryConsumer):
    """Returns ``records`` once; records pauses and seeks."""

    def __init__(self, stop: asyncio.Event, records: list[ConsumedRecord]) -> None:
        super().__init__(stop)
        self._records = records

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[Any]:
        self._stop.set()
        records, self._records = self._records, []
        return records

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        self.calls.append(("seek", [(topic, partition)]))


class RetryDispatcher(FakeDispatcher):
    def __init__(self) -> None:
        super().__init__(over_share=False)
        self.added: list[ConsumedRecord] = []

    def add_records(self, records: list[Any]) -> int:
        self.added += records
        return len(records)

    def retry_due_ms(self, record: ConsumedRecord) -> int:
        return Dispatcher.retry_due_ms(self, record)  # type: ignore[arg-type]  # reads headers only


def retry_record(partition: int, retry_at: bytes) -> ConsumedRecord:
    return ConsumedRecord("retry-60s", partition, 7, None, b"", [(H_RETRY_AT_MS, retry_at)])


@pytest.mark.parametrize(
    "retry_at",
    [b"999999999999999", b"253402300799000", b"%d" % (2**49)],
    ids=["15-digits", "year-9999", "2**49"],
)
async def test_a_retry_time_no_retry_delay_allows_is_clamped_not_held_for_years(
    retry_at: bytes,
) -> None:
    stop = asyncio.Event()
    now_ms = int(time.time() * 1000)
    consumer = RecordsConsumer(stop, [retry_record(0, retry_at)])
    consumer.assigned = [("retry-60s", 0)]
    metrics = Metrics()
    d = RetryDispatcher()
    fetcher = RetryFetcher(
        consumer,  # type: ignore[arg-type]  # fakes of the protocols
        d,  # type: ignore[arg-type]
        100,
        max_hold_ms=MAX_HOLD_MS,
        metrics=metrics,
    )
    await fetcher.run(stop)
    due = fetcher.held[("retry-60s", 0)]
    assert now_ms < due <= int(time.time() * 1000) + MAX_HOLD_MS, "held at most the longest delay"
    assert ("seek", [("retry-60s", 0)]) in consumer.calls
    rendered = metrics.render().decode()
    assert (
        'eventgw_orchestrator_invalid_records_total{action="clamped",source="retry"} 1.0'
        in rendered
    )


async def test_a_retry_time_within_the_longest_delay_is_kept_as_it_is() -> None:
    stop = asyncio.Event()
    due = int(time.time() * 1000) + 120_000
    consumer = RecordsConsumer(stop, [retry_record(0, b"%d" % due)])
    metrics = Metrics()
    fetcher = RetryFetcher(
        consumer,  # type: ignore[arg-type]  # fakes of the protocols
        RetryDispatcher(),  # type: ignore[arg-type]
        100,
        max_hold_ms=MAX_HOLD_MS,
        metrics=metrics,
    )
    await fetcher.run(stop)
    assert fetcher.held == {("retry-60s", 0): due}
    clamped = 'eventgw_orchestrator_invalid_records_total{action="clamped",source="retry"} 0.0'
    assert clamped in metrics.render().decode()


class ResultsSource:
    def __init__(self, values: list[bytes], stop: asyncio.Event) -> None:
        self._values = values
        self._stop = stop

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        self._stop.set()
        values, self._values = self._values, []
        return [ConsumedRecord("response", 0, i, None, v, []) for i, v in enumerate(values)]


class ResultsDispatcher:
    def __init__(self) -> None:
        self.applied: list[pb.TaskResult] = []

    def apply_results(self, results: Any) -> tuple[int, int]:
        self.applied += results
        return 0, len(results)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.binary(max_size=120), max_size=10))
def test_the_results_reader_applies_or_skips_any_bytes(values: list[bytes]) -> None:
    good = pb.TaskResults(results=[pb.TaskResult(task_id="t/0/1", kind=pb.ACK)])
    stop = asyncio.Event()
    metrics = Metrics()
    d = ResultsDispatcher()
    reader = ResultsReader(
        ResultsSource([*values, good.SerializeToString()], stop),  # type: ignore[arg-type]
        d,  # type: ignore[arg-type]  # fakes of the protocols
        metrics,
    )
    asyncio.run(reader.run(stop))
    assert d.applied[-1] == good.results[0], "the record after the noise is applied"
    skipped = reader.bad_records
    rendered = metrics.render().decode()
    if skipped:
        line = 'eventgw_orchestrator_invalid_records_total{action="skipped",source="response"}'
        assert f"{line} {float(skipped)}" in rendered


# -- working set: a flooding lane waits in Kafka, not in memory or the fetch queue -----------


class LaneConsumer:
    """Returns the queued batches, one per poll; records pause/resume per lane topic."""

    def __init__(self, batches: list[list[ConsumedRecord]], stop: asyncio.Event) -> None:
        self.assigned = [(TOPICS.p10, 0), (TOPICS.p30, 0)]
        self.batches = batches
        self.paused: set[str] = set()
        self.asked: list[int] = []  # max_records of each poll
        self._stop = stop

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        self.asked.append(max_records)
        batch = self.batches.pop(0) if self.batches else []
        if not self.batches:
            self._stop.set()
        return [r for r in batch if r.topic not in self.paused]

    async def pause(self, partitions: list[tuple[str, int]]) -> None:
        self.paused |= {t for t, _ in partitions}

    async def resume(self, partitions: list[tuple[str, int]]) -> None:
        self.paused -= {t for t, _ in partitions}


def lane_fetcher(
    f: DispatcherFixture, consumer: LaneConsumer, budget_bytes: int = 256 << 20
) -> LaneFetcher:
    return LaneFetcher(
        consumer,  # type: ignore[arg-type]  # a fake of the consumer group
        f.d,
        {"p10": TOPICS.p10, "p30": TOPICS.p30},
        {"p10": 0.2, "p30": 0.8},
        budget_bytes,
        10_000,
        ready_s=2.0,
        min_ready=100,
        monotonic=f.clock.monotonic,
    )


async def test_a_flooding_lane_pauses_past_its_working_set_and_resumes_at_half() -> None:
    f = DispatcherFixture()
    stop = asyncio.Event()
    flood = [f.record(Priority.P10) for _ in range(150)]
    consumer = LaneConsumer([flood, [f.record(Priority.P30)]], stop)
    fetcher = lane_fetcher(f, consumer)
    await fetcher.run(stop)
    assert consumer.paused == {TOPICS.p10}, "150 ready P10 tasks > 100: P10 waits in Kafka"
    assert fetcher.paused == {"p10"}
    assert f.d.buffer.lane_ready("p30") == 1, "P30 is still read"
    # Workers take 60 of the P10 tasks: 90 ready is not yet half of the working set.
    session = f.d.open_session("w")
    f.d.grant(session, 60)
    consumer.batches = [[]]
    stop.clear()
    await fetcher.run(stop)
    assert consumer.paused == {TOPICS.p10}
    f.d.grant(session, 45)  # 46 left (45 P10 + ...): below half of 100
    consumer.batches = [[]]
    stop.clear()
    await fetcher.run(stop)
    assert f.d.buffer.lane_ready("p10") < 50
    assert consumer.paused == set(), "below half of the working set: P10 is read again"


async def test_a_poll_asks_for_what_fits_below_the_lowest_open_threshold() -> None:
    """The records of one poll may carry the buffer only about up to the lowest threshold
    of a lane still read, by the mean size of the tasks buffered so far."""
    f = DispatcherFixture()
    stop = asyncio.Event()
    consumer = LaneConsumer([[f.record(Priority.P30) for _ in range(10)], []], stop)
    await lane_fetcher(f, consumer, budget_bytes=1 << 20).run(stop)
    size = f.d.buffer.bytes / 10  # each task's accounted bytes
    estimate = max(size, 0.8 * 1024 + 0.2 * size)  # the estimate moves a fifth of the way
    headroom = 0.2 * (1 << 20) - f.d.buffer.bytes  # P10's threshold is the lowest
    assert consumer.asked[0] == int(0.2 * (1 << 20) / 1024) + 1, "before any task: 1 KiB each"
    assert consumer.asked[1] == int(headroom / estimate) + 1


def test_the_working_set_follows_the_rate_workers_take_tasks_at() -> None:
    f = DispatcherFixture()
    fetcher = lane_fetcher(f, LaneConsumer([], asyncio.Event()))
    assert fetcher.working_set() == 100, "nobody takes anything: the floor"
    f.d.add_records([f.record(Priority.P10) for _ in range(5_000)])
    session = f.d.open_session("w")
    for _ in range(10):  # 500 tasks a second for ten seconds
        f.clock.advance(1.0)
        f.d.grant(session, 500)
        fetcher.working_set()
    assert 900 <= fetcher.working_set() <= 1_000, "about 2 s of 500 tasks/s"
