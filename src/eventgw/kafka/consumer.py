"""What every consumer of eventgw shares: consumed records, the batched read, the error;
and `PartitionReader`, the assigned (group-less) reader.

The one group member, with commits, is `eventgw.kafka.group_consumer.GroupConsumer`; both
read through `consume_available` and hand on `to_records`. Blocking client calls run in a
worker thread (``asyncio.to_thread``), one at a time: the owner awaits each call before the
next, so the consumer is never used concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import confluent_kafka
import msgspec

from eventgw.core.errors import RetriableError

if TYPE_CHECKING:
    from eventgw.core.envelope import Headers
    from eventgw.kafka.stale_reads import RebalanceCounter

logger = logging.getLogger(__name__)


class ConsumedRecord(msgspec.Struct, frozen=True, gc=False):
    """One record read from Kafka.

    A msgspec Struct: built in C, one per consumed record (a frozen dataclass cost about
    1 µs more per record on the orchestrator's intake).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers


def message_headers(
    raw: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None,
) -> Headers:
    """``Message.headers()`` as `Headers`: str values encoded, null values as ``b""``.

    confluent-kafka returns a fresh list of ``(str, bytes)`` pairs per call; that list is
    used as it is unless a value is None or a str (a null or foreign header).
    """
    if not raw:
        return []
    if isinstance(raw, list) and all(type(v) is bytes for _, v in raw):
        return raw  # type: ignore[return-value]  # checked just above: every value is bytes
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs]


def to_record(m: Any) -> ConsumedRecord | None:
    """A consumed Message as a ConsumedRecord; None for errors and events (logged)."""
    err = m.error()
    if err is not None:
        if err.code() != confluent_kafka.KafkaError._PARTITION_EOF:
            logger.warning("kafka.consume_error error=%s", err)
        return None
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    if topic is None or partition is None or offset is None:
        # Only error/event messages lack these; a record without them cannot be committed.
        logger.warning("kafka.consume_incomplete topic=%s partition=%s", topic, partition)
        return None
    return ConsumedRecord(
        topic, partition, offset, m.key(), m.value() or b"", message_headers(m.headers())
    )


def consume_available(
    consumer: Any, max_records: int, timeout_s: float, rebalances: RebalanceCounter | None = None
) -> list[Any]:
    """Up to ``max_records`` messages: wait at most ``timeout_s`` for the first, then take
    only what is already there. Blocking: call it in a worker thread.

    Why not ``consume(max_records, timeout_s)``: librdkafka returns from it only when the
    batch is full or the whole timeout has passed, so a record arriving alone waited up to
    ``timeout_s`` (100 ms on the orchestrator's lanes: a P30 event's p50 latency was 100 ms
    at 1,000 events/s). ``poll`` returns with the first record; ``consume(n, 0)`` adds what
    has arrived with it.

    Args:
        rebalances: a group member's rebalance count (its callbacks run inside both reads):
            what was read before a revoke of its partition is left out
            (`RebalanceCounter.hand_on`). None for an assigned reader (no rebalances).
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_records <= 1:
        return [first]
    if rebalances is None:
        return [first, *consumer.consume(max_records - 1, 0)]
    generation = rebalances.generation
    return rebalances.hand_on(generation, first, consumer.consume(max_records - 1, 0))


def to_records(messages: list[Any]) -> list[ConsumedRecord]:
    """The records among consumed Messages (errors and events are logged and skipped)."""
    return [r for r in map(to_record, messages) if r is not None]


class ConsumerError(RetriableError):
    """A consumer call failed (translated from KafkaException); the caller tries again later."""


class PartitionReader:
    """Reads partitions from their current end: no group membership, no commits.

    The orchestrator reads its results partition this way: results written while it was
    down belong to leases that no longer exist (those tasks are served again anyway).
    Ingest reads every flow-control partition this way: only fresh signals matter.

    Args:
        partition: one partition, or None for every partition of the topic.
    """

    def __init__(self, config: dict[str, Any], topic: str, partition: int | None) -> None:
        self._config = dict(config)
        self._topic = topic
        self._partition = partition
        self._consumer: confluent_kafka.Consumer | None = None

    async def start(self) -> None:
        """Create the consumer and assign the partition(s) at their end."""
        consumer = confluent_kafka.Consumer(self._config)
        self._consumer = consumer
        if self._partition is not None:
            partitions = [self._partition]
        else:
            try:
                meta = await asyncio.to_thread(consumer.list_topics, self._topic, 10)
            except confluent_kafka.KafkaException as exc:
                raise ConsumerError(f"metadata of {self._topic}: {exc}") from exc
            topic = meta.topics.get(self._topic)
            if topic is None or topic.error is not None:
                raise ConsumerError(f"topic {self._topic} not found")
            partitions = sorted(topic.partitions)

        def high_watermark(partition: int) -> int:
            tp = confluent_kafka.TopicPartition(self._topic, partition)
            for attempt in range(20):
                try:
                    _low, high = consumer.get_watermark_offsets(tp, timeout=10)
                    return int(high)
                except confluent_kafka.KafkaException as exc:
                    # A fresh topic answers NOT_LEADER until its leader reaches the metadata
                    # cache; retry that (bounded), translate anything else.
                    if exc.args[0].code() != confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION:
                        raise ConsumerError(f"watermarks of {self._topic}: {exc}") from exc
                    time.sleep(0.05 * (attempt + 1))
            raise ConsumerError(f"{self._topic}[{partition}] has no leader")

        def positions() -> list[confluent_kafka.TopicPartition]:
            # Explicit high watermarks, not OFFSET_END: librdkafka resolves OFFSET_END lazily
            # (up to a second after assign), and records written in that window were skipped.
            return [
                confluent_kafka.TopicPartition(self._topic, p, high_watermark(p))
                for p in partitions
            ]

        await asyncio.to_thread(consumer.assign, await asyncio.to_thread(positions))

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first."""
        if self._consumer is None:
            raise RuntimeError("reader is not started")
        return to_records(
            await asyncio.to_thread(consume_available, self._consumer, max_records, timeout_s)
        )

    async def close(self) -> None:
        """Close the consumer."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await asyncio.to_thread(consumer.close)
