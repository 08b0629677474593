"""Find records in a topic: plan the offsets to read, then read and filter them.

Reading goes through the `Scanner` protocol (`eventgw.kafka.scanner.TopicScanner` in
production, `eventgw.kafka.testing.InMemoryKafka` in unit tests): explicit offsets, no
consumer group, no commits, and every read stops at the high watermark seen when the scan
was planned, so a listing ends even while the orchestrator keeps writing to the topic.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw.dlq.record import DlqRecord

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eventgw.dlq.selection import Coordinate, Selection
    from eventgw.kafka.scanner import Scanner


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """The offsets a scan reads: ``ranges`` holds ``(partition, start, end)``, end excluded."""

    topic: str
    ranges: tuple[tuple[int, int, int], ...]

    @property
    def total(self) -> int:
        """Offsets in the plan (records to read at most; fewer where offsets have gaps)."""
        return sum(end - start for _, start, end in self.ranges)


@dataclass(frozen=True, slots=True)
class ScanStep:
    """One step of a scan: the records of this step that match, and the progress so far."""

    matches: list[DlqRecord]
    scanned: int
    """Offsets covered so far (read, or skipped over as gaps)."""


class TopicReader:
    """Plans and runs filtered scans of one cluster's topics (see the module docstring).

    Args:
        scanner: reads by offset; owned by the caller (opened and closed there).
    """

    def __init__(self, scanner: Scanner) -> None:
        self._scanner = scanner

    async def plan(self, topic: str, selection: Selection) -> ScanPlan:
        """The partitions and offsets to read for ``selection``, up to the high watermarks.

        Raises:
            eventgw.kafka.scanner.ScanError: the topic does not exist or cannot be read.
        """
        marks = await self._scanner.watermarks(topic)
        since = None
        if selection.since_ms is not None:
            since = await self._scanner.offsets_for_time(topic, selection.since_ms)
        ranges = selection.partition_ranges(marks, since)
        return ScanPlan(topic, tuple((p, s, e) for p, (s, e) in ranges.items()))

    async def scan(self, plan: ScanPlan, selection: Selection) -> AsyncIterator[ScanStep]:
        """Read the plan in partition then offset order; yield each step's matching records.

        Stops after ``selection.limit`` matches. Bounded memory: one step holds at most
        one poll's records (`TopicScanner` ``max_records_per_poll``).
        """
        left = selection.limit
        done = 0
        for partition, start, end in plan.ranges:
            reads = self._scanner.read(plan.topic, partition, start, end)
            async with contextlib.aclosing(reads):
                async for batch in reads:
                    matches: list[DlqRecord] = []
                    for scanned in batch:
                        record = DlqRecord.from_scanned(scanned)
                        if selection.matches(record):
                            matches.append(record)
                            if left is not None:
                                left -= 1
                                if left == 0:
                                    break
                    yield ScanStep(matches, done + batch[-1].offset + 1 - start)
                    if left == 0:
                        return
            done += end - start
            yield ScanStep([], done)

    async def get(self, topic: str, coordinate: Coordinate) -> DlqRecord | None:
        """The record at ``coordinate``, or None if the topic does not hold it (any more).

        Raises:
            eventgw.kafka.scanner.ScanError: the topic does not exist or cannot be read.
        """
        marks = await self._scanner.watermarks(topic)
        low, high = marks.get(coordinate.partition, (0, 0))
        if not low <= coordinate.offset < high:
            return None
        offset = coordinate.offset
        reads = self._scanner.read(topic, coordinate.partition, offset, offset + 1)
        async with contextlib.aclosing(reads):
            async for batch in reads:
                for scanned in batch:
                    if scanned.offset == offset:
                        return DlqRecord.from_scanned(scanned)
        return None  # deleted by retention or compaction meanwhile
