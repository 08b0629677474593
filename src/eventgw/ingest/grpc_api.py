"""gRPC face of ingest: ``eventgw.v1.IngestService/Ingest``, same rules as HTTP."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import grpc
from google.protobuf.message import DecodeError

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.errors import EventGwError, InvalidEvent, PermissionDenied
from eventgw.ingest.grants import KeyRing
from eventgw.ingest.validation import validate_grpc_events
from eventgw.ingest.wire import ingest_response

if TYPE_CHECKING:
    from eventgw.config.settings import IngestSettings
    from eventgw.ingest.grants import Grant
    from eventgw.ingest.pipeline import IngestPipeline
    from eventgw.ingest.tls import ServerTls

logger = logging.getLogger(__name__)


SERVICE_NAME: Final[str] = pb.DESCRIPTOR.services_by_name["IngestService"].full_name

RESPONSE_METADATA: Final = "eventgw-response-bin"
"""Trailing metadata of a RESOURCE_EXHAUSTED answer with DEFERRED events: the serialized
``IngestResponse`` (the other events are settled as their results say)."""

RETRY_AFTER_METADATA: Final = "retry-after-ms"
"""Trailing metadata of every door refusal: when to send the deferred events again (ms)."""


class IngestServicer:
    """Validates, then runs the shared pipeline.

    Status codes: OK only when every event is durable (or rejected by gating, see each
    result's status); INVALID_ARGUMENT naming the field, nothing written; UNAUTHENTICATED;
    PERMISSION_DENIED naming the field of the first event outside the key's grant, nothing
    written;
    UNAVAILABLE when any event is not durable (retry the call; event ids are kept);
    RESOURCE_EXHAUSTED when the door deferred events (`eventgw.ingest.door`): the trailing
    metadata carry ``retry-after-ms`` and, unless the request was refused whole, the
    ``IngestResponse`` in ``eventgw-response-bin`` — send its DEFERRED events again.
    """

    def __init__(
        self, settings: IngestSettings, pipeline: IngestPipeline, keys: KeyRing | None = None
    ) -> None:
        """``keys``: the API keys (shared with HTTP); by default those of ``settings``."""
        self._s = settings
        self._pipeline = pipeline
        self._keys = keys if keys is not None else KeyRing.from_settings(settings)
        self._door = pipeline.door

    async def Ingest(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """See the class docstring. ``raw`` is the undecoded request, and the answer is the
        serialized ``IngestResponse`` (see `add_to_server`)."""
        door = self._door
        if door is None:
            return await self._ingest(raw, context)
        # The request is already read: refusing it whole would free no memory (its bound is
        # the server's maximum_concurrent_rpcs); past the soft bound only its P30 is taken.
        door.enter_read()
        try:
            return await self._ingest(raw, context)
        finally:
            door.leave()

    async def _ingest(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        grant: Grant | None = None
        if self._keys.required:
            metadata = dict(context.invocation_metadata() or ())
            auth = str(metadata.get("authorization", ""))
            given = str(metadata.get("x-api-key", "")) or auth.removeprefix("Bearer ")
            grant = self._keys.grant_of(given.encode())
            if grant is None:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "x-api-key: missing or invalid (x-api-key or authorization: Bearer <key>)",
                )
        try:
            request = pb.IngestRequest.FromString(raw)
        except DecodeError as exc:
            # e.g. a string field that is not UTF-8: the caller's fault, not ours.
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"events: undecodable: {exc}")
        n = len(request.events)
        if n == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "events: must not be empty")
        if n > self._s.max_events_per_request:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"events: at most {self._s.max_events_per_request} per request, got {n}",
            )
        try:
            events = validate_grpc_events(
                request.events, max_payload_bytes=self._s.max_payload_bytes
            )
        except InvalidEvent as exc:
            self._pipeline.count_invalid()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            outcome = await self._pipeline.ingest(events, grant)
        except PermissionDenied as exc:
            if grant is not None:
                self._keys.count_denied(grant, exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except InvalidEvent as exc:
            # The publisher refused what ingest accepted (a version skew): not a retry case,
            # and a client must not capture it in its fallbacks (as HTTP answers 400).
            logger.error("ingest.publisher_refused field=%s error=%s", exc.field, exc.message)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except EventGwError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not durable, retry: {exc}")
        if not outcome.all_durable_or_rejected:
            failed = [r[0] for r in outcome.results if r[4] == pb.FAILED]  # event_id, status
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"events: {len(failed)} not durable, retry (first {failed[0] if failed else ''})",
            )
        answer = ingest_response(outcome.request_id, outcome.results, outcome.retry_after_ms)
        if outcome.deferred:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"events: {outcome.deferred} deferred (ingest saturated), send them again "
                "after retry-after-ms; the others are settled (eventgw-response-bin)",
                trailing_metadata=(
                    (RETRY_AFTER_METADATA, str(outcome.retry_after_ms)),
                    (RESPONSE_METADATA, answer),
                ),
            )
        return answer


def add_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` with bytes in and out: decoding errors become INVALID_ARGUMENT
    inside the servicer instead of grpcio's opaque UNKNOWN, and the answer is already
    serialized (`eventgw.ingest.wire.ingest_response`)."""
    handlers = {
        "Ingest": grpc.unary_unary_rpc_method_handler(
            servicer.Ingest, request_deserializer=None, response_serializer=None
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """TLS credentials of the gRPC port: ingest's certificate; with a client CA, clients must
    present a certificate it signed (the same rule as the HTTP port)."""
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.cert_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )
