"""The redrive log: which DLQ records ``eventgw dlq redrive`` wrote back, kept in Kafka.

A compacted topic (``topics.dlq_redrive_log``) keyed by ``<dlq topic>:<partition>:<offset>``
of the DLQ record; the value is a JSON `LogEntry`. Two states per key:

- ``intent``: about to write the lane record. Holds the target topic's high watermarks
  before the write, so a later run can look for the record from there.
- ``done``: Kafka confirmed the lane record (its partition and offset are in the entry).

``done`` is final: a record whose entry is ``done`` is never redriven again. An ``intent``
without a ``done`` means a run stopped between the two writes; the next run looks in the
target topic for a record carrying ``eventgw-redriven`` = this key, from the watermarks on,
and records ``done`` if it is there (see `eventgw.dlq.redriver`).

Compaction keeps the last entry per key; since the key always hashes to the same partition,
``done`` is written after its ``intent`` there and survives. Merging is order-independent
anyway (`merge`), in case the topic's partition count changed.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventgw.kafka.producer import Delivery, Record
    from eventgw.kafka.scanner import Scanner

logger = logging.getLogger(__name__)


class Producer(Protocol):
    """What the tools need to write records (`eventgw.kafka.producer.BatchProducer`)."""

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]: ...


class LogEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One state of one DLQ record's redrive (see the module docstring).

    Attributes:
        state: ``intent`` (lane write about to start) or ``done`` (lane write confirmed).
        event_id: the event's id, for humans reading the log.
        target: the lane topic the record is redriven to.
        at_ms: when this entry was written (Unix ms).
        target_from: intent only: ``{partition: high watermark}`` of ``target`` just
            before the lane write; the record, if written, is at or after these offsets.
        target_partition: done only: where the lane record landed.
        target_offset: done only: its offset.
    """

    state: Literal["intent", "done"]
    event_id: str
    target: str
    at_ms: int
    target_from: dict[int, int] = msgspec.field(default_factory=dict)
    target_partition: int = -1
    target_offset: int = -1


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(LogEntry)


def log_key(topic: str, partition: int, offset: int) -> str:
    """The log key of a DLQ record: ``<topic>:<partition>:<offset>``."""
    return f"{topic}:{partition}:{offset}"


def encode_entry(key: str, entry: LogEntry) -> Record:
    """The log record of ``entry`` (key, JSON value, no headers)."""
    return key.encode(), _ENCODER.encode(entry), []


def decode_entry(value: bytes) -> LogEntry | None:
    """The entry in a log record's value, or None when it is not one."""
    try:
        return _DECODER.decode(value)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None


def merge(current: LogEntry | None, new: LogEntry) -> LogEntry:
    """The entry that stands for a key once both were read: ``done`` wins, then the latest."""
    if current is None:
        return new
    if (current.state == "done") != (new.state == "done"):
        return current if current.state == "done" else new
    return new if new.at_ms >= current.at_ms else current


class RedriveLog:
    """Reads and appends the redrive log topic.

    Args:
        topic: the log topic (``topics.dlq_redrive_log``).
        scanner: reads it by offset (no group, no commits).
        producer: writes to it (idempotent, ``acks=all``); owned by the caller. Only
            `append` needs it (``eventgw dlq list`` only reads the log).
    """

    def __init__(self, topic: str, scanner: Scanner, producer: Producer | None = None) -> None:
        self.topic = topic
        self._scanner = scanner
        self._producer = producer

    async def load(self, source_topic: str) -> dict[str, LogEntry]:
        """Every key of ``source_topic`` in the log, each with the entry that stands for it.

        Reads the whole log up to its high watermarks. Memory: one small entry per DLQ
        record ever redriven from ``source_topic`` (compaction keeps one per key).

        Raises:
            eventgw.kafka.scanner.ScanError: the log topic does not exist or cannot be read.
        """
        prefix = f"{source_topic}:"
        entries: dict[str, LogEntry] = {}
        ignored = 0
        for partition, (low, high) in sorted((await self._scanner.watermarks(self.topic)).items()):
            reads = self._scanner.read(self.topic, partition, low, high)
            async with contextlib.aclosing(reads):
                async for batch in reads:
                    for record in batch:
                        key = (record.key or b"").decode(errors="replace")
                        if not key.startswith(prefix):
                            continue
                        entry = decode_entry(record.value)
                        if entry is None:
                            ignored += 1
                            continue
                        entries[key] = merge(entries.get(key), entry)
        if ignored:
            logger.warning("dlq.redrive_log.ignored topic=%s records=%d", self.topic, ignored)
        return entries

    async def append(self, entries: Mapping[str, LogEntry]) -> dict[str, bool]:
        """Write ``entries``; returns, per key, whether Kafka confirmed it.

        Raises:
            RuntimeError: the log was built without a producer.
        """
        if not entries:
            return {}
        if self._producer is None:
            raise RuntimeError("this RedriveLog was opened read-only (no producer)")
        keys = list(entries)
        deliveries = await self._producer.send(
            self.topic, [encode_entry(key, entries[key]) for key in keys]
        )
        return {key: i < len(deliveries) and deliveries[i].ok for i, key in enumerate(keys)}
