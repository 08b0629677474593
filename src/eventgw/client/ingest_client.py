"""`EventIngestPublisher`: batches to ``eventgw.v1.IngestService`` with fallback capture.

With ``use_fallbacks=True``, a batch the service could not take (down, timed out, or
answered UNAVAILABLE because it could not make the events durable) is captured by the
client itself: first to the failed-writes topic, then to the backup store. The
failed-writes processor later classifies those events and republishes them to their lane.
Event ids are assigned here, before the first attempt, so a retried or captured event
keeps its id and duplicates can be recognised downstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.backup.factory import open_backup_store
from eventgw.backup.store import BackupFull, BackupUnavailable
from eventgw.config.settings import LaneTuning
from eventgw.core.clock import Clock, SystemClock
from eventgw.core.envelope import H_LAST_ERROR, event_headers, new_event_id
from eventgw.core.errors import InvalidEvent, NotDurable, PermissionDenied, Unauthenticated
from eventgw.core.retry import Backoff
from eventgw.grpc_options import client_channel_options
from eventgw.kafka.client_config import producer_config
from eventgw.kafka.producer import BatchProducer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.backup.store import BackupStore
    from eventgw.client.tls import ClientTls
    from eventgw.config.settings import BackupSettings, KafkaClusterSettings

logger = logging.getLogger(__name__)

Status = Literal["PUBLISHED", "FAILED_WRITES", "BACKED_UP", "REJECTED"]
_STATUS: dict[int, Status] = {
    pb.PUBLISHED: "PUBLISHED",
    pb.FAILED_WRITES: "FAILED_WRITES",
    pb.BACKED_UP: "BACKED_UP",
    pb.REJECTED: "REJECTED",
}
_RESPONSE_METADATA = "eventgw-response-bin"  # eventgw.ingest.grpc_api.RESPONSE_METADATA
_RETRY_AFTER_METADATA = "retry-after-ms"  # eventgw.ingest.grpc_api.RETRY_AFTER_METADATA

CHANNEL_OPTIONS = [
    # A deferral's answer travels in trailing metadata (one result per event).
    ("grpc.max_metadata_size", 16 << 20),
    ("grpc.absolute_max_metadata_size", 16 << 20),
]
"""Options of the client's channel to ingest."""


def _metadata(exc: grpc.aio.AioRpcError, key: str) -> str | bytes | None:
    for k, v in exc.trailing_metadata() or ():
        if k == key:
            return v  # type: ignore[no-any-return]  # grpc types metadata values loosely
    return None


def _retry_after_ms(exc: grpc.aio.AioRpcError) -> int | None:
    """The door's hint, or None when the refusal is not the door's (e.g. a request too large)."""
    value = _metadata(exc, _RETRY_AFTER_METADATA)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    # ASCII digits only ("²".isdigit() is True, and int() refuses it); a number too long to
    # be a hint is clamped like a large one, without converting thousands of digits.
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return min(int(value), 60_000) if len(value) <= 9 else 60_000


def _answered(exc: grpc.aio.AioRpcError) -> pb.IngestResponse | None:
    """The per-event answer of a partial deferral, if the refusal carries one."""
    value = _metadata(exc, _RESPONSE_METADATA)
    if not isinstance(value, bytes):
        return None
    try:
        parsed: pb.IngestResponse = pb.IngestResponse.FromString(value)
    except Exception:  # noqa: BLE001  (a malformed answer: treat every event as pending)
        return None
    return parsed


_FALLBACK_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """An event to send. ``payload`` is any JSON-serialisable value, or JSON text as bytes."""

    company_id: str
    source_name: str
    payload: Any = None
    statistic_key: str = ""
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClientResult:
    """Where one event is durable; ``captured_by_client`` when the fallback took it."""

    event_id: str
    status: Status
    topic: str = ""
    captured_by_client: bool = False
    reason: str = ""


@dataclass(frozen=True)
class FallbackSettings:
    """Where the client captures what the service could not take."""

    kafka: KafkaClusterSettings
    failed_writes_topic: str
    backup: BackupSettings
    delivery_timeout_ms: int = 10_000


