"""The operator's gRPC call to an orchestrator: ``Stats`` (``eventgw status``).

Synchronous: the CLI has no event loop here. ``grpc`` errors are translated into
`OrchestratorUnavailable` once, at this edge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.errors import OrchestratorUnavailable
from eventgw.grpc_options import client_channel_options

if TYPE_CHECKING:
    from eventgw.grpc_auth import Metadata

__all__ = ["fetch_stats"]


def fetch_stats(target: str, timeout_s: float, metadata: Metadata) -> pb.StatsResponse:
    """Ask the orchestrator at ``target`` (gRPC ``host:port``) for its ``Stats``.

    ``metadata`` presents the orchestrator's internal token (`eventgw.grpc_auth`).

    Blocks for at most ``timeout_s`` (connecting included); an address nothing listens on
    fails at once.

    Raises:
        OrchestratorUnavailable: no answer in time, or an error answer.
    """
    with grpc.insecure_channel(target, options=client_channel_options()) as channel:
        stats = channel.unary_unary(
            "/eventgw.v1.Orchestrator/Stats",
            request_serializer=pb.StatsRequest.SerializeToString,
            response_deserializer=pb.StatsResponse.FromString,
        )
        try:
            response: pb.StatsResponse = stats(
                pb.StatsRequest(), timeout=timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise OrchestratorUnavailable(
                target, code.name if code is not None else "UNKNOWN", detail or ""
            ) from exc
    return response
