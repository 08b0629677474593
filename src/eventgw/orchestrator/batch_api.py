"""gRPC face of the orchestrator: ``GetBatch`` (long-poll), ``Ack`` (fast path), ``Stats``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.core.envelope import new_event_id

if TYPE_CHECKING:
    import grpc

    from eventgw.orchestrator.dispatcher import Dispatcher

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
    ) -> pb.GetBatchResponse:
        """See the class docstring."""
        wait_s = min(request.wait_ms, self._max_wait_ms) / 1000
        tasks = await self._d.get_batch(request.max_tasks, wait_s)
        response = pb.GetBatchResponse(batch_id=new_event_id(), orchestrator_index=self._index)
        now_wall = time.time()
        now_mono = time.monotonic()
        for t in tasks:
            task = response.tasks.add()
            task.task_id = t.task_id
            task.event.MergeFromString(t.value)
            # The record holds the attempt it was written with; a NACK retried from memory
            # counted one more in the buffer only, and the handler must see it.
            task.event.attempt = t.attempt
            task.delivery_count = t.delivery_count
            task.lease_expires_ms = int((now_wall + t.lease_expires - now_mono) * 1000)
            task.lane = t.lane
        return response

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
