"""The orchestrator's three Kafka read loops: lanes, retry topics and worker results.

- `LaneFetcher`: a lane group member (P30's, or the one for p20/p10/offload) →
  `Dispatcher.add_records`;
  a lane's partitions pause while the buffer holds its memory share, and resume below it
  (docs/priorities-and-backpressure.md, "Memory thresholds"), and while the lane holds more
  ready work than the workers take in ``lane_ready_s`` (same doc, "Working set").
- `RetryFetcher`: the retry topics; a record not yet due pauses its partition and seeks back
  to it, so it waits in Kafka, not in memory, until due.
- `ResultsReader`: results a worker could not deliver on its ``Work`` stream, from the
  response topic partition ``index``.

Each loop runs until its ``stop`` is set; the service owns them in one task group. None of
them trusts what it reads: a lane record that is not an event goes to the DLQ (the
dispatcher), a retry time later than any retry delay allows is clamped, a response record
that is not ``TaskResults`` is skipped — each counted in
``eventgw_orchestrator_invalid_records_total{source, action}`` and logged, and the loop goes
on (docs/failure-handling.md, "Hostile records").
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping

    from eventgw.core.envelope import BufferLane, Lane
    from eventgw.kafka.consumer import PartitionReader
    from eventgw.kafka.group_consumer import GroupConsumer, TopicPartition
    from eventgw.metrics.backend import Metrics
    from eventgw.orchestrator.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

__all__ = ["LaneFetcher", "ResultsReader", "RetryFetcher"]


class LaneFetcher:
    """Reads the lane topics into the dispatcher; keeps each lane within its memory share and
    its working set.

    Working set: a lane whose ready tasks exceed what the workers take in ``ready_s`` (at
    least ``min_ready``) pauses, and resumes at half of that. A flood then waits in Kafka,
    where it is durable and costs nothing, instead of in memory — and, above all, instead of
    in the consumer's fetch queue, which the lanes of one consumer share: records fetched
    ahead are handed out in fetch order (docs/priorities-and-backpressure.md, "Working set";
    P30 has a consumer of its own, "Reading by priority"). The take rate is an average of
    the buffer's served count over about a second.

    Args:
        consumer: the lane consumer group member.
        dispatcher: takes the records.
        topic_of_lane: lane name → topic, for the lanes to pause and resume.
        shares: lane → share of ``budget_bytes`` at which it pauses.
        budget_bytes: the buffer's budget.
        max_records: the most records one poll may return.
        ready_s: seconds of dispatch a lane may hold ready.
        min_ready: the ready tasks a lane may always hold.
    """

    def __init__(
        self,
        consumer: GroupConsumer,
        dispatcher: Dispatcher,
        topic_of_lane: Mapping[Lane, str],
        shares: Mapping[BufferLane, float],
        budget_bytes: int,
        max_records: int,
        ready_s: float = 2.0,
        min_ready: int = 2000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._d = dispatcher
        self._topic_of_lane = dict(topic_of_lane)
        self._pause_at = {
            lane: shares[lane] * budget_bytes for lane in topic_of_lane if lane in shares
        }
        self._max_records = max_records
        self._ready_s = ready_s
        self._min_ready = min_ready
        self._monotonic = monotonic
        self._rate = 0.0  # tasks served per second, averaged
        self._rate_at = monotonic()
        self._rate_served = dispatcher.buffer.served
        self.paused: set[Lane] = set()
        self._resync = False

    def on_assign(self) -> None:
        """Newly assigned partitions fetch unpaused: re-apply every lane's state next poll."""
        self._resync = True

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch until ``stop``."""
        d = self._d
        task_bytes = 1024.0  # running estimate of one buffered task's accounted bytes
        while not stop.is_set():
            # One poll may carry the buffer only about up to the lowest threshold of a lane
            # still read. A full poll of a flooding P10 lane, taken when P10 resumes, went
            # past P30's share too and paused P30 until that P10 drained: P30 then missed
            # its SLO behind P10 (priority isolation).
            open_at = [t for lane, t in self._pause_at.items() if lane not in self.paused]
            headroom = min(open_at, default=0.0) - d.buffer.bytes
            max_records = max(1, min(self._max_records, int(headroom / task_bytes) + 1))
            records = await self._consumer.poll_batch(max_records, 0.1)
            if records:
                # The buffer accounts each task's bytes as it is pushed: its growth over the
                # tasks added is their mean size (nothing leaves it inside add_records), with
                # no pass over the records here (that pass was 6 % of the orchestrator's CPU).
                before = d.buffer.bytes
                added = d.add_records(records)
                if added:
                    size = (d.buffer.bytes - before) / added
                    task_bytes = max(size, 0.8 * task_bytes + 0.2 * size)
            await self._apply_pauses()

    def working_set(self) -> int:
        """The ready tasks a lane may hold before it pauses (`LaneFetcher`, "Working set")."""
        now = self._monotonic()
        elapsed = now - self._rate_at
        if elapsed >= 0.25:
            served = self._d.buffer.served
            rate = (served - self._rate_served) / elapsed
            weight = min(1.0, elapsed)  # about a one-second average
            self._rate += weight * (rate - self._rate)
            self._rate_at, self._rate_served = now, served
        return max(self._min_ready, int(self._rate * self._ready_s))

    async def _apply_pauses(self) -> None:
        d = self._d
        buffer = d.buffer
        resync, self._resync = self._resync, False
        working_set = self.working_set()
        for lane, topic in self._topic_of_lane.items():
            was = lane in self.paused
            ready = buffer.lane_ready(lane)
            # Hysteresis: a lane paused for its working set reads again at half of it.
            backlog = ready > (working_set // 2 if was else working_set)
            should = buffer.should_pause(lane) or backlog
            if resync or should != was:
                tps = [tp for tp in self._consumer.assigned if tp[0] == topic]
                if should:
                    await self._consumer.pause(tps)
                    self.paused.add(lane)
                    logger.log(
                        logging.DEBUG if backlog else logging.INFO,
                        "orchestrator.lane_paused lane=%s bytes=%d ready=%d working_set=%d",
                        lane,
                        buffer.bytes,
                        ready,
                        working_set,
                    )
                else:
                    await self._consumer.resume(tps)
                    self.paused.discard(lane)
                    logger.debug(
                        "orchestrator.lane_resumed lane=%s bytes=%d ready=%d",
                        lane,
                        buffer.bytes,
                        ready,
                    )


class RetryFetcher:
    """Reads the retry topics, holding each record in Kafka until its retry time.

    A record not yet due pauses its partition and seeks back to it; `resume_due` (called by
    the service's timer) resumes the partitions whose head is due. The whole consumer also
    pauses while the buffer holds the retry lane's memory share.

    A record is held at most ``max_hold_ms`` from when it is read: it was written at most
    the longest retry delay before its due time, so a later ``eventgw-retry-at-ms`` is not a
    retry time (a foreign or damaged record) and would hold its whole partition for years.
    Such a time is clamped to ``now + max_hold_ms``, counted and logged.
    """

    def __init__(
        self,
        consumer: GroupConsumer,
        dispatcher: Dispatcher,
        max_records: int,
        *,
        max_hold_ms: int,
        metrics: Metrics,
    ) -> None:
        if max_hold_ms <= 0:
            raise ValueError(f"max_hold_ms must be > 0, got {max_hold_ms}")
        self._consumer = consumer
        self._d = dispatcher
        self._max_records = max_records
        self._max_hold_ms = max_hold_ms
        self._m_clamped = metrics.counter(
            "eventgw_orchestrator_invalid_records_total",
            "records that are not what their topic should hold",
            ["source", "action"],
        ).labels("retry", "clamped")
        self.held: dict[TopicPartition, int] = {}  # partition → due wall-clock ms
        self.memory_paused = False
        self._resync = False

    def on_assign(self) -> None:
        """A new partition must not read past the retry share: re-apply the pause."""
        self._resync = True

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Forget holds of partitions that leave."""
        for tp in partitions:
            self.held.pop(tp, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch until ``stop``."""
        d = self._d
        consumer = self._consumer
        while not stop.is_set():
            records = await consumer.poll_batch(self._max_records, 0.2)
            due_now = []
            now = int(time.time() * 1000)
            for r in records:
                tp = (r.topic, r.partition)
                if tp in self.held:
                    continue  # read past a held head: it is read again after the seek
                due = d.retry_due_ms(r)
                if due > now + self._max_hold_ms:
                    self._m_clamped.inc()
                    logger.warning(
                        "orchestrator.retry_at_clamped topic=%s partition=%d offset=%d "
                        "retry_at_ms=%d clamped_to=%d",
                        r.topic,
                        r.partition,
                        r.offset,
                        due,
                        now + self._max_hold_ms,
                    )
                    due = now + self._max_hold_ms
                if due > now:
                    self.held[tp] = due
                    await consumer.pause([tp])
                    await consumer.seek(r.topic, r.partition, r.offset)
                    continue
                due_now.append(r)
            if due_now:
                d.add_records(due_now)
            should = d.buffer.should_pause("retry")
            resync, self._resync = self._resync, False
            if resync or should != self.memory_paused:
                self.memory_paused = should
                free = [tp for tp in consumer.assigned if tp not in self.held]
                await (consumer.pause(free) if should else consumer.resume(free))

    async def resume_due(self) -> None:
        """Resume held partitions whose head is due (unless the retry share is reached)."""
        if not self.held:
            return
        now = int(time.time() * 1000)
        due = [tp for tp, at in self.held.items() if at <= now]
        for tp in due:
            del self.held[tp]
        if due and not self.memory_paused:
            await self._consumer.resume(due)


class ResultsReader:
    """Applies results workers wrote to the response topic (their stream was down).

    A record that is not ``TaskResults`` is counted, logged and skipped. One that parses
    is applied by the dispatcher's rules, which treat a result for no lease of theirs as
    stale: a foreign record that happens to parse changes nothing.
    """

    def __init__(self, reader: PartitionReader, dispatcher: Dispatcher, metrics: Metrics) -> None:
        self._reader = reader
        self._d = dispatcher
        self._m_skipped = metrics.counter(
            "eventgw_orchestrator_invalid_records_total",
            "records that are not what their topic should hold",
            ["source", "action"],
        ).labels("response", "skipped")
        self.bad_records = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop``."""
        while not stop.is_set():
            for record in await self._reader.poll_batch(1000, 0.1):
                try:
                    batch = pb.TaskResults.FromString(record.value)
                except Exception:  # noqa: BLE001  (a foreign record must not stop the loop)
                    self.bad_records += 1
                    self._m_skipped.inc()
                    logger.warning(
                        "orchestrator.bad_result partition=%d offset=%d bytes=%d",
                        record.partition,
                        record.offset,
                        len(record.value),
                    )
                    continue
                self._d.apply_results(batch.results)
