"""Embed the prep publisher in your own process (no gRPC hop).

    p = EmbeddedPrepPublisher(settings, priority=Priority.P10)
    await p.init()
    results = await p.publish_with_result(events)   # one PublishResult per EventData
    await p.stop()

The dynamic config file (``publisher.dynamic_config_path``) is read once at ``init``;
hot reload needs the watcher that `PublisherService` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventgw.config.settings import EventGwSettings
from eventgw.core.envelope import Priority
from eventgw.metrics.backend import Metrics
from eventgw.publisher.service import PublisherParts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
    from eventgw.publisher.prep import PrepPublisher


class EmbeddedPrepPublisher:
    """Owns producers and the backup store for in-process publishing.

    Args:
        settings: static settings (defaults: local Kafka on 127.0.0.1:9092, local spool).
        priority: class given to events that arrive without one.
    """

    def __init__(
        self, settings: EventGwSettings | None = None, priority: Priority = Priority.P20
    ) -> None:
        self._parts = PublisherParts(settings or EventGwSettings(), Metrics())
        self._priority = priority
        self._publisher: PrepPublisher | None = None

    async def init(self) -> None:
        """Create the producers and open the backup store."""
        self._publisher = await self._parts.open(self._priority)

    async def publish_with_result(self, events: Sequence[pb.EventData]) -> list[pb.PublishResult]:
        """See `PrepPublisher.publish_with_result`."""
        if self._publisher is None:
            raise RuntimeError("call init() first")
        return await self._publisher.publish_with_result(events)

    async def stop(self) -> None:
        """Flush every producer and close the store."""
        self._publisher = None
        await self._parts.close()
