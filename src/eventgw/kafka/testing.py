"""An in-memory stand-in for Kafka, for unit tests of pure logic only.

It writes like `eventgw.kafka.producer.BatchProducer.send` and reads like
`eventgw.kafka.scanner.TopicScanner`, so the DLQ tools' logic (selection, redrive log, crash
points) can be tested without a broker. It is never proof that Kafka behaves this way: the
integration tests run the same tools against the real broker.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from eventgw.core.clock import FakeClock
from eventgw.kafka.producer import Delivery
from eventgw.kafka.scanner import ScanError, ScannedRecord

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from eventgw.core.clock import Clock
    from eventgw.core.envelope import Headers
    from eventgw.kafka.producer import Record


class SimulatedCrash(Exception):
    """Raised by `InMemoryKafka.send` to stand for the writing process being killed."""


class InMemoryKafka:
    """Topics as lists per partition. Records keep their offsets; ``low`` models retention.

    Failure injection:
        ``failing_topics``: every write to these topics fails (a Delivery with an error).
        ``crash_on_send``: the n-th call to `send` (1-based) raises `SimulatedCrash`
        before writing anything (``crash_after_write``: after writing its records).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or FakeClock()
        self._partitions: dict[str, list[list[ScannedRecord]]] = {}
        self._low: dict[tuple[str, int], int] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._round_robin = 0
        self.failing_topics: set[str] = set()
        self.crash_on_send: int | None = None
        self.crash_after_write = False
        self.sends = 0

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with ``partitions`` empty partitions (no-op if it exists)."""
        if name not in self._partitions:
            self._partitions[name] = [[] for _ in range(partitions)]
            for p in range(partitions):
                self._low[name, p] = 0
                self._next[name, p] = 0

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        timestamp_ms: int | None = None,
    ) -> ScannedRecord:
        """Write one record to ``topic[partition]`` directly; returns it with its offset."""
        offset = self._next[topic, partition]
        self._next[topic, partition] = offset + 1
        ts = self._clock.wall_ms() if timestamp_ms is None else timestamp_ms
        record = ScannedRecord(topic, partition, offset, ts, key, value, list(headers))
        self._partitions[topic][partition].append(record)
        return record

    def delete_before(self, topic: str, partition: int, offset: int) -> None:
        """Retention: drop the records of ``topic[partition]`` below ``offset``."""
        self._low[topic, partition] = offset
        kept = [r for r in self._partitions[topic][partition] if r.offset >= offset]
        self._partitions[topic][partition] = kept

    def records(self, topic: str) -> list[ScannedRecord]:
        """Every record of ``topic``, in partition then offset order."""
        return [r for part in self._partitions.get(topic, []) for r in part]

    def _topic(self, topic: str) -> list[list[ScannedRecord]]:
        found = self._partitions.get(topic)
        if found is None:
            raise ScanError(topic, None, "topic does not exist (eventgw topics create)")
        return found

    # -- BatchProducer ---------------------------------------------------------------------

    async def send(
        self, topic: str, records: Sequence[Record], partition: int | None = None
    ) -> list[Delivery]:
        """Write ``records`` as `BatchProducer.send` would; see the class failure injection."""
        self.sends += 1
        crash = self.crash_on_send == self.sends
        if crash and not self.crash_after_write:
            raise SimulatedCrash(f"crash on send {self.sends}")
        out: list[Delivery] = []
        for key, value, headers in records:
            if topic in self.failing_topics or topic not in self._partitions:
                out.append(Delivery(-1, -1, f"cannot write to {topic}"))
                continue
            count = len(self._partitions[topic])
            if partition is not None:
                target = partition
            elif key:
                target = zlib.crc32(key) % count
            else:
                self._round_robin += 1
                target = self._round_robin % count
            written = self.append(topic, target, key, value, headers)
            out.append(Delivery(target, written.offset))
        if crash:
            raise SimulatedCrash(f"crash after send {self.sends}")
        return out

    # -- TopicScanner ----------------------------------------------------------------------

    async def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """See `TopicScanner.watermarks`."""
        return {
            p: (self._low[topic, p], self._next[topic, p]) for p in range(len(self._topic(topic)))
        }

    async def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """See `TopicScanner.offsets_for_time` (records' timestamps are taken as ordered)."""
        out: dict[int, int] = {}
        for p, records in enumerate(self._topic(topic)):
            later = [r.offset for r in records if r.timestamp_ms >= timestamp_ms]
            out[p] = later[0] if later else self._next[topic, p]
        return out

    async def read(
        self, topic: str, partition: int, start: int, end: int
    ) -> AsyncGenerator[list[ScannedRecord], None]:
        """See `TopicScanner.read`; yields batches of at most 3 records (to test steps)."""
        records = [r for r in self._topic(topic)[partition] if start <= r.offset < end]
        for i in range(0, len(records), 3):
            yield records[i : i + 3]
