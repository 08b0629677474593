"""gRPC face of the orchestrator: the ``Work`` stream (one per worker) and ``Stats``.

``Work`` is bidirectional: the worker sends credit and results, the orchestrator sends the
tasks it leases to that worker, never more than the credit (docs/dispatch-protocol.md).
Each stream is a `WorkerSession` of the `Dispatcher`; when the stream ends — the worker
closed it, crashed, or its connection dropped — its leases are returned at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.grpc_options import server_options

if TYPE_CHECKING:
    from eventgw.orchestrator.dispatcher import Dispatcher
    from eventgw.orchestrator.sessions import WorkerSession

logger = logging.getLogger(__name__)

__all__ = ["GRPC_OPTIONS", "SERVICE_NAME", "OrchestratorServicer", "add_to_server"]

SERVICE_NAME: Final[str] = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name

GRPC_OPTIONS: Final = server_options(
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # A worker that vanished without closing its connection (host lost, cable cut) is
    # noticed by the server's own pings within ~20 s, and its leases are returned then,
    # not at expiry.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)


class OrchestratorServicer:
    """Serves ``Work`` streams and ``Stats``; see the module docstring."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._d = dispatcher

    async def Work(
        self, requests: object, context: grpc.aio.ServicerContext[pb.WorkRequest, bytes]
    ) -> None:
        """Run one worker's stream until either side ends it."""
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if not isinstance(first, pb.WorkRequest) or not first.worker_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "worker_id: the first message must name it"
            )
        d = self._d
        session = d.open_session(first.worker_id)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._write(session, context))
                self._apply(session, first)
                while True:
                    request = await context.read()
                    if request is grpc.aio.EOF:
                        break
                    self._apply(session, request)
                session.close()  # the writer sends what is left, then returns
        finally:
            d.close_session(session)

    def _apply(self, session: WorkerSession, request: pb.WorkRequest) -> None:
        d = self._d
        if request.results or request.acked:
            session.results += len(request.results) + len(request.acked)
            d.apply_results(request.results, session, request.acked)
        if request.revoke:
            d.revoke_credit(session, request.revoke)
        if request.credit:
            d.grant(session, request.credit)

    @staticmethod
    async def _write(
        session: WorkerSession, context: grpc.aio.ServicerContext[pb.WorkRequest, bytes]
    ) -> None:
        while True:
            messages = await session.wait_outgoing()
            if not messages:
                return
            for message in messages:
                await context.write(message)

    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext[pb.StatsRequest, bytes]
    ) -> pb.StatsResponse:
        """Per-class buffer and outcome statistics."""
        return self._d.stats()


def add_to_server(servicer: OrchestratorServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer``; ``Work`` answers bytes (already serialized ``TaskBatch``)."""
    handlers = {
        "Work": grpc.stream_stream_rpc_method_handler(
            servicer.Work,
            request_deserializer=pb.WorkRequest.FromString,
            response_serializer=None,
        ),
        "Stats": grpc.unary_unary_rpc_method_handler(
            servicer.Stats,
            request_deserializer=pb.StatsRequest.FromString,
            response_serializer=pb.StatsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
