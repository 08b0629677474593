"""Which messages of one batched read across a consumer-group rebalance may be handed on.

Pure: no I/O, works on anything shaped like a confluent-kafka ``Message`` (``topic()``,
``partition()``, ``offset()``, ``error()``). Used by `eventgw.kafka.group_consumer`, whose
batched poll is two reads (``poll()`` then ``consume()``) with rebalance callbacks possibly
run between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence, Set

__all__ = ["drop_stale_reads"]

TopicPartition = tuple[str, int]


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
