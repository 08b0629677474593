"""What a worker sends about its tasks, as spliced protobuf bytes.

Two messages carry results: ``WorkRequest`` on the worker's ``Work`` stream (with credit,
the usual path; a plain ACK is just its task id in ``acked``) and ``TaskResults``, the
response-topic record for results a stream could not take. Building a ``pb.TaskResult``
per task and then the message that copies them cost the processor a seventh of its CPU
with a quick handler; only ``task_id`` and ``delivery_count``
(and, on the topic, ``event_id``) differ from task to task, so the outcome fields are encoded
once per distinct outcome. Fields stay in field-number order, so the bytes equal
``SerializeToString`` of the same message (tests/unit/processor/test_results.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.protowire import short_varint
from eventgw.processor.handlers import ACKED

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.processor.handlers import Outcome

__all__ = ["Result", "results_record", "work_request"]

Result = tuple[str, int, str, "Outcome"]
"""One task's result: ``(task_id, delivery_count, event_id, outcome)``."""

_RESULTS_TAG: Final = b"\x0a"  # TaskResults.results: field 1, length-delimited
_WORK_RESULTS_TAG: Final = b"\x1a"  # WorkRequest.results: field 3, length-delimited
_ACKED_TAG: Final = b"\x2a"  # WorkRequest.acked: field 5, length-delimited (a task id)
_TASK_ID_TAG: Final = b"\x0a"  # TaskResult.task_id: field 1
_EVENT_ID_TAG: Final = b"\x32"  # TaskResult.event_id: field 6
_DELIVERY_COUNT_TAG: Final = b"\x40"  # TaskResult.delivery_count: field 8, varint


def _splice(
    results: Sequence[Result],
    tag: bytes,
    worker_id: str,
    index_part: bytes,
    with_event_id: bool,
) -> list[bytes]:
    middles: dict[tuple[int, int, str], bytes] = {}  # outcome → fields 2-5
    parts: list[bytes] = []
    for task_id, delivery_count, event_id, outcome in results:
        key = (outcome.kind, outcome.delay_ms, outcome.error)
        middle = middles.get(key)
        if middle is None:
            middle = middles[key] = pb.TaskResult(
                kind=outcome.kind,
                delay_ms=outcome.delay_ms,
                error=outcome.error,
                worker_id=worker_id,
            ).SerializeToString()
        tid = task_id.encode()
        eid = event_id.encode() if with_event_id else b""
        body = b"".join(
            (
                _TASK_ID_TAG + short_varint(len(tid)) + tid if tid else b"",
                middle,
                _EVENT_ID_TAG + short_varint(len(eid)) + eid if eid else b"",
                index_part,
                _DELIVERY_COUNT_TAG + short_varint(delivery_count) if delivery_count else b"",
            )
        )
        parts += (tag, short_varint(len(body)), body)
    return parts


def work_request(
    results: Sequence[Result],
    *,
    credit: int = 0,
    revoke: int = 0,
    worker_id: str = "",
    acked: Sequence[str] = (),
) -> bytes:
    """A serialized ``WorkRequest``: ``worker_id`` (first message only), credit, results.

    A plain ACK — the common result — goes as its task id in ``acked`` (after ``acked``, the
    ids of ACKs sent again); other results as a ``TaskResult`` without ``worker_id``,
    ``event_id`` and ``orchestrator_index`` (the stream says who sent them and to whom).
    """
    head = pb.WorkRequest(worker_id=worker_id, credit=credit).SerializeToString()
    tail = pb.WorkRequest(revoke=revoke).SerializeToString()
    others: list[Result] = []
    ack_parts: list[bytes] = []
    for task_id in acked:  # ACKs sent again (a new stream after a lost one)
        tid = task_id.encode()
        ack_parts += (_ACKED_TAG, short_varint(len(tid)), tid)
    for result in results:
        if result[3] is ACKED:
            tid = result[0].encode()
            ack_parts += (_ACKED_TAG, short_varint(len(tid)), tid)
        else:
            others.append(result)
    return b"".join((head, *_splice(others, _WORK_RESULTS_TAG, "", b"", False), tail, *ack_parts))


def results_record(results: Sequence[Result], worker_id: str, orchestrator_index: int) -> bytes:
    """The serialized ``TaskResults`` response-topic record of ``results``."""
    index_part = pb.TaskResult(orchestrator_index=orchestrator_index).SerializeToString()
    return b"".join(_splice(results, _RESULTS_TAG, worker_id, index_part, True))
