"""Batched reads of a consumer-group member that never mix both sides of a rebalance.

A batched poll is two reads (``poll()``, then ``consume()`` of what has arrived, see
`eventgw.kafka.consumer.consume_available`), and librdkafka runs rebalance callbacks inside
either. A partition revoked and assigned again inside the ``consume()`` is read again from
its committed offset, below the record the ``poll()`` returned: the batch held both, and its
owner refused the lower offset (the orchestrator's `AckTracker`, the failed-writes
processor's `SettledPrefix`: each crashed). `RebalanceCounter` counts the rebalances its
callbacks report and hands on only what was read after a revoke of its partition.

Works on anything shaped like a confluent-kafka consumer and ``Message`` (``topic()``,
``partition()``, ``offset()``, ``error()``); no I/O of its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence, Set

__all__ = ["RebalanceCounter", "drop_stale_reads"]

logger = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


class RebalanceCounter:
    """Counts a consumer's rebalances; filters batched reads across them (`hand_on`).

    ``generation`` counts the assignments and revocations (or losses) reported so far; each
    partition remembers the generation at which it last left. Not thread-safe: written by
    the rebalance callbacks, which librdkafka runs on the thread that polls, and read by
    `hand_on` on that same thread.
    """

    __slots__ = ("_left_at", "generation")

    def __init__(self) -> None:
        self.generation = 0
        self._left_at: dict[TopicPartition, int] = {}  # partition → generation it last left

    def assigned(self) -> None:
        """Count an assignment."""
        self.generation += 1

    def left(self, partitions: Iterable[TopicPartition]) -> None:
        """Count a revoke (or loss) of ``partitions``: reads of them from before it are stale."""
        self.generation += 1
        for tp in partitions:
            self._left_at[tp] = self.generation

    def hand_on(self, generation: int, first: Any, rest: Sequence[Any]) -> list[Any]:
        """The messages of one batched read (`consume_available`) its caller may see.

        Args:
            generation: `generation` after ``first`` was read, before ``rest``.
            first: the message ``poll()`` returned.
            rest: the messages the ``consume()`` after it returned.

        Returns:
            ``[first, *rest]``, without what was read before a revoke of its partition.
            ``poll()`` serves pending rebalance callbacks before it returns a record, so only
            ``first`` can be older than a rebalance run by the ``consume()`` after it. A
            dropped record is not lost: it was not handed on, so not committed, and is read
            again by whoever owns its partition next.
        """
        if self.generation == generation:
            return [first, *rest]
        left = {tp for tp, at in self._left_at.items() if at > generation}
        kept = drop_stale_reads([first], rest, left)
        if len(kept) <= len(rest):
            logger.info(
                "kafka.stale_reads_dropped count=%d partitions=%s",
                len(rest) + 1 - len(kept),
                ",".join(f"{t}[{p}]" for t, p in sorted(left)) or "-",
            )
        return kept


def drop_stale_reads(
    read_before: Sequence[Any], read_after: Sequence[Any], left: Set[TopicPartition]
) -> list[Any]:
    """The messages of one batched read across a rebalance that its caller may see.

    Args:
        read_before: messages read before the rebalance callbacks ran.
        read_after: messages read after them.
        left: the partitions revoked or lost in between.

    Returns:
        ``read_before`` without the messages of partitions in ``left`` (read under an
        assignment that ended), then ``read_after``; where a partition's offsets go back in
        that sequence (read before a revoke and again from the committed offset after it),
        only its messages from the last restart on. librdkafka drops stale messages inside
        one ``consume()`` itself (since v1.7, its pull request #3340): that second rule is
        the guard that callers never see a partition's offsets go back, whatever a client
        version does.
        Messages without a partition or offset, and error messages, are kept as they are.
    """
    messages = [m for m in read_before if _partition_of(m) not in left]
    messages.extend(read_after)
    last: dict[TopicPartition, int] = {}
    restart: dict[TopicPartition, int] = {}  # partition → index of its last restart
    for i, m in enumerate(messages):
        tp, offset = _partition_of(m), m.offset()
        if tp is None or offset is None or m.error() is not None:
            continue
        if tp in last and offset <= last[tp]:
            restart[tp] = i
        last[tp] = offset
    if not restart:
        return messages
    kept = []
    for i, m in enumerate(messages):
        tp = _partition_of(m)
        if tp is None or m.error() is not None or i >= restart.get(tp, 0):
            kept.append(m)
    return kept


def _partition_of(message: Any) -> TopicPartition | None:
    topic, partition = message.topic(), message.partition()
    return None if topic is None or partition is None else (topic, partition)
