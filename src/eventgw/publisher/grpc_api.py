"""gRPC face of the prep publisher: ``eventgw.v1.PrepPublisher/Publish``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.core.errors import InvalidEvent
from eventgw.grpc_options import server_options

if TYPE_CHECKING:
    from eventgw.publisher.prep import PrepPublisher

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PrepPublisher"].full_name

GRPC_OPTIONS = server_options(
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
)


class PublisherServicer(pb_grpc.PrepPublisherServicer):
    """Maps Publish calls onto `PrepPublisher.publish_response`.

    Errors: a malformed event → INVALID_ARGUMENT naming the field, nothing written; too many
    events → INVALID_ARGUMENT; anything unexpected → INTERNAL (logged), nothing acknowledged.
    """

    def __init__(self, publisher: PrepPublisher, max_events: int) -> None:
        self._publisher = publisher
        self._max_events = max_events

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishResponse:
        """Publish a batch; see `PrepPublisher.publish_response`."""
        if len(request.events) > self._max_events:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"events: at most {self._max_events} per request, got {len(request.events)}",
            )
        try:
            response = await self._publisher.publish_response(
                request.events, accept_published_batch=request.accept_published_batch
            )
        except InvalidEvent as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return response
