"""How far each partition of one polled failed-writes batch may be committed, as it settles.

Pure bookkeeping for the topic loop of the failed-writes processor (docs/failure-handling.md,
"Replay"): a record is *settled* once Kafka confirmed its replay (in its lane, or parked in
the DLQ) or the backup store holds it. A partition may be committed up to its first record
that is not settled: a crash then replays that record and everything after it in the
partition (duplicates of what was settled above it), and loses nothing. No I/O, no clock,
not thread-safe: one event loop owns a :class:`SettledPrefix`.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["SettledPrefix", "TopicPartition"]

TopicPartition = tuple[str, int]
"""A ``(topic, partition)`` key."""


class SettledPrefix:
    """The committable position of each partition of one batch: its settled prefix.

    Built from the batch's ``(topic, partition, offset)`` in batch order; records are then
    settled by their index in the batch, in any order. Offsets of one partition must
    increase through the batch (as a consumer hands them out); they need not be contiguous
    (transaction markers and compaction leave gaps), so the prefix is over the records read,
    not over the integers.

    Invariants: per partition, the head of the queue is the first record not settled; the
    committable position (Kafka's next offset to read) is that record's offset, or the last
    record's offset + 1 once every record is settled. A position is handed out by
    `advanced` until `mark_committed` records it, so a failed commit is retried with the
    next progress.

    Raises:
        ValueError: an offset that does not increase within its partition, or an index that
            is not in the batch.
    """

    __slots__ = (
        "_committed",
        "_first_sent",
        "_index",
        "_next",
        "_queues",
        "_settled",
        "_unsettled",
    )

    def __init__(self, positions: Sequence[tuple[str, int, int]]) -> None:
        # Per partition, the indexes of its records in batch order, from the first one not
        # settled (records behind it may be settled already: they wait for the head).
        self._queues: dict[TopicPartition, deque[int]] = {}
        self._next: dict[TopicPartition, int] = {}  # last offset + 1, per partition
        self._index: list[tuple[TopicPartition, int]] = []  # per index: (partition, offset)
        self._settled: list[bool] = [False] * len(positions)
        # Per index, the wall time (Unix ms) it was first handed to Kafka, or -1: a record
        # sent once may be in its lane even if that send was reported as failed.
        self._first_sent: list[int] = [-1] * len(positions)
        self._unsettled = len(positions)
        # Per partition, the last position committed, or the batch's first offset (where the
        # group's committed position already is: a commit there would move nothing).
        self._committed: dict[TopicPartition, int] = {}
        for i, (topic, partition, offset) in enumerate(positions):
            tp = (topic, partition)
            last = self._next.get(tp)
            if last is None:
                self._committed[tp] = offset
            elif offset < last:
                raise ValueError(
                    f"offset {offset} of {topic}[{partition}] (index {i}) does not increase "
                    f"past {last - 1}"
                )
            self._queues.setdefault(tp, deque()).append(i)
            self._next[tp] = offset + 1
            self._index.append((tp, offset))

    def settle(self, index: int) -> None:
        """Record that the record at ``index`` of the batch is settled (idempotent)."""
        if not 0 <= index < len(self._settled):
            raise ValueError(f"index {index} is not in the batch of {len(self._settled)}")
        if self._settled[index]:
            return
        self._settled[index] = True
        self._unsettled -= 1
        tp = self._index[index][0]
        queue = self._queues[tp]
        while queue and self._settled[queue[0]]:
            queue.popleft()

    def sent(self, indexes: Iterable[int], at_ms: int) -> None:
        """Record that the records at ``indexes`` are being handed to Kafka at ``at_ms``.

        Call before the send (the records' timestamps are then no earlier); only the first
        send of a record counts.
        """
        for index in indexes:
            if not 0 <= index < len(self._first_sent):
                raise ValueError(f"index {index} is not in the batch of {len(self._first_sent)}")
            if self._first_sent[index] < 0:
                self._first_sent[index] = at_ms

    def sent_from_ms(self, tp: TopicPartition, now_ms: int) -> int:
        """The intent of a commit of ``tp`` now: no record past its position was sent earlier.

        The first send of the records of ``tp`` from its first unsettled one on (settled or
        not: a record confirmed above a pending one is past the position too), or ``now_ms``
        when none of them was sent yet (a later send is later than now).
        """
        sends = [self._first_sent[i] for i in self._queues[tp] if self._first_sent[i] >= 0]
        return min(sends, default=now_ms)

    def position(self, tp: TopicPartition) -> int:
        """The offset ``tp`` may be committed to now (Kafka's next offset to read)."""
        queue = self._queues[tp]
        return self._index[queue[0]][1] if queue else self._next[tp]

    def advanced(self) -> dict[TopicPartition, int]:
        """Positions that moved past the last `mark_committed` (or past the batch's start).

        A partition whose first record is not settled is not listed: committing it would
        change nothing.
        """
        moved: dict[TopicPartition, int] = {}
        for tp in self._queues:
            head = self.position(tp)
            if head > self._committed[tp]:
                moved[tp] = head
        return moved

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record that Kafka accepted a commit of ``positions`` (as `advanced` gave them)."""
        for tp, offset in positions.items():
            if tp not in self._committed:
                raise ValueError(f"{tp[0]}[{tp[1]}] has no record in this batch")
            if offset > self._committed[tp]:
                self._committed[tp] = offset

    @property
    def unsettled(self) -> int:
        """How many records of the batch are not settled yet."""
        return self._unsettled
