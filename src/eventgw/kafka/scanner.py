"""Read offset ranges of topics: explicit assignment, no consumer group, no commits.

The operator tools (``eventgw dlq``, ``eventgw replay``) read a topic from a start offset up
to the high watermark they saw when they started, then stop. Nothing here joins a group or
commits, so a tool never moves a service's position, and two tools can read at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

import confluent_kafka
import msgspec

from eventgw.core.errors import EventGwError
from eventgw.kafka.consumer import message_headers

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from types import TracebackType

    from eventgw.core.envelope import Headers

logger = logging.getLogger(__name__)

# consume() returns when it has the records asked for or after this: short, so the end of a
# range with gaps (compaction) costs at most one such wait, not a long one per partition.
_POLL_S: Final = 0.1
_METADATA_TIMEOUT_S: Final = 10.0


class ScannedRecord(msgspec.Struct, frozen=True, gc=False):
    """One record read by offset, with its Kafka timestamp (Unix ms; -1 when it has none)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers


class ScanError(EventGwError):
    """A topic could not be read (missing, unreachable, or no progress): which one, and why.

    Attributes:
        topic: the topic.
        partition: the partition, or None for topic-level failures (metadata).
    """

    def __init__(self, topic: str, partition: int | None, message: str) -> None:
        where = topic if partition is None else f"{topic}[{partition}]"
        super().__init__(f"{where}: {message}")
        self.topic = topic
        self.partition = partition


class Scanner(Protocol):
    """Reading topics by explicit offsets: `TopicScanner` in production,
    `eventgw.kafka.testing.InMemoryKafka` in unit tests (the DLQ tools, the failed-writes
    read-back)."""

    async def watermarks(self, topic: str) -> dict[int, tuple[int, int]]: ...

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]: ...

    def read(
        self, topic: str, partition: int, start: int, end: int
    ) -> AsyncGenerator[list[ScannedRecord], None]: ...