class EventIngestPublisher:
    """Publishes batches of events to eventgw; durable-or-error for every event.

    Lifecycle: ``await start()`` → ``await publish(events)`` any number of times →
    ``await close()``. ``publish`` returns one ClientResult per event (same order) once
    every event is durable somewhere. It raises InvalidEvent when the service refuses the
    input (never captured: bad input must not be replayed), Unauthenticated or
    PermissionDenied when the API key is missing, wrong, or does not cover an event (never
    captured either), and NotDurable when neither the service nor (with fallbacks) the
    client's own stores took the events — the caller should retry later.

    With ``tls`` the channel is secure: ingest's certificate is verified against
    ``tls.ca_file`` (or the system's roots) and the target's host name, and with a client
    certificate the client proves itself (mutual TLS).
    """

    def __init__(
        self,
        target: str,
        *,
        use_fallbacks: bool = False,
        fallback: FallbackSettings | None = None,
        timeout_s: float = 30.0,
        api_key: str | None = None,
        clock: Clock | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        if use_fallbacks and fallback is None:
            raise ValueError("use_fallbacks=True needs fallback settings (kafka, topic, backup)")
        self._target = target
        self._use_fallbacks = use_fallbacks
        self._fallback = fallback
        self._timeout_s = timeout_s
        self._metadata = (("x-api-key", api_key),) if api_key else None
        self._credentials = (
            grpc.ssl_channel_credentials(
                root_certificates=tls.ca_pem,
                private_key=tls.key_pem,
                certificate_chain=tls.cert_pem,
            )
            if tls is not None
            else None
        )
        self._clock = clock or SystemClock()
        self._backoff = Backoff(0.05, 2.0)
        self._rng = random.Random()  # noqa: S311  # jitter, not cryptography
        self.deferrals = 0  # times the service deferred some of a batch (then retried)
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.IngestServiceStub | None = None
        self._producer: BatchProducer | None = None
        self._backup: BackupStore | None = None
        self.captured = 0

    async def start(self) -> None:
        """Open the channel and, with fallbacks, the failed-writes producer and backup store."""
        # Bounded reconnect backoff: calls succeed again within about a second of a restarted
        # ingest (gRPC's default backoff left them UNAVAILABLE for ~15 s).
        options = client_channel_options(*CHANNEL_OPTIONS)
        self._channel = (
            grpc.aio.secure_channel(self._target, self._credentials, options=options)
            if self._credentials is not None
            else grpc.aio.insecure_channel(self._target, options=options)
        )
        self._stub = pb_grpc.IngestServiceStub(self._channel)  # type: ignore[no-untyped-call]  # generated gRPC stub is untyped
        if self._use_fallbacks and self._fallback is not None:
            fb = self._fallback
            tuning = LaneTuning(
                linger_ms=5, batch_size=256 << 10, delivery_timeout_ms=fb.delivery_timeout_ms
            )
            self._producer = BatchProducer(
                "client-failed-writes",
                producer_config(fb.kafka, tuning, "eventgw-client-failed-writes"),
            )
            self._producer.start()
            self._backup = await open_backup_store(fb.backup)

    async def close(self) -> None:
        """Close the channel, flush the fallback producer, close the store."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._producer is not None:
            await self._producer.close(10)
            self._producer = None
        if self._backup is not None:
            await self._backup.close()
            self._backup = None

    async def publish(self, events: Sequence[ClientEvent]) -> list[ClientResult]:
        """Send ``events`` as one batch; see the class docstring for the guarantee.

        Events the service defers (it is saturated for their class: RESOURCE_EXHAUSTED with
        a ``retry-after-ms`` hint) are sent again after the hint, jittered, until the
        timeout; what is still not taken then goes to the fallbacks (or NotDurable).
        """
        if self._stub is None:
            raise RuntimeError("EventIngestPublisher is not started")
        ids = [e.event_id or new_event_id() for e in events]
        request = pb.IngestRequest(
            events=[
                pb.IngestEvent(
                    company_id=e.company_id,
                    source_name=e.source_name,
                    statistic_key=e.statistic_key,
                    payload_json=_payload_bytes(e.payload),
                    event_id=event_id,
                )
                for e, event_id in zip(events, ids, strict=True)
            ]
        )
        results: dict[str, ClientResult] = {}
        pending = request
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        attempt = 0
        while True:
            left_s = deadline - loop.time()
            try:
                if left_s <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left_s):
                    response = await self._stub.Ingest(pending, metadata=self._metadata)
            except TimeoutError as exc:
                return self._in_order(
                    ids,
                    results,
                    await self._fallback_or_raise(
                        pending, f"not taken within {self._timeout_s}s", exc
                    ),
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    field, _, message = (exc.details() or "").partition(": ")
                    raise InvalidEvent(field or "events", message or "invalid") from exc
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise Unauthenticated(exc.details() or "missing or invalid API key") from exc
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise permission_denied(exc.details() or "") from exc
                hint_ms = _retry_after_ms(exc)
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and hint_ms is not None:
                    # The door deferred some or all events: settle the others, retry these.
                    answered = _answered(exc)
                    if answered is not None:
                        self._settle(answered, results)
                        pending = pb.IngestRequest(
                            events=[e for e in pending.events if e.event_id not in results]
                        )
                    self.deferrals += 1
                    delay_s = max(hint_ms / 1000, self._backoff.delay_s(attempt))
                    delay_s = self._rng.uniform(delay_s, 1.5 * delay_s)  # jitter above the hint
                    attempt += 1
                    if loop.time() + delay_s < deadline:
                        await asyncio.sleep(delay_s)
                        continue
                    return self._in_order(
                        ids,
                        results,
                        await self._fallback_or_raise(
                            pending, f"deferred past the {self._timeout_s}s timeout", exc
                        ),
                    )
                if code not in _FALLBACK_CODES:
                    raise NotDurable(ids[0], f"{code.name}: {exc.details()}") from exc
                return self._in_order(
                    ids,
                    results,
                    await self._fallback_or_raise(pending, f"{code.name}: {exc.details()}", exc),
                )
            self._settle(response, results)
            return self._in_order(ids, results, [])

    @staticmethod
    def _settle(response: pb.IngestResponse, results: dict[str, ClientResult]) -> None:
        """Record the settled events of ``response`` (DEFERRED ones stay pending)."""
        for r in response.results:
            if r.status == pb.DEFERRED:
                continue
            status = _STATUS.get(r.status)
            if status is None:  # not a status this client knows to be durable: never "done"
                raise NotDurable(r.event_id, f"unknown status {r.status}")
            results[r.event_id] = ClientResult(r.event_id, status, r.topic, reason=r.reason)

    @staticmethod
    def _in_order(
        ids: list[str], results: dict[str, ClientResult], captured: list[ClientResult]
    ) -> list[ClientResult]:
        for r in captured:
            results[r.event_id] = r
        return [results[i] for i in ids]

    async def _fallback_or_raise(
        self, request: pb.IngestRequest, reason: str, exc: BaseException
    ) -> list[ClientResult]:
        first_id = request.events[0].event_id if request.events else ""
        if self._producer is None or self._backup is None or self._fallback is None:
            raise NotDurable(first_id, f"ingest service: {reason}") from exc
        logger.warning("client.fallback events=%d reason=%s", len(request.events), reason)
        now_ms = self._clock.wall_ms()
        values: list[bytes] = []
        records = []
        for e in request.events:
            data = pb.EventData(
                event_id=e.event_id,
                company_id=e.company_id,
                source_name=e.source_name,
                statistic_key=e.statistic_key,
                payload=e.payload_json or b"null",
                ingested_at_ms=now_ms,
            )
            value = data.SerializeToString()
            values.append(value)
            headers = event_headers(data)
            headers.append((H_LAST_ERROR, reason[:500].encode()))
            records.append((e.company_id.encode(), value, headers))
        topic = self._fallback.failed_writes_topic
        deliveries = await self._producer.send(topic, records)
        results: list[ClientResult | None] = [None] * len(values)
        missing = []
        for i, d in enumerate(deliveries):
            if d.ok:
                results[i] = ClientResult(
                    request.events[i].event_id, "FAILED_WRITES", topic, True, reason
                )
            else:
                missing.append(i)
        if missing:
            try:
                key = await self._backup.put([values[i] for i in missing])
            except (BackupUnavailable, BackupFull, OSError) as store_exc:
                raise NotDurable(
                    request.events[missing[0]].event_id,
                    f"service ({reason}), failed-writes and backup ({store_exc}) all failed",
                ) from store_exc
            for i in missing:
                results[i] = ClientResult(
                    request.events[i].event_id, "BACKED_UP", key, True, reason
                )
        self.captured += len(values)
        return results  # type: ignore[return-value]  # every slot is filled above


def permission_denied(details: str) -> PermissionDenied:
    """The `PermissionDenied` of a refusal's ``"events[<i>].<field>: <message>"``."""
    field, _, message = details.partition(": ")
    index_text = field.removeprefix("events[").partition("]")[0]
    digits = index_text.isascii() and index_text.isdigit() and len(index_text) <= 9
    index = int(index_text) if digits else 0
    return PermissionDenied(field or "events", message or "not granted", index=index)


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    return json.dumps(payload, separators=(",", ":")).encode()
