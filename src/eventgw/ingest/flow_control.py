"""Ingest's side of flow control: read every flow-control partition, feed the SLO service."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from eventgw.core.envelope import Priority
from eventgw.ingest.slo_service import FlowSignal

if TYPE_CHECKING:
    import asyncio

    from eventgw.ingest.slo_service import SloService
    from eventgw.kafka.consumer import PartitionReader

logger = logging.getLogger(__name__)


def decode(value: bytes) -> FlowSignal:
    """Parse one flow-control record value; raises ValueError when it is not a signal."""
    doc = json.loads(value)
    return FlowSignal(
        priority=Priority.parse(str(doc["class"])),
        action=doc["action"],
        orchestrator_index=int(doc["orchestrator_index"]),
        queue_depth=int(doc["queue_depth"]),
        oldest_ready_age_s=float(doc["oldest_ready_age_s"]),
        paused_lanes=frozenset(doc.get("paused_lanes", ())),
        emitted_at_ms=int(doc["emitted_at_ms"]),
    )


class FlowControlListener:
    """Tails the flow-control topic and applies each signal to the SLO service.

    Every ingest instance reads every partition from its end (no consumer group): each one
    keeps its own admission state, and old signals describe a past that no longer matters.
    """

    def __init__(self, reader: PartitionReader, slo: SloService) -> None:
        self._reader = reader
        self._slo = slo
        self.applied = 0
        self.invalid = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Apply signals until ``stop``."""
        while not stop.is_set():
            for record in await self._reader.poll_batch(500, 0.2):
                try:
                    signal = decode(record.value)
                except (ValueError, KeyError, TypeError) as exc:
                    self.invalid += 1
                    logger.warning("flow_control.invalid offset=%d error=%s", record.offset, exc)
                    continue
                outcome = self._slo.on_signal(signal)
                self.applied += 1
                if outcome == "decreased":
                    logger.info(
                        "slo.capacity_decreased class=%s capacity=%.0f from_orchestrator=%d",
                        signal.priority.name,
                        self._slo.capacity(signal.priority),
                        signal.orchestrator_index,
                    )
