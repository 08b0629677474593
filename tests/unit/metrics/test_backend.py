"""The aggregated families of metrics/backend.py, read back through the Prometheus text format."""

from __future__ import annotations

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from eventgw.metrics.backend import (
    LATENCY_BUCKETS,
    SLO_LATENCY_BUCKETS,
    BulkHistogramFamily,
    Metrics,
)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_bulk_histogram_exposes_cumulative_buckets_count_and_sum() -> None:
    m = Metrics()
    h = m.bulk_histogram("eventgw_orchestrator_ack_latency_seconds", "doc", ["class", "tier"])
    series = h.labels("P30", "normal")
    for value in (0.004, 0.005, 4.9, 5.0, 5.1, 7200.0):
        series.observe(value)
    got = samples(m)
    name = "eventgw_orchestrator_ack_latency_seconds"

    def bucket(le: str) -> float:
        return got[f"{name}_bucket", (("class", "P30"), ("le", le), ("tier", "normal"))]

    assert bucket("0.005") == 2  # an edge value belongs to its bucket (le is inclusive)
    assert bucket("2.5") == 2
    assert bucket("5.0") == 4
    assert bucket("10.0") == 5
    assert bucket("3600.0") == 5
    assert bucket("+Inf") == 6
    assert got[f"{name}_count", (("class", "P30"), ("tier", "normal"))] == 6
    assert got[f"{name}_sum", (("class", "P30"), ("tier", "normal"))] == pytest.approx(7215.009)
    assert series.count == 6


def test_bulk_histogram_family_is_created_once_and_checks_its_arguments() -> None:
    m = Metrics()
    first = m.bulk_histogram("eventgw_processor_start_latency_seconds", "doc", ["class"])
    assert m.bulk_histogram("eventgw_processor_start_latency_seconds", "doc", ["class"]) is first
    with pytest.raises(ValueError, match="takes labels"):
        first.labels("P30", "extra")
    with pytest.raises(TypeError, match="not a counter"):
        m.counter("eventgw_processor_start_latency_seconds", "doc")
    m.gauge("eventgw_orchestrator_buffer_bytes", "doc")
    with pytest.raises(TypeError, match="not a bulk histogram"):
        m.bulk_histogram("eventgw_orchestrator_buffer_bytes", "doc")
    with pytest.raises(ValueError, match="increasing"):
        BulkHistogramFamily("eventgw_processor_start_latency_seconds", "d", [], [2.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        BulkHistogramFamily("eventgw_processor_start_latency_seconds", "d", [], [float("inf")])


def test_slo_buckets_have_an_edge_at_each_slo() -> None:
    assert {5.0, 60.0, 1200.0} <= set(SLO_LATENCY_BUCKETS)


class _Collector:
    def __init__(self, name: str, kind: str = "gauge") -> None:
        self.name, self.kind = name, kind
        self.value = 0.0

    def _family(self) -> GaugeMetricFamily | CounterMetricFamily:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        return cls(self.name, "doc")

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        family = self._family()
        family.add_metric([], self.value)
        return [family]


def test_a_registered_collector_is_read_at_each_render() -> None:
    m = Metrics()
    c = _Collector("eventgw_orchestrator_buffer_bytes")
    m.register(c)
    c.value = 42
    assert samples(m)["eventgw_orchestrator_buffer_bytes", ()] == 42
    c.value = 7
    assert samples(m)["eventgw_orchestrator_buffer_bytes", ()] == 7


def test_register_refuses_a_name_missing_from_names_py() -> None:
    with pytest.raises(ValueError, match="eventgw_orchestrator_bufer_bytes is not in"):
        Metrics().register(_Collector("eventgw_orchestrator_bufer_bytes"))
    # Counters are known by their _total name.
    Metrics().register(_Collector("eventgw_orchestrator_commits", "counter"))
    with pytest.raises(ValueError, match="eventgw_orchestrator_buffer_bytes_total is not in"):
        Metrics().register(_Collector("eventgw_orchestrator_buffer_bytes", "counter"))


def test_register_refuses_a_name_taken_already() -> None:
    m = Metrics()
    m.gauge("eventgw_orchestrator_buffer_bytes", "doc")
    with pytest.raises(ValueError, match="Duplicated"):
        m.register(_Collector("eventgw_orchestrator_buffer_bytes"))


def test_a_collector_of_the_same_families_replaces_the_one_before() -> None:
    """An orchestrator moving to another fleet rebuilds its parts and registers them again."""
    m = Metrics()
    old, new = (
        _Collector("eventgw_orchestrator_buffer_bytes"),
        _Collector("eventgw_orchestrator_buffer_bytes"),
    )
    old.value, new.value = 42, 7
    m.register(old)
    m.register(new)
    assert samples(m)["eventgw_orchestrator_buffer_bytes", ()] == 7


def test_a_label_less_family_exposes_its_one_series_from_the_start() -> None:
    m = Metrics()
    series = m.bulk_histogram(
        "eventgw_processor_handler_duration_seconds", "doc", buckets=LATENCY_BUCKETS
    ).labels()
    name = "eventgw_processor_handler_duration_seconds"
    assert samples(m)[f"{name}_count", ()] == 0  # scraped before the first observation
    series.observe(0.003)
    series.observe(120.0)
    got = samples(m)
    assert got[f"{name}_bucket", (("le", "0.0025"),)] == 0
    assert got[f"{name}_bucket", (("le", "0.005"),)] == 1
    assert got[f"{name}_bucket", (("le", "60.0"),)] == 1  # as prometheus_client spells le
    assert got[f"{name}_bucket", (("le", "+Inf"),)] == 2
    assert got[f"{name}_sum", ()] == pytest.approx(120.003)


def test_counter_from_reads_the_owners_counters_at_each_render() -> None:
    m = Metrics()
    counts = {"ack": 0, "nack": 0}
    m.counter_from(
        "eventgw_processor_tasks_total",
        "doc",
        ["result"],
        lambda: {(kind,): float(n) for kind, n in counts.items()},
    )
    counts["ack"] += 3
    got = samples(m)
    assert got["eventgw_processor_tasks_total", (("result", "ack"),)] == 3
    assert got["eventgw_processor_tasks_total", (("result", "nack"),)] == 0
    counts["nack"] += 1
    assert samples(m)["eventgw_processor_tasks_total", (("result", "nack"),)] == 1


def test_counter_from_is_checked_as_register_is() -> None:
    m = Metrics()
    m.counter("eventgw_processor_tasks_total", "doc")
    with pytest.raises(ValueError, match="Duplicated"):
        m.counter_from("eventgw_processor_tasks_total", "doc", [], dict)
    with pytest.raises(ValueError, match="eventgw_processor_taks_total is not in"):
        m.counter_from("eventgw_processor_taks_total", "doc", [], dict)  # type: ignore[arg-type]  # the typo under test
