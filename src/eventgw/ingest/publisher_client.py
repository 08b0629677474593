"""gRPC client of the prep publisher, used by ingest to publish batches."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.errors import InvalidEvent, RetriableError
from eventgw.grpc_options import client_channel_options

if TYPE_CHECKING:
    from grpc.aio import UnaryUnaryMultiCallable

    from eventgw.grpc_auth import Metadata

_PUBLISH = pb.DESCRIPTOR.services_by_name["PrepPublisher"].methods_by_name["Publish"]
PUBLISH_METHOD = f"/{_PUBLISH.containing_service.full_name}/{_PUBLISH.name}"

GRPC_OPTIONS = client_channel_options(
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # With a dns:/// target naming several publisher pods, spread calls over all of them.
    ("grpc.lb_policy_name", "round_robin"),
)
"""Reconnects within about a second of a restarted publisher (see `eventgw.grpc_options`)."""


class PublisherUnavailable(RetriableError):
    """The publisher did not answer in time or is down; nothing was acknowledged."""


class PublisherClient:
    """One channel to the prep publisher; ``publish`` is one unary call per batch.

    Requests go out as the bytes the pipeline wrote (`eventgw.ingest.wire`), so the call
    has no request serializer. Each call carries ``metadata``, the publisher's token
    (`eventgw.grpc_auth.bearer_metadata`). Every call has a deadline of ``timeout_s``. gRPC
    errors are translated here: INVALID_ARGUMENT → InvalidEvent, everything else →
    PublisherUnavailable.
    """

    def __init__(self, target: str, timeout_s: float, metadata: Metadata) -> None:
        self._target = target
        self._metadata = metadata
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._call: UnaryUnaryMultiCallable[bytes, pb.PublishResponse] | None = None

    async def open(self) -> None:
        """Create the channel (connection is lazy)."""
        self._channel = grpc.aio.insecure_channel(self._target, options=GRPC_OPTIONS)
        self._call = self._channel.unary_unary(
            PUBLISH_METHOD,
            request_serializer=None,  # already serialized
            response_deserializer=pb.PublishResponse.FromString,
        )

    async def close(self) -> None:
        """Close the channel, cancelling calls still running."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._call = None

    async def publish(self, request: bytes) -> pb.PublishResponse:
        """Publish a batch given as a serialized ``PublishRequest``; returns the response."""
        if self._call is None:
            raise RuntimeError("PublisherClient is not open")
        try:
            async with asyncio.timeout(self._timeout_s):
                response: pb.PublishResponse = await self._call(request, metadata=self._metadata)
        except TimeoutError as exc:
            raise PublisherUnavailable(f"publisher {self._target} timed out") from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                field, _, message = (exc.details() or "").partition(": ")
                raise InvalidEvent(field or "events", message or "invalid") from exc
            raise PublisherUnavailable(
                f"publisher {self._target}: {exc.code().name} {exc.details()}"
            ) from exc
        return response
