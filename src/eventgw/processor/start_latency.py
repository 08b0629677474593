"""How long events waited before a handler started on them: ingest → handler start.

The worker is the one place that sees a handler start, so it measures the wait every
event had, queueing in Kafka, in the orchestrator's buffer and in this worker's prefetch
included: ``eventgw_processor_start_latency_seconds{class, tier}``, with the labels of
`eventgw.metrics.slo`. The other end of an event's life, its ACK against the deadline, is
counted by the orchestrator (``eventgw_orchestrator_processed_total``).

Per task this is one bisection and two additions on plain ints (`BulkHistogram`), no
prometheus_client call; the registry reads the buckets at scrape time. Both times are wall
clocks (ingest's and this worker's): skew between hosts shifts the value; a negative one
is counted as 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventgw.metrics.slo import TIERS, class_label

if TYPE_CHECKING:
    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
    from eventgw.metrics.backend import BulkHistogram, Metrics

__all__ = ["StartLatency"]

_WIRE_CLASSES = (30, 20, 10)
_UNKNOWN_CLASS = 10  # as the orchestrator serves an unknown priority: the least urgent class


class StartLatency:
    """Records ingest → handler start per class and tier; see the module docstring."""

    def __init__(self, metrics: Metrics) -> None:
        family = metrics.bulk_histogram(
            "eventgw_processor_start_latency_seconds",
            "ingest to handler start, by class and tier",
            ["class", "tier"],
        )
        # Keyed by 2 x wire class + offloaded: an int per run, no tuple (unique for any
        # wire value, so an unknown class never lands in a known class's series).
        self._series: dict[int, BulkHistogram] = {
            2 * wire + offloaded: family.labels(class_label(wire), TIERS[offloaded])
            for wire in _WIRE_CLASSES
            for offloaded in (False, True)
        }

    def record(self, event: pb.EventData, now_ms: int) -> None:
        """Count ``event``, whose handler starts now (``now_ms``, wall clock)."""
        offloaded = event.offloaded
        series = self._series.get(2 * event.priority + offloaded)
        if series is None:
            series = self._series[2 * _UNKNOWN_CLASS + offloaded]
        waited_ms = now_ms - event.ingested_at_ms
        series.observe(waited_ms / 1000 if waited_ms > 0 else 0.0)
