"""Steady load from the client library, with a record of what was acknowledged how.

``ClientLoad`` runs ``concurrency`` senders, each publishing batches of ``batch`` events
through one ``EventIngestPublisher`` (``use_fallbacks=True``: what ingest cannot take is
captured by the client into the failed-writes topic, else the backup store), paced to
``rate_eps`` events/s in total. It stops by itself after ``duration_s`` or ``max_events``.

An event is *acknowledged* when ``publish`` returned a durable status for it:
``PUBLISHED``, ``FAILED_WRITES`` or ``BACKED_UP`` (from the service or captured by the
client). ``NotDurable`` means nothing took the batch: its events are *refused* — not
acknowledged, so not owed — as a real sender would retry them later.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventgw.client.ingest_client import ClientEvent, EventIngestPublisher, FallbackSettings
from eventgw.config.settings import BackupSettings, KafkaClusterSettings
from eventgw.core.errors import NotDurable

if TYPE_CHECKING:
    from tests.faults.stack import FaultStack

DURABLE = frozenset({"PUBLISHED", "FAILED_WRITES", "BACKED_UP"})
SOURCES = ("p30", "p20", "p10")  # one per class (tests/faults/stack.py CLASS_RULES)


@dataclass(frozen=True)
class LoadShape:
    """How much a scenario sends: bounded in time and in count."""

    rate_eps: float = 200.0
    duration_s: float = 8.0
    batch: int = 10
    concurrency: int = 4
    payload_bytes: int = 64
    client_timeout_s: float = 30.0

    @property
    def max_events(self) -> int:
        """The count bound: what the rate allows in the duration."""
        return int(self.rate_eps * self.duration_s)


@dataclass
class ClientLoad:
    """Publishes ``shape`` to ``stack`` through the client library; counts every answer."""

    stack: FaultStack
    shape: LoadShape
    sent: int = 0
    acked: dict[str, str] = field(default_factory=dict)
    """event_id → status; ``client:`` prefixed when the client library captured it."""
    refused: set[str] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def fallback_settings(self) -> FallbackSettings:
        """The client library's capture: the stack's failed-writes topic and backup store."""
        stack = self.stack
        backup = {"spool_dir": stack.spool_dir, **stack.options.backup}
        return FallbackSettings(
            kafka=KafkaClusterSettings(bootstrap_servers=stack.failed_writes_bootstrap),
            failed_writes_topic=stack.topics.failed_writes,
            backup=BackupSettings.model_validate(backup),
            delivery_timeout_ms=4000,
        )

    def stop(self) -> None:
        """End the load early (senders finish the batch they are sending)."""
        self._stop.set()

    async def run(self) -> None:
        """Send until the duration or the count is reached (or ``stop()``); then return."""
        client = EventIngestPublisher(
            self.stack.ingest_grpc,
            use_fallbacks=True,
            fallback=self.fallback_settings(),
            timeout_s=self.shape.client_timeout_s,
        )
        await client.start()
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.shape.duration_s, self._stop.set)
        try:
            # Senders finish the batch they are sending when the time is up, so every event
            # sent has its answer; one publish is bounded by the client's timeout and then
            # its capture (4 s delivery timeout, then the backup store).
            async with (
                asyncio.timeout(self.shape.duration_s + 2 * self.shape.client_timeout_s + 30),
                asyncio.TaskGroup() as tg,
            ):
                for w in range(self.shape.concurrency):
                    tg.create_task(self._sender(client, w))
        finally:
            timer.cancel()
            self._stop.set()
            await client.close()

    async def _sender(self, client: EventIngestPublisher, w: int) -> None:
        shape = self.shape
        loop = asyncio.get_running_loop()
        interval_s = shape.batch * shape.concurrency / shape.rate_eps
        next_at = loop.time() + interval_s * w / shape.concurrency  # spread the senders
        payload = {"pad": "x" * max(shape.payload_bytes - 10, 0)}
        n = 0
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self._stop.is_set() or self.sent + shape.batch > shape.max_events:
                return
            next_at = max(next_at + interval_s, loop.time())  # no catch-up burst after a stall
            events = [
                ClientEvent(
                    f"company-{(n + i) % 20}",
                    SOURCES[(n + i) % 3],
                    payload,
                    event_id=f"{self._prefix}-{w}-{n}-{i}",
                )
                for i in range(shape.batch)
            ]
            n += 1
            self.sent += len(events)
            try:
                results = await client.publish(events)
            except NotDurable:
                self.refused.update(e.event_id for e in events if e.event_id)
            else:
                for r in results:
                    if r.status in DURABLE:
                        self.acked[r.event_id] = (
                            f"client:{r.status}" if r.captured_by_client else r.status
                        )
                    else:
                        self.refused.add(r.event_id)
            async with self._progress:
                self._progress.notify_all()

    async def wait_acked(self, count: int, timeout_s: float = 60) -> None:
        """Wait until at least ``count`` events were acknowledged (bounded)."""
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(lambda: len(self.acked) >= count)

    async def wait_statuses(self, status: str, count: int, timeout_s: float = 60) -> None:
        """Wait until ``count`` events were acknowledged with ``status`` (any capturer)."""

        def enough() -> bool:
            return self.by_status()[status] >= count

        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(enough)

    async def wait_refused(self, count: int, timeout_s: float = 60) -> None:
        """Wait until at least ``count`` events were refused (NotDurable)."""
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(lambda: len(self.refused) >= count)

    def by_status(self) -> Counter[str]:
        """Acknowledged events per status, whoever captured them."""
        return Counter(s.removeprefix("client:") for s in self.acked.values())

    def by_capturer(self) -> Counter[str]:
        """Acknowledged events per status as answered (``client:`` = the library's capture)."""
        return Counter(self.acked.values())
