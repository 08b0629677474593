"""gRPC face of the orchestrator: ``GetBatch`` (long-poll), ``Ack`` (fast path), ``Stats``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.core.envelope import new_event_id
from eventgw.core.protowire import short_varint as _short_varint

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.orchestrator.dispatcher import Dispatcher
    from eventgw.orchestrator.priority_buffer import BufferedTask


_TASKS_TAG: Final = b"\x12"  # GetBatchResponse.tasks: field 2, length-delimited
_TASK_ID_TAG: Final = b"\x0a"  # Task.task_id: field 1
_EVENT_TAG: Final = b"\x12"  # Task.event: field 2
_ATTEMPT_TAG: Final = b"\x50"  # EventData.attempt: field 10, varint


def batch_response(
    batch_id: str,
    orchestrator_index: int,
    tasks: Sequence[BufferedTask],
    now_wall: float,
    now_mono: float,
) -> bytes:
    """The serialized ``GetBatchResponse`` for ``tasks``, written by splicing bytes.

    A task's ``event`` is the record's value as it is (a serialized ``EventData``) followed
    by an ``attempt`` field: protobuf keeps the last value of a repeated scalar field, so the
    handler sees the buffer's attempt count (a NACK retried from memory counted one more
    than the record holds). ``delivery_count``, ``lease_expires_ms`` and ``lane`` are
    encoded once per distinct triple (a batch usually has one). It parses to the message the
    protobuf API would build field by field (tests/unit/orchestrator/test_batch_api.py),
    for about a third of the cost per task.
    """
    parts = [pb.GetBatchResponse(batch_id=batch_id).SerializeToString()]
    tails: dict[tuple[int, int, str], bytes] = {}
    for t in tasks:
        lease_ms = int((now_wall + t.lease_expires - now_mono) * 1000)
        key = (t.delivery_count, lease_ms, t.lane)
        tail = tails.get(key)
        if tail is None:
            tail = tails[key] = pb.Task(
                delivery_count=t.delivery_count, lease_expires_ms=lease_ms, lane=t.lane
            ).SerializeToString()
        value = t.value
        attempt = _short_varint(t.attempt)  # a varint like any other
        tid = t.task_id.encode()
        body = b"".join(
            (
                _TASK_ID_TAG,
                _short_varint(len(tid)),
                tid,
                _EVENT_TAG,
                _short_varint(len(value) + 1 + len(attempt)),
                value,
                _ATTEMPT_TAG,
                attempt,
                tail,
            )
        )
        parts += (_TASKS_TAG, _short_varint(len(body)), body)
    parts.append(pb.GetBatchResponse(orchestrator_index=orchestrator_index).SerializeToString())
    return b"".join(parts)


GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    """Serves leased batches in SLO order; applies results sent over gRPC.

    ``GetBatch`` waits up to ``min(wait_ms, max_wait_ms)`` for the first task and answers an
    empty batch when nothing is ready (or while draining). Leases are reported in wall-clock
    ms so workers can tell when a result would come too late.
    """

    def __init__(self, dispatcher: Dispatcher, index: int, max_wait_ms: int) -> None:
        self._d = dispatcher
        self._index = index
        self._max_wait_ms = max_wait_ms

    async def GetBatch(
        self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """See the class docstring. Answers the serialized ``GetBatchResponse``
        (`batch_response`; registered without a serializer by `add_to_server`)."""
        wait_s = min(request.wait_ms, self._max_wait_ms) / 1000
        tasks = await self._d.get_batch(request.max_tasks, wait_s)
        return batch_response(new_event_id(), self._index, tasks, time.time(), time.monotonic())

    async def Ack(
        self, request: pb.TaskResults, context: grpc.aio.ServicerContext
    ) -> pb.AckResponse:
        """Apply results; unknown or expired leases are counted as stale."""
        accepted, stale = self._d.apply_results(request.results)
        return pb.AckResponse(accepted=accepted, stale=stale)

    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatsResponse:
        """Per-class buffer and outcome statistics."""
        return self._d.stats()


def add_to_server(servicer: OrchestratorServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` like the generated code, except that ``GetBatch`` answers bytes."""
    handlers = {
        "GetBatch": grpc.unary_unary_rpc_method_handler(
            servicer.GetBatch,
            request_deserializer=pb.GetBatchRequest.FromString,
            response_serializer=None,  # already serialized
        ),
        "Ack": grpc.unary_unary_rpc_method_handler(
            servicer.Ack,
            request_deserializer=pb.TaskResults.FromString,
            response_serializer=pb.AckResponse.SerializeToString,
        ),
        "Stats": grpc.unary_unary_rpc_method_handler(
            servicer.Stats,
            request_deserializer=pb.StatsRequest.FromString,
            response_serializer=pb.StatsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("eventgw.v1.Orchestrator", handlers),)
    )
