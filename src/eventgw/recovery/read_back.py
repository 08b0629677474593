"""Find which uncommitted failed writes already reached Kafka, by reading the lanes back.

On taking over a failed-writes partition, the processor looks, in every topic it may have
written (lanes, retry topics, DLQ, on each cluster), for records whose
``eventgw-recovery-source`` header names a record of that partition at or after the
committed position, written since the intent of the last commit
(`eventgw.recovery.replay_intent`). Those are not sent again. Found is found: a record is
skipped only when its copy was read from Kafka below the high watermark (replicated), so a
read-back cut short costs duplicates, never loss.

Bounded: at most ``max_records`` records read in all, and no new step after ``deadline_s``
(each step is bounded by the scanner's own timeouts). A cluster that fails a step is not
read further; the others are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from eventgw.core.envelope import H_RECOVERY_SOURCE, header_value
from eventgw.kafka.scanner import ScanError, Scanner
from eventgw.recovery.replay_intent import parse_source

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventgw.core.clock import Clock
    from eventgw.kafka.scanner import ScannedRecord

__all__ = ["CLOCK_MARGIN_MS", "LaneReadBack", "ReadBackResult", "Shortfall"]

logger = logging.getLogger(__name__)

CLOCK_MARGIN_MS = 5_000
"""Read from this long before the intent: the record timestamps are the producer's clock
(CreateTime), which a clock step or another host's skew may put slightly before it."""

Shortfall = Literal["cap", "timeout", "error"]
"""Why a read-back did not read everything it should have: ``cap`` (``max_records`` read),
``timeout`` (``deadline_s`` passed), ``error`` (a cluster or topic could not be read)."""


@dataclass(slots=True)
class ReadBackResult:
    """What one read-back found (mutable while it runs).

    Attributes:
        found: per failed-writes partition, the offsets whose copy is in Kafka.
        records_read: records read from the lanes (all of them, ours or not).
        shortfalls: why parts were not read (empty: everything was).
    """

    found: dict[int, set[int]] = field(default_factory=dict)
    records_read: int = 0
    shortfalls: set[Shortfall] = field(default_factory=set)


class LaneReadBack:
    """Reads the topics the processor writes, back from the last commit's intent.

    Args:
        scanners: one reader per cluster the processor writes (``primary``, ``rollout``);
            owned by the caller.
        targets: per cluster, the topics it writes there.
        failed_writes_topic: the topic whose records are looked for.
        max_records: records read at most per call (all clusters).
        deadline_s: no step starts after this many seconds.
        clock: monotonic time for the deadline.

    Raises:
        ValueError: ``max_records`` < 1 or ``deadline_s`` <= 0.
    """

    def __init__(
        self,
        scanners: Mapping[str, Scanner],
        targets: Mapping[str, Sequence[str]],
        failed_writes_topic: str,
        *,
        max_records: int,
        deadline_s: float,
        clock: Clock,
    ) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {deadline_s}")
        self._scanners = scanners
        self._targets = targets
        self._topic = failed_writes_topic
        self._max_records = max_records
        self._deadline_s = deadline_s
        self._clock = clock

    async def find(self, committed: Mapping[int, int], sent_from_ms: int) -> ReadBackResult:
        """Offsets ``>= committed[partition]`` of the failed-writes topic already in Kafka.

        Args:
            committed: per failed-writes partition, its committed position.
            sent_from_ms: the earliest intent of those partitions' last commits.
        """
        result = ReadBackResult()
        if not committed:
            return result
        until = self._clock.monotonic() + self._deadline_s
        since_ms = max(0, sent_from_ms - CLOCK_MARGIN_MS)
        async with asyncio.TaskGroup() as tg:
            for cluster, scanner in self._scanners.items():
                topics = self._targets.get(cluster, ())
                tg.create_task(
                    self._cluster(cluster, scanner, topics, committed, since_ms, until, result)
                )
        return result

    async def _cluster(
        self,
        cluster: str,
        scanner: Scanner,
        topics: Sequence[str],
        committed: Mapping[int, int],
        since_ms: int,
        until: float,
        result: ReadBackResult,
    ) -> None:
        for topic in topics:
            try:
                if not await self._topic_read(scanner, topic, committed, since_ms, until, result):
                    return
            except ScanError as exc:
                # One step failed: this cluster is not read further (a cluster down would
                # cost a metadata timeout per topic); what was found stands.
                result.shortfalls.add("error")
                logger.warning(
                    "recovery.read_back_failed cluster=%s topic=%s error=%s", cluster, topic, exc
                )
                return

    async def _topic_read(
        self,
        scanner: Scanner,
        topic: str,
        committed: Mapping[int, int],
        since_ms: int,
        until: float,
        result: ReadBackResult,
    ) -> bool:
        """Read ``topic`` from ``since_ms``; False once the cap or the deadline is reached."""
        if not self._within(until, result):
            return False
        starts = await scanner.offsets_for_time(topic, since_ms)
        marks = await scanner.watermarks(topic)
        for partition, (_, high) in sorted(marks.items()):
            start = starts.get(partition, high)
            reads = scanner.read(topic, partition, start, high)
            async with contextlib.aclosing(reads):
                async for batch in reads:
                    result.records_read += len(batch)
                    for record in batch:
                        self._note(record, committed, result)
                    if not self._within(until, result):
                        return False
        return True

    def _within(self, until: float, result: ReadBackResult) -> bool:
        if result.records_read >= self._max_records:
            result.shortfalls.add("cap")
            return False
        if self._clock.monotonic() > until:
            result.shortfalls.add("timeout")
            return False
        return True

    def _note(
        self, record: ScannedRecord, committed: Mapping[int, int], result: ReadBackResult
    ) -> None:
        value = header_value(record.headers, H_RECOVERY_SOURCE)
        if value is None:
            return
        source = parse_source(value, self._topic)
        if source is None:
            return
        partition, offset = source
        position = committed.get(partition)
        if position is not None and offset >= position:
            result.found.setdefault(partition, set()).add(offset)
