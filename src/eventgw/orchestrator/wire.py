"""The ``TaskBatch`` messages the orchestrator streams to workers, written as spliced bytes.

Why bytes: a message per task built field by field (the event merged into it) cost three
times as much as joining the record's value with the few fields that differ per task
(tests/unit/orchestrator/test_wire.py checks both give the same message).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.protowire import short_varint, varint

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from eventgw.orchestrator.task_heaps import BufferedTask

__all__ = ["MAX_MESSAGE_BYTES", "hint", "task_batches"]

MAX_MESSAGE_BYTES: Final = 4 << 20
"""A ``TaskBatch`` is cut after the task that takes it past this size (gRPC's limit is 64
MiB; a large message also delays every task behind it). A single larger task goes alone."""

_TASKS_TAG: Final = b"\x12"  # TaskBatch.tasks: field 2, length-delimited
_TASK_ID_TAG: Final = b"\x0a"  # Task.task_id: field 1
_EVENT_TAG: Final = b"\x12"  # Task.event: field 2
_ATTEMPT_TAG: Final = b"\x50"  # EventData.attempt: field 10, varint
_RANK_TAG: Final = b"\x30"  # Task.rank: field 6, varint


def task_batches(
    tasks: Sequence[BufferedTask],
    orchestrator_index: int,
    backlog: int,
    now_wall: float,
    now_mono: float,
) -> Iterator[bytes]:
    """Serialized ``TaskBatch`` messages carrying ``tasks`` in order.

    Each message holds as many tasks as fit in `MAX_MESSAGE_BYTES` (at least one).
    A task's ``event`` is the record's value as it is (a serialized ``EventData``)
    followed by an ``attempt`` field: protobuf keeps the last value of a scalar field, so
    the handler sees the buffer's attempt count (a NACK retried from memory counted one
    more than the record holds). ``delivery_count``, ``lease_expires_ms`` and ``lane`` are
    encoded once per distinct triple, ``rank`` once per distinct value.
    """
    trailer = pb.TaskBatch(
        orchestrator_index=orchestrator_index, backlog=backlog
    ).SerializeToString()
    tails: dict[tuple[int, int, str], bytes] = {}
    ranks: dict[int, bytes] = {}
    parts: list[bytes] = []
    size = 0
    for t in tasks:
        lease_ms = int((now_wall + t.lease_expires - now_mono) * 1000)
        key = (t.delivery_count, lease_ms, t.lane)
        tail = tails.get(key)
        if tail is None:
            tail = tails[key] = pb.Task(
                delivery_count=t.delivery_count, lease_expires_ms=lease_ms, lane=t.lane
            ).SerializeToString()
        rank = ranks.get(t.rank)
        if rank is None:
            rank = ranks[t.rank] = _RANK_TAG + varint(t.rank) if t.rank > 0 else b""
        value = t.value
        attempt = short_varint(t.attempt)
        tid = t.task_id.encode()
        body = b"".join(
            (
                _TASK_ID_TAG,
                short_varint(len(tid)),
                tid,
                _EVENT_TAG,
                short_varint(len(value) + 1 + len(attempt)),
                value,
                _ATTEMPT_TAG,
                attempt,
                tail,
                rank,
            )
        )
        head = short_varint(len(body))
        if parts and size + len(body) > MAX_MESSAGE_BYTES:
            parts.append(trailer)
            yield b"".join(parts)
            parts, size = [], 0
        parts += (_TASKS_TAG, head, body)
        size += len(body) + 1 + len(head)
    parts.append(trailer)
    yield b"".join(parts)


def hint(orchestrator_index: int, backlog: int, credit_returned: int = 0, fleet: str = "") -> bytes:
    """A ``TaskBatch`` without tasks: the backlog hint, or credit given back; the welcome
    also names the replica's ``fleet``."""
    message: bytes = pb.TaskBatch(
        orchestrator_index=orchestrator_index,
        backlog=backlog,
        credit_returned=credit_returned,
        fleet=fleet,
    ).SerializeToString()
    return message
