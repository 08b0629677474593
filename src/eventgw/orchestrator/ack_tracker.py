"""Which consumed offsets are finished, and how far each partition may be committed.

Pure bookkeeping for the orchestrator's commit loop (docs/priorities-and-backpressure.md,
"Offsets"): offsets are committed only up to the first task that is not finished — ACKed,
or durably handed to a retry topic or the DLQ. A crash then re-delivers everything not
finished (at-least-once) and loses nothing. No I/O, no clock, not thread-safe: one event
loop owns an :class:`AckTracker`.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

__all__ = [
    "AckTracker",
    "AckTrackerStatistics",
    "PartitionAckStatistics",
    "Run",
    "TopicPartition",
]

TopicPartition = tuple[str, int]
"""A ``(topic, partition)`` key."""

Run = tuple[int, int]
"""Finished offsets ``start..end`` (inclusive)."""

# Finished offsets that are not at the head stay in a partition's deque until the head passes
# them; past this slack (and past 2x the unfinished count) the deque is rebuilt, so memory
# stays O(unfinished) even when one slow task holds the head for minutes.
_COMPACT_SLACK = 64


@dataclass(frozen=True, slots=True)
class PartitionAckStatistics:
    """Point-in-time view of one partition in an :class:`AckTracker`."""

    topic: str
    partition: int
    unfinished: int  # tracked offsets not finished yet
    first_unfinished: int | None  # the offset holding commits back; None when all finished
    next_offset: int  # the position commits may go up to now (Kafka next offset to read)
    committed: int | None  # highest offset passed to mark_committed; None before the first
    # Offsets consumed above the committed position: last tracked + 1 - the last commit (or,
    # before the first, the first tracked offset, where the consumer started). What a crash
    # now would read again (finished runs in the commit metadata are skipped, not served).
    uncommitted: int


@dataclass(frozen=True, slots=True)
class AckTrackerStatistics:
    """Point-in-time view of an :class:`AckTracker`."""

    partitions: tuple[PartitionAckStatistics, ...]  # sorted by (topic, partition)
    unfinished: int  # sum over partitions


class _Partition:
    """Tracking state of one partition; see :class:`AckTracker` for the invariants."""

    __slots__ = ("committed", "dirty", "floor", "last", "offsets", "unfinished")

    def __init__(self, first_offset: int) -> None:
        self.offsets: deque[int] = deque()  # tracked offsets, increasing; head is unfinished
        self.unfinished: set[int] = set()
        self.last = first_offset - 1  # last tracked offset
        # Commits at or below `floor` move nothing: the consumer started reading at the first
        # tracked offset, and `mark_committed` raises it to what the group already holds.
        self.floor = first_offset
        self.committed: int | None = None
        # Something above the first unfinished offset finished since the last `pending`:
        # worth a commit (of the same position) to record it in the commit's metadata.
        self.dirty = False

    def next_offset(self) -> int:
        return self.offsets[0] if self.offsets else self.last + 1

    def committable(self) -> int | None:
        position = self.next_offset()
        return position if position > self.floor else None


class AckTracker:
    """Track consumed offsets per partition and answer how far each may be committed.

    Per ``(topic, partition)`` the tracker holds the offsets handed to the buffer and not yet
    finished. The commit position is the **first unfinished tracked offset**, or last tracked
    offset + 1 when all are finished: Kafka's "next offset to read", so committing it never
    skips an unfinished task. Offsets between tracked ones (transaction markers, compacted
    records) were never delivered and do not hold commits back.

    States per partition: *absent* --``track``--> *tracked* --``drop``--> *absent*. A partition
    is created by its first ``track`` after assignment and forgotten by ``drop`` on revoke;
    results that arrive afterwards are unknown (``finish`` returns False).

    Invariants (checked by the property tests):
      - offsets are tracked in strictly increasing order per partition;
      - ``committable`` never exceeds an unfinished offset, and equals last tracked + 1 once
        every tracked offset is finished;
      - ``committable``/``pending`` report a position only when it is above both the first
        tracked offset (where the consumer started, so committing it moves nothing) and the
        highest offset passed to ``mark_committed`` (so a commit never moves a group back).

    Cost: ``track`` and ``finish`` are O(1) amortised; memory is O(unfinished offsets).
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}

    def track(self, topic: str, partition: int, offset: int) -> None:
        """Record that ``offset`` of ``topic[partition]`` was handed to the buffer (unfinished).

        Raises:
            ValueError: ``offset`` is negative or not above the last offset tracked for the
                partition since it was (re)created.
        """
        key = (topic, partition)
        state = self._partitions.get(key)
        if state is None:
            if offset < 0:
                raise ValueError(f"offset must be >= 0, got {offset} for {topic}[{partition}]")
            state = self._partitions[key] = _Partition(offset)
        elif offset <= state.last:
            raise ValueError(
                f"offset {offset} of {topic}[{partition}] is not above the last tracked "
                f"offset {state.last}: offsets must be tracked in increasing order"
            )
        state.last = offset
        state.offsets.append(offset)
        state.unfinished.add(offset)

    def finish(self, topic: str, partition: int, offset: int) -> bool:
        """Mark ``offset`` finished: ACKed, or durably handed to a retry topic or the DLQ.

        Idempotent: finishing an offset twice changes nothing the second time.

        Returns:
            True if this call finished a tracked, unfinished offset; False if the partition is
            unknown (never tracked or dropped on revoke), the offset was never tracked, or it
            was already finished — a stale or duplicate result the caller may count.
        """
        state = self._partitions.get((topic, partition))
        if state is None or offset not in state.unfinished:
            return False
        unfinished = state.unfinished
        unfinished.remove(offset)
        offsets = state.offsets
        while offsets and offsets[0] not in unfinished:
            offsets.popleft()
        if offsets:
            state.dirty = offsets[0] < offset  # finished above the first unfinished one
        if len(offsets) > 2 * len(unfinished) + _COMPACT_SLACK:
            # Keep every unfinished offset and the two ends of each finished run between
            # them (all finished_runs needs): memory O(unfinished).
            state.offsets = _compact(offsets, unfinished)
        return True

    def finished_runs(self, topic: str, partition: int, max_scan: int = 50_000) -> list[Run]:
        """Runs of finished offsets above the first unfinished one, ascending (from the
        first ``max_scan`` tracked offsets): what a commit's metadata records."""
        state = self._partitions.get((topic, partition))
        if state is None or not state.offsets:
            return []
        unfinished = state.unfinished
        runs: list[Run] = []
        start = end = -1
        for o in itertools.islice(state.offsets, max_scan):
            if o in unfinished:
                if start >= 0:
                    runs.append((start, end))
                    start = -1
            elif start < 0:
                start = end = o
            else:
                end = o
        if start >= 0:
            # The tail: everything tracked after the last unfinished offset is finished.
            runs.append((start, state.last if len(state.offsets) <= max_scan else end))
        return runs

    def committable(self, topic: str, partition: int) -> int | None:
        """Return the offset to commit for ``topic[partition]`` (Kafka next offset to read).

        Returns:
            The first unfinished tracked offset, or last tracked + 1 if all are finished; None
            if the partition is unknown or the position is not above both its first tracked
            offset and the last ``mark_committed`` offset (committing would move nothing).
        """
        state = self._partitions.get((topic, partition))
        return None if state is None else state.committable()

    def position(self, topic: str, partition: int) -> int | None:
        """The first unfinished tracked offset (last + 1 if none); None if unknown."""
        state = self._partitions.get((topic, partition))
        return None if state is None else state.next_offset()

    def pending(self) -> dict[TopicPartition, int]:
        """Return the committable offset of every partition whose position moved.

        A partition appears when its position is above its first tracked offset and above the
        last ``mark_committed`` offset, so the caller commits only what moved — or when
        offsets above its first unfinished one finished since the last call (its position
        again: the commit records them, `finished_runs`). O(partitions).
        """
        result: dict[TopicPartition, int] = {}
        for key, state in self._partitions.items():
            position = state.committable()
            if position is None and state.dirty:
                position = state.next_offset()  # the same position, new finished runs
            state.dirty = False
            if position is not None:
                result[key] = position
        return result

    def mark_committed(self, topic: str, partition: int, offset: int) -> None:
        """Record that ``offset`` was committed for ``topic[partition]``.

        Call it after the commit succeeded. The highest offset wins, so a late completion of an
        older commit does nothing; a mark for an unknown (dropped) partition is ignored.

        Raises:
            ValueError: ``offset`` is negative.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset} for {topic}[{partition}]")
        state = self._partitions.get((topic, partition))
        if state is None:
            return
        state.committed = offset if state.committed is None else max(state.committed, offset)
        state.floor = max(state.floor, offset)

    def drop(self, topic: str, partition: int) -> int:
        """Forget ``topic[partition]`` (revoked); return how many offsets were unfinished.

        Their tasks will be re-delivered to the partition's next owner from the committed
        offset, so nothing is lost.
        """
        state = self._partitions.pop((topic, partition), None)
        return 0 if state is None else len(state.unfinished)

    def outstanding(self, topic: str, partition: int) -> int:
        """Return the number of unfinished offsets of ``topic[partition]`` (0 if unknown)."""
        state = self._partitions.get((topic, partition))
        return 0 if state is None else len(state.unfinished)

    def partitions(self) -> list[TopicPartition]:
        """Return the tracked partitions, sorted."""
        return sorted(self._partitions)

    def statistics(self) -> AckTrackerStatistics:
        """Return a point-in-time view of every tracked partition; O(partitions)."""
        rows = tuple(
            PartitionAckStatistics(
                topic=topic,
                partition=partition,
                unfinished=len(state.unfinished),
                first_unfinished=state.offsets[0] if state.offsets else None,
                next_offset=state.next_offset(),
                committed=state.committed,
                uncommitted=max(0, state.last + 1 - state.floor),
            )
            for (topic, partition), state in sorted(self._partitions.items())
        )
        return AckTrackerStatistics(partitions=rows, unfinished=sum(r.unfinished for r in rows))


def _compact(offsets: deque[int], unfinished: set[int]) -> deque[int]:
    """The tracked offsets to keep: the unfinished ones, and the first and last offset of
    each run of finished ones between them (all `finished_runs` needs)."""
    kept: deque[int] = deque()
    last_finished = -1  # the latest finished offset not kept yet (a run's end, so far)
    in_run = False
    for o in offsets:
        if o in unfinished:
            if in_run and last_finished >= 0:
                kept.append(last_finished)
            kept.append(o)
            in_run = False
            last_finished = -1
        elif not in_run:
            kept.append(o)  # a run's first offset
            in_run = True
        else:
            last_finished = o
    if in_run and last_finished >= 0:
        kept.append(last_finished)
    return kept
