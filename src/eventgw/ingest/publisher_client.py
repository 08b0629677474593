"""gRPC client of the prep publisher, used by ingest to publish batches."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.core.errors import InvalidEvent, RetriableError

if TYPE_CHECKING:
    from collections.abc import Sequence

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 10_000),
    # With a dns:/// target naming several publisher pods, spread calls over all of them.
    ("grpc.lb_policy_name", "round_robin"),
]


class PublisherUnavailable(RetriableError):
    """The publisher did not answer in time or is down; nothing was acknowledged."""


class PublisherClient:
    """One channel to the prep publisher; ``publish`` is one unary call per batch.

    Every call has a deadline of ``timeout_s``. gRPC errors are translated here:
    INVALID_ARGUMENT → InvalidEvent, everything else → PublisherUnavailable.
    """

    def __init__(self, target: str, timeout_s: float) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.PrepPublisherStub | None = None

    async def open(self) -> None:
        """Create the channel (connection is lazy)."""
        self._channel = grpc.aio.insecure_channel(self._target, options=GRPC_OPTIONS)
        self._stub = pb_grpc.PrepPublisherStub(self._channel)  # type: ignore[no-untyped-call]  # generated gRPC stub is untyped

    async def close(self) -> None:
        """Close the channel, cancelling calls still running."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def publish(self, events: Sequence[pb.EventData]) -> Sequence[pb.PublishResult]:
        """Publish a batch; returns the publisher's per-event results (same order)."""
        if self._stub is None:
            raise RuntimeError("PublisherClient is not open")
        try:
            async with asyncio.timeout(self._timeout_s):
                response: pb.PublishResponse = await self._stub.Publish(
                    pb.PublishRequest(events=events)
                )
        except TimeoutError as exc:
            raise PublisherUnavailable(f"publisher {self._target} timed out") from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                field, _, message = (exc.details() or "").partition(": ")
                raise InvalidEvent(field or "events", message or "invalid") from exc
            raise PublisherUnavailable(
                f"publisher {self._target}: {exc.code().name} {exc.details()}"
            ) from exc
        results: Sequence[pb.PublishResult] = response.results
        return results