class TopicScanner:
    """Reads ``[start, end)`` of one partition at a time and stops there (never hangs).

    Lifecycle: ``async with TopicScanner(config) as scanner`` creates the consumer and
    closes it. Calls run in a worker thread, one at a time (the owner awaits each); the
    scanner is not safe to use from two coroutines at once.

    Termination: a read ends at ``end``, at the end-of-partition event (records in the range
    deleted by retention or compaction, or control records at the end), or raises
    `ScanError` when the consumer makes no progress for ``stall_timeout_s`` (a broker down).

    Args:
        config: from `eventgw.kafka.client_config.scanner_config`.
        stall_timeout_s: longest wait for the next record or end-of-partition event.
        max_records_per_poll: records returned by one ``read`` step at most.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        stall_timeout_s: float = 30.0,
        max_records_per_poll: int = 500,
    ) -> None:
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s}")
        if max_records_per_poll < 1:
            raise ValueError(f"max_records_per_poll must be >= 1, got {max_records_per_poll}")
        self._config = dict(config)
        self._stall_timeout_s = stall_timeout_s
        self._max_records = max_records_per_poll
        self._consumer: confluent_kafka.Consumer | None = None

    async def __aenter__(self) -> TopicScanner:
        self._consumer = confluent_kafka.Consumer(self._config)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await asyncio.to_thread(consumer.close)

    def _started(self) -> confluent_kafka.Consumer:
        if self._consumer is None:
            raise RuntimeError("scanner is not open (use `async with`)")
        return self._consumer

    async def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``, ascending.

        Raises:
            ScanError: the topic does not exist or the metadata request failed.
        """
        consumer = self._started()
        try:
            meta = await asyncio.to_thread(consumer.list_topics, topic, _METADATA_TIMEOUT_S)
        except confluent_kafka.KafkaException as exc:
            raise ScanError(topic, None, f"metadata: {exc}") from exc
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise ScanError(topic, None, "topic does not exist (eventgw topics create)")
        return sorted(found.partitions)

    async def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """``{partition: (low, high)}``: the first offset kept and the next offset written.

        Raises:
            ScanError: as `partitions`, or a partition has no leader after retries.
        """
        partitions = await self.partitions(topic)
        consumer = self._started()

        def read() -> dict[int, tuple[int, int]]:
            return {p: _watermarks(consumer, topic, p) for p in partitions}

        return await asyncio.to_thread(read)

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is ``>= timestamp_ms``.

        Every record before that offset has an earlier timestamp (Kafka's time index), so
        a scan may start there. A partition with no such record maps to its high watermark.
        """
        marks = await self.watermarks(topic)
        consumer = self._started()
        query = [confluent_kafka.TopicPartition(topic, p, timestamp_ms) for p in marks]
        try:
            found = await asyncio.to_thread(consumer.offsets_for_times, query, _METADATA_TIMEOUT_S)
        except confluent_kafka.KafkaException as exc:
            raise ScanError(topic, None, f"offsets for time {timestamp_ms}: {exc}") from exc
        out: dict[int, int] = {}
        for tp in found:
            if tp.error is not None:
                raise ScanError(topic, tp.partition, f"offset for time: {tp.error}")
            out[tp.partition] = tp.offset if tp.offset >= 0 else marks[tp.partition][1]
        return out

    async def read(
        self, topic: str, partition: int, start: int, end: int
    ) -> AsyncGenerator[list[ScannedRecord], None]:
        """Yield the records of ``topic[partition]`` with ``start <= offset < end``, in order.

        Offsets may have gaps (compaction, retention, transaction markers). Stops at ``end``
        or at the end of the partition, whichever comes first. Leaving the loop early is
        fine: the partition is unassigned when the generator closes.

        Raises:
            ScanError: no record and no end-of-partition event for ``stall_timeout_s``.
        """
        if start >= end:
            return
        consumer = self._started()
        tp = confluent_kafka.TopicPartition(topic, partition, start)
        await asyncio.to_thread(consumer.assign, [tp])
        try:
            last_progress = time.monotonic()
            next_offset = start
            while True:
                # Ask for no more than the range holds: consume() then returns as soon as the
                # last record is there instead of waiting out its timeout for more.
                want = max(1, min(self._max_records, end - next_offset))
                messages = await asyncio.to_thread(consumer.consume, want, _POLL_S)
                batch: list[ScannedRecord] = []
                done = False
                for m in messages:
                    err = m.error()
                    if err is not None:
                        if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                            done = True
                        else:
                            logger.warning(
                                "kafka.scan_error topic=%s partition=%d error=%s",
                                topic,
                                partition,
                                err,
                            )
                        continue
                    offset = m.offset()
                    if offset is None:  # only error messages lack one (handled above)
                        continue
                    if offset >= end:
                        done = True
                        break
                    batch.append(_scanned(m, topic, partition))
                    if offset >= end - 1:
                        done = True
                        break
                if batch:
                    last_progress = time.monotonic()
                    next_offset = batch[-1].offset + 1
                    yield batch
                if done:
                    return
                if not messages:
                    if await self._position(tp) >= end:  # e.g. control records up to ``end``
                        return
                    if time.monotonic() - last_progress > self._stall_timeout_s:
                        raise ScanError(
                            topic,
                            partition,
                            f"no progress for {self._stall_timeout_s:g}s before offset {end} "
                            "(broker down?)",
                        )
                else:
                    last_progress = time.monotonic()
        finally:
            # Bounded: a local call that drops the fetch state (no broker round trip).
            await asyncio.to_thread(consumer.unassign)

    async def _position(self, tp: confluent_kafka.TopicPartition) -> int:
        consumer = self._started()
        (pos,) = await asyncio.to_thread(consumer.position, [tp])
        return int(pos.offset)


def _scanned(m: Any, topic: str, partition: int) -> ScannedRecord:
    kind, ts = m.timestamp()
    timestamp_ms = int(ts) if kind != confluent_kafka.TIMESTAMP_NOT_AVAILABLE else -1
    return ScannedRecord(
        topic,
        partition,
        m.offset(),
        timestamp_ms,
        m.key(),
        m.value() or b"",
        message_headers(m.headers()),
    )


def _watermarks(consumer: confluent_kafka.Consumer, topic: str, partition: int) -> tuple[int, int]:
    """Blocking: (low, high) of one partition, retrying NOT_LEADER on a fresh topic."""
    tp = confluent_kafka.TopicPartition(topic, partition)
    for attempt in range(20):
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=_METADATA_TIMEOUT_S)
            return int(low), int(high)
        except confluent_kafka.KafkaException as exc:
            # A fresh topic answers NOT_LEADER until its leader reaches the metadata cache.
            if exc.args[0].code() != confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION:
                raise ScanError(topic, partition, f"watermarks: {exc}") from exc
            time.sleep(0.05 * (attempt + 1))
    raise ScanError(topic, partition, "no leader")
