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
from eventgw.core.errors import InvalidEvent, NotDurable
from eventgw.grpc_options import client_channel_options
from eventgw.kafka.client_config import producer_config
from eventgw.kafka.producer import BatchProducer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.backup.store import BackupStore
    from eventgw.config.settings import BackupSettings, KafkaClusterSettings

logger = logging.getLogger(__name__)

Status = Literal["PUBLISHED", "FAILED_WRITES", "BACKED_UP", "REJECTED"]
_STATUS: dict[int, Status] = {
    pb.PUBLISHED: "PUBLISHED",
    pb.FAILED_WRITES: "FAILED_WRITES",
    pb.BACKED_UP: "BACKED_UP",
    pb.REJECTED: "REJECTED",
}
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
    input (never captured: bad input must not be replayed), and NotDurable when neither
    the service nor (with fallbacks) the client's own stores took the events — the caller
    should retry later.
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
    ) -> None:
        if use_fallbacks and fallback is None:
            raise ValueError("use_fallbacks=True needs fallback settings (kafka, topic, backup)")
        self._target = target
        self._use_fallbacks = use_fallbacks
        self._fallback = fallback
        self._timeout_s = timeout_s
        self._metadata = (("x-api-key", api_key),) if api_key else None
        self._clock = clock or SystemClock()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.IngestServiceStub | None = None
        self._producer: BatchProducer | None = None
        self._backup: BackupStore | None = None
        self.captured = 0

    async def start(self) -> None:
        """Open the channel and, with fallbacks, the failed-writes producer and backup store."""
        # Bounded reconnect backoff: calls succeed again within about a second of a restarted
        # ingest (gRPC's default backoff left them UNAVAILABLE for ~15 s).
        self._channel = grpc.aio.insecure_channel(self._target, options=client_channel_options())
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
        """Send ``events`` as one batch; see the class docstring for the guarantee."""
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
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._stub.Ingest(request, metadata=self._metadata)
        except TimeoutError as exc:
            return await self._fallback_or_raise(
                request, f"timed out after {self._timeout_s}s", exc
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                field, _, message = (exc.details() or "").partition(": ")
                raise InvalidEvent(field or "events", message or "invalid") from exc
            if exc.code() not in _FALLBACK_CODES:
                raise NotDurable(ids[0], f"{exc.code().name}: {exc.details()}") from exc
            return await self._fallback_or_raise(
                request, f"{exc.code().name}: {exc.details()}", exc
            )
        unknown = [r for r in response.results if r.status not in _STATUS]
        if unknown:  # not a status this client knows to be durable: never report it done
            raise NotDurable(unknown[0].event_id, f"unknown status {unknown[0].status}")
        return [
            ClientResult(r.event_id, _STATUS[r.status], r.topic, reason=r.reason)
            for r in response.results
        ]

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


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    return json.dumps(payload, separators=(",", ":")).encode()
