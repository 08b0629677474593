"""Ingest → handler start per class and tier, read back as a scrape would."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.metrics.backend import Metrics
from eventgw.processor.start_latency import StartLatency

NAME = "eventgw_processor_start_latency_seconds"
NOW_MS = 1_700_000_000_000


def series(metrics: Metrics) -> dict[tuple[str, str], tuple[float, float]]:
    """(class, tier) → (count, sum)."""
    out: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name in (f"{NAME}_count", f"{NAME}_sum"):
                row = out.setdefault((s.labels["class"], s.labels["tier"]), [0.0, 0.0])
                row[s.name.endswith("_sum")] = s.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def event(priority: int, waited_ms: int, *, offloaded: bool = False) -> pb.EventData:
    return pb.EventData(
        priority=priority,  # type: ignore[arg-type]  # unknown wire values on purpose
        ingested_at_ms=NOW_MS - waited_ms,
        offloaded=offloaded,
    )


def test_each_start_counts_in_its_class_and_tier() -> None:
    m = Metrics()
    latency = StartLatency(m)
    latency.record(event(30, 1500), NOW_MS)
    latency.record(event(20, 250, offloaded=True), NOW_MS)
    latency.record(event(20, 750, offloaded=True), NOW_MS)
    got = series(m)
    assert got["P30", "normal"] == (1.0, 1.5)
    assert got["P20", "offloaded"] == pytest.approx((2.0, 1.0))
    assert got["P20", "normal"] == (0.0, 0.0)
    assert got["P10", "offloaded"] == (0.0, 0.0)


def test_an_unknown_class_counts_as_p10_and_a_clock_skew_as_zero() -> None:
    m = Metrics()
    latency = StartLatency(m)
    latency.record(event(21, 2000), NOW_MS)  # not P20 offloaded: unknown, so P10
    latency.record(event(0, 1000, offloaded=True), NOW_MS)
    latency.record(event(10, -5000), NOW_MS)  # ingested "after" now: another host's clock
    got = series(m)
    assert got["P10", "normal"] == (2.0, 2.0)
    assert got["P10", "offloaded"] == (1.0, 1.0)
    assert got["P20", "offloaded"] == (0.0, 0.0)
