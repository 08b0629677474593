"""The orchestrator's core: records in, SLO-ordered batches out, results applied.

`Dispatcher` owns the `PriorityBuffer` (what is buffered, leased or delayed) and the
`AckTracker` (what may be committed). It is driven by the service: fetch loops call
`add_records`, the gRPC API calls `get_batch` and `apply_results`, the results consumer calls
`apply_results`, a timer calls `tick`. Everything runs on one event loop; no locks.

Result semantics (SYSTEM.md 2.4):
- ACK: done → the offset becomes committable.
- RELEASE: served again, no attempt counted (dry run, worker shutdown).
- NACK(delay, error): attempt += 1. Past ``max_attempts`` → DLQ. Delay below
  ``memory_retry_max_s`` → held in memory, then served again. Otherwise → the retry topic for
  this attempt (60 s, 120 s, 240 s, 480 s); done once Kafka confirmed the retry record.
- REJECT(error): straight to the DLQ.
Retry and DLQ records keep the original class and deadline; headers carry the original topic,
the attempt and the last error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    H_LAST_ERROR,
    H_ORIGINAL_TOPIC,
    H_RETRY_AT_MS,
    SLO_SECONDS,
    Priority,
    event_headers,
    header_value,
)
from eventgw.orchestrator.ack_tracker import AckTracker
from eventgw.orchestrator.priority_buffer import BufferedTask, PriorityBuffer, make_task_id

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from eventgw.config.settings import OrchestratorSettings, TopicSettings
    from eventgw.core.envelope import Headers
    from eventgw.kafka.consumer import ConsumedRecord
    from eventgw.kafka.producer import Delivery, Record

logger = logging.getLogger(__name__)

# Wire priority → class, as a dict: calling the enum (``Priority(20)``) per record cost more.
_PRIORITY_OF: dict[int, Priority] = {p.value: p for p in Priority}
_P10 = Priority.P10  # unknown or missing priority: the least urgent class

RETRY_DELAYS_S = (60.0, 120.0, 240.0, 480.0)


class Producer(Protocol):
    """What the dispatcher needs to write retry and DLQ records (`BatchProducer`)."""

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]: ...


@dataclass
class LaneCounters:
    """Cumulative outcomes per lane, for stats and metrics."""

    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    expired: int = 0


class Dispatcher:
    """See the module docstring."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        topics: TopicSettings,
        producer: Producer,
        *,
        now_ms: Callable[[], int] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self._s = settings
        self._topics = topics
        self._producer = producer
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self._mono = monotonic or time.monotonic
        self.buffer = PriorityBuffer(
            settings.buffer_budget_bytes,
            settings.lane_shares,
            hysteresis=settings.resume_hysteresis,
            late_share_every=settings.late_share_every,
            now_ms=self._now_ms,
            monotonic=self._mono,
        )
        self.tracker = AckTracker()
        self.lane_of_topic: dict[str, str] = {
            topics.p30: "p30",
            topics.p20: "p20",
            topics.p10: "p10",
            topics.offload: "offload",
        }
        self.retry_topics = (
            topics.retry_60s,
            topics.retry_120s,
            topics.retry_240s,
            topics.retry_480s,
        )
        for t in self.retry_topics:
            self.lane_of_topic[t] = "retry"
        self.counters: dict[str, LaneCounters] = {
            lane: LaneCounters() for lane in ("p30", "p20", "p10", "offload", "retry")
        }
        self.class_counters: dict[int, LaneCounters] = {p.value: LaneCounters() for p in Priority}
        self._available = asyncio.Event()
        self.serving = True
        self._pending_writes: set[asyncio.Future[None]] = set()
        # Retry-lane tasks: the lane topic they first came from (from their headers).
        self._origin: dict[str, str] = {}
        self._writing: set[str] = set()  # task ids whose retry/DLQ write is in flight

    # -- intake -------------------------------------------------------------------------

    def add_records(self, records: Sequence[ConsumedRecord]) -> int:
        """Buffer consumed records; returns how many were added (undecodable → the DLQ)."""
        added = 0
        for r in records:
            lane = self.lane_of_topic.get(r.topic)
            if lane is None:
                logger.warning("orchestrator.unknown_topic topic=%s", r.topic)
                continue
            event = pb.EventData()
            try:
                event.ParseFromString(r.value)
            except Exception:  # noqa: BLE001  (protobuf raises several DecodeError types)
                # Not an event: no processor can take it (it would not even parse the batch).
                # To the DLQ as it is; the offset is committed once Kafka confirmed that.
                self.tracker.track(r.topic, r.partition, r.offset)
                self._in_background(self._dead_letter_undecodable(r, lane))
                continue
            priority = _PRIORITY_OF.get(event.priority, _P10)
            task = BufferedTask(
                task_id=make_task_id(r.topic, r.partition, r.offset),
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                lane=lane,
                priority=priority,
                deadline_ms=event.slo_deadline_ms or event.ingested_at_ms,
                ingested_at_ms=event.ingested_at_ms,
                value=r.value,
                attempt=event.attempt,
            )
            if lane == "retry":
                origin = header_value(r.headers, H_ORIGINAL_TOPIC)
                if origin:
                    self._origin[task.task_id] = origin.decode(errors="replace")
            self.tracker.track(r.topic, r.partition, r.offset)
            self.buffer.push(task)
            added += 1
        if added:
            self._available.set()
        return added

    def retry_due_ms(self, record: ConsumedRecord) -> int:
        """When a retry-topic record may be served (wall-clock ms; 0 if no header)."""
        raw = header_value(record.headers, H_RETRY_AT_MS)
        return int(raw) if raw and raw.isdigit() else 0

    # -- serving ------------------------------------------------------------------------

    async def get_batch(self, max_tasks: int, wait_s: float) -> list[BufferedTask]:
        """Serve up to ``max_tasks`` in SLO order, waiting up to ``wait_s`` for the first."""
        max_tasks = min(max_tasks or self._s.max_tasks_per_batch, self._s.max_tasks_per_batch)
        lease_s = self._s.lease_s * self._s.time_scale
        deadline = self._mono() + wait_s
        while self.serving:
            tasks = self.buffer.pop_batch(max_tasks, lease_s)
            if tasks:
                return tasks
            self._available.clear()
            remaining = deadline - self._mono()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._available.wait()
            except TimeoutError:
                break
        return []

    def stop_serving(self) -> None:
        """Drain: answer every GetBatch (waiting or new) with an empty batch from now on."""
        self.serving = False
        self._available.set()

    def tick(self) -> float | None:
        """Expire leases and release due delays; returns the next timer (monotonic) or None."""
        expired = self.buffer.expire()
        for task in expired:
            self.counters[task.lane].expired += 1
        if expired or self.buffer.has_ready():
            self._available.set()
        return self.buffer.next_timer()

    # -- results ------------------------------------------------------------------------

    def apply_results(self, results: Sequence[pb.TaskResult]) -> tuple[int, int]:
        """Apply processor results; returns (accepted, stale). Retry/DLQ writes run async.

        Matching: an ACK finishes the task in whatever state it is (the work was done, even
        if its lease expired meanwhile). Any other result must match the current lease —
        same ``delivery_count`` — else it is stale (an older lease's verdict). A result for
        a task whose retry/DLQ write is in progress is stale too (results may arrive twice:
        response topic and gRPC).
        """
        accepted = stale = 0
        outgoing: list[tuple[BufferedTask, pb.TaskResult, str]] = []
        for r in results:
            if r.task_id in self._writing:
                stale += 1
                continue
            if r.kind == pb.ACK:
                task = self.buffer.get(r.task_id)
                if task is None:
                    stale += 1
                    continue
                accepted += 1
                self._finish(task)
                self.counters[task.lane].processed += 1
                self.class_counters[task.priority].processed += 1
                continue
            task = self.buffer.lease_of(r.task_id)
            if task is None or (r.delivery_count and r.delivery_count != task.delivery_count):
                stale += 1
                continue
            accepted += 1
            if r.kind == pb.RELEASE:
                self.buffer.release(r.task_id)
                self._available.set()
            elif r.kind == pb.REJECT:
                outgoing.append((task, r, self._topics.dlq))
            else:  # NACK (and UNSPECIFIED, treated as a failure)
                attempt = task.attempt + 1
                delay_s = r.delay_ms / 1000
                if attempt >= self._s.max_attempts:
                    outgoing.append((task, r, self._topics.dlq))
                elif delay_s < self._s.memory_retry_max_s:
                    # Held in memory; ready again (attempt + 1) once due.
                    self.buffer.delay(r.task_id, delay_s * self._s.time_scale)
                    self.counters[task.lane].retried += 1
                    self.class_counters[task.priority].retried += 1
                else:
                    topic = self.retry_topics[min(attempt, len(self.retry_topics)) - 1]
                    outgoing.append((task, r, topic))
        if outgoing:
            # The tasks stay leased (not served again) until Kafka confirmed the write.
            self._writing.update(task.task_id for task, _, _ in outgoing)
            self._in_background(self._write_out(outgoing))
        return accepted, stale

    def _in_background(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a retry/DLQ write as a task that `wait_writes` (the drain) waits for."""
        future = asyncio.ensure_future(write)
        self._pending_writes.add(future)
        future.add_done_callback(self._pending_writes.discard)

    async def _dead_letter_undecodable(self, r: ConsumedRecord, lane: str) -> None:
        """Write a record that is not an ``EventData`` to the DLQ unchanged, then finish it.

        Retried with a capped backoff until Kafka confirms: the offset stays unfinished (not
        committed) meanwhile, so the record is never lost (at-least-once).
        """
        headers: Headers = [
            (H_ORIGINAL_TOPIC, r.topic.encode()),
            (H_LAST_ERROR, b"undecodable: not an eventgw EventData"),
        ]
        record = (r.key or b"", r.value, headers)
        logger.warning(
            "orchestrator.undecodable topic=%s partition=%d offset=%d (to the DLQ)",
            r.topic,
            r.partition,
            r.offset,
        )
        backoff_s = 0.5
        while True:
            try:
                (delivery,) = await self._producer.send(self._topics.dlq, [record])
                error = delivery.error
            except Exception as exc:  # noqa: BLE001  (retried below; the offset stays unfinished)
                error = repr(exc)
            if not error:
                break
            logger.warning("orchestrator.undecodable_dlq_failed error=%s", error)
            await asyncio.sleep(backoff_s)
            backoff_s = min(30.0, backoff_s * 2)
        if self.tracker.finish(r.topic, r.partition, r.offset):
            self.counters[lane].dead_lettered += 1

    def _finish(self, task: BufferedTask) -> None:
        self._origin.pop(task.task_id, None)
        self.buffer.complete(task.task_id)
        self.tracker.finish(task.topic, task.partition, task.offset)

    async def _write_out(self, items: list[tuple[BufferedTask, pb.TaskResult, str]]) -> None:
        """Write retry/DLQ records; finish each task only after Kafka confirmed it."""
        by_topic: dict[str, list[tuple[BufferedTask, pb.TaskResult]]] = {}
        for task, result, topic in items:
            by_topic.setdefault(topic, []).append((task, result))
        now = self._now_ms()
        for topic, group in by_topic.items():
            is_dlq = topic == self._topics.dlq
            delay_s = 0.0 if is_dlq else RETRY_DELAYS_S[self.retry_topics.index(topic)]
            records: list[Record] = []
            for task, result in group:
                event = pb.EventData.FromString(task.value)
                event.attempt = task.attempt + 1
                headers = event_headers(event)
                original = self._origin.get(task.task_id, task.topic)
                headers.append((H_ORIGINAL_TOPIC, original.encode()))
                headers.append((H_LAST_ERROR, result.error[:1000].encode()))
                if not is_dlq:
                    due = now + int(delay_s * self._s.time_scale * 1000)
                    headers.append((H_RETRY_AT_MS, b"%d" % due))
                records.append((event.company_id.encode(), event.SerializeToString(), headers))
            try:
                deliveries = await self._producer.send(topic, records)
            except Exception:
                logger.exception("orchestrator.retry_write_crashed topic=%s", topic)
                deliveries = []
            for i, (task, _) in enumerate(group):
                self._writing.discard(task.task_id)
                ok = i < len(deliveries) and deliveries[i].ok
                if ok:
                    self._finish(task)
                    counters = (self.counters[task.lane], self.class_counters[task.priority])
                    for c in counters:
                        if is_dlq:
                            c.dead_lettered += 1
                        else:
                            c.retried += 1
                else:
                    # Not durable elsewhere: serve it again rather than lose it.
                    logger.warning(
                        "orchestrator.retry_write_failed topic=%s task=%s", topic, task.task_id
                    )
                    self.buffer.release(task.task_id)
                    self._available.set()
            logger.debug("orchestrator.wrote topic=%s records=%d", topic, len(records))

    # -- partitions ---------------------------------------------------------------------

    def revoke(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Drop revoked partitions' tasks; return their committable offsets."""
        offsets: dict[tuple[str, int], int] = {}
        for topic, partition in partitions:
            committable = self.tracker.committable(topic, partition)
            if committable is not None:
                offsets[topic, partition] = committable
            for task in self.buffer.drop_partition(topic, partition):
                self._origin.pop(task.task_id, None)
            self.tracker.drop(topic, partition)
        return offsets

    def committable(self) -> dict[tuple[str, int], int]:
        """Offsets that advanced since the last commit."""
        return self.tracker.pending()

    def mark_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """Record a successful commit."""
        for (topic, partition), offset in offsets.items():
            self.tracker.mark_committed(topic, partition, offset)

    async def wait_writes(self) -> None:
        """Wait for retry/DLQ writes in progress (used during drain)."""
        if self._pending_writes:
            await asyncio.wait(set(self._pending_writes))

    def leased(self) -> int:
        """Tasks served and awaiting a result."""
        return sum(ln.leased for ln in self.buffer.statistics().lanes.values())

    def stats(self) -> pb.StatsResponse:
        """Per-class (and offload/retry lane) stats for ``Stats`` and ``eventgw status``."""
        st = self.buffer.statistics()
        lanes = []
        for p in (Priority.P30, Priority.P20, Priority.P10):
            c = self.class_counters[p.value]
            cls = st.classes[p]
            lanes.append(
                pb.ClassStats(
                    lane=p.name,
                    buffered=cls.ready + cls.delayed,
                    in_flight=cls.leased,
                    processed=c.processed,
                    retried=c.retried,
                    dead_lettered=c.dead_lettered,
                    oldest_age_s=cls.oldest_ready_age_s or 0.0,
                    slo_s=SLO_SECONDS[p],
                    paused=p.name.lower() in st.paused_lanes,
                    buffered_bytes=cls.bytes,
                )
            )
        for lane in ("offload", "retry"):
            ln = st.lanes[lane]
            c = self.counters[lane]
            lanes.append(
                pb.ClassStats(
                    lane=lane,
                    buffered=ln.ready + ln.delayed,
                    in_flight=ln.leased,
                    processed=c.processed,
                    retried=c.retried,
                    dead_lettered=c.dead_lettered,
                    paused=ln.paused,
                    buffered_bytes=ln.bytes,
                )
            )
        return pb.StatsResponse(
            index=self._s.index,
            lanes=lanes,
            buffer_bytes=st.total_bytes,
            buffer_budget_bytes=st.budget_bytes,
        )
