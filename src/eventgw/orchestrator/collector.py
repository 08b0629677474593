"""The orchestrator's state as Prometheus families, read from snapshots at scrape time.

`OrchestratorCollector` is registered on the service's `Metrics` (`Metrics.register`) and
builds every family below from one ``statistics()`` call per part when the registry is
collected (a ``/metrics`` scrape, a StatsD flush). Nothing is updated on the event path: the
buffer, the ack tracker, the dispatcher's outcome counters, the retry writer and the
committer already keep these numbers for ``/stats`` and flow control. Names and meanings:
docs/metrics.md (``eventgw_orchestrator_*``).

Label cardinality: lanes (5) x states (3), classes (3), and one series per assigned
``(topic, partition)`` for the commit lag — bounded by the topics' partition counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventgw.core.envelope import SLO_SECONDS, Priority
from eventgw.metrics.backend import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterable

    from eventgw.metrics.backend import Metric
    from eventgw.orchestrator.committer import Committer
    from eventgw.orchestrator.dispatcher import Dispatcher
    from eventgw.orchestrator.retry_writer import RetryWriter

__all__ = ["OrchestratorCollector"]

_CLASSES = (Priority.P30, Priority.P20, Priority.P10)
_STATES = ("ready", "leased", "delayed")

# name (without a counter's _total) → (kind, help, labels)
_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "eventgw_orchestrator_buffer_bytes": ("gauge", "accounted bytes of every task held", ()),
    "eventgw_orchestrator_buffer_budget_bytes": ("gauge", "the buffer's byte budget", ()),
    "eventgw_orchestrator_lane_tasks": ("gauge", "tasks held per lane", ("lane", "state")),
    "eventgw_orchestrator_lane_bytes": ("gauge", "accounted bytes per lane", ("lane",)),
    "eventgw_orchestrator_lane_paused": ("gauge", "1 while the lane is paused", ("lane",)),
    "eventgw_orchestrator_class_tasks": ("gauge", "tasks held per class", ("class", "state")),
    "eventgw_orchestrator_class_bytes": ("gauge", "accounted bytes per class", ("class",)),
    "eventgw_orchestrator_late_tasks": ("gauge", "ready tasks past their deadline", ("class",)),
    "eventgw_orchestrator_oldest_ready_age_seconds": (
        "gauge",
        "age of the oldest ready task, offloaded excluded",
        ("class",),
    ),
    "eventgw_orchestrator_slo_seconds": ("gauge", "the class's SLO", ("class",)),
    "eventgw_orchestrator_commit_lag_records": (
        "gauge",
        "records consumed above the last committed offset",
        ("topic", "partition"),
    ),
    "eventgw_orchestrator_retry_writes_pending": (
        "gauge",
        "retry and DLQ records not yet confirmed",
        (),
    ),
    "eventgw_orchestrator_retried": ("counter", "tasks retried (memory or topic)", ("lane",)),
    "eventgw_orchestrator_dead_lettered": ("counter", "records written to the DLQ", ("lane",)),
    "eventgw_orchestrator_leases_expired": ("counter", "leases that expired", ("lane",)),
    "eventgw_orchestrator_commits": ("counter", "offset commits by outcome", ("result",)),
}


def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    kind, doc, labels = _FAMILIES[name]
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


class OrchestratorCollector:
    """Exposes the orchestrator's snapshots; see the module docstring.

    Args:
        dispatcher: its buffer, ack tracker and per-lane outcome counters.
        writer: retry and DLQ records pending.
        committer: commits and failed commits.
    """

    def __init__(self, dispatcher: Dispatcher, writer: RetryWriter, committer: Committer) -> None:
        self._d = dispatcher
        self._writer = writer
        self._committer = committer

    def describe(self) -> Iterable[Metric]:
        """Every family, without samples."""
        return [_family(name) for name in _FAMILIES]

    def collect(self) -> Iterable[Metric]:
        """Every family, from fresh snapshots."""
        d = self._d
        st = d.buffer.statistics()
        out = {name: _family(name) for name in _FAMILIES}

        def add(name: str, labels: list[str], value: float) -> None:
            out[name].add_metric(labels, value)

        add("eventgw_orchestrator_buffer_bytes", [], st.total_bytes)
        add("eventgw_orchestrator_buffer_budget_bytes", [], st.budget_bytes)
        for lane, ln in st.lanes.items():
            for state, n in zip(_STATES, (ln.ready, ln.leased, ln.delayed), strict=True):
                add("eventgw_orchestrator_lane_tasks", [lane, state], n)
            add("eventgw_orchestrator_lane_bytes", [lane], ln.bytes)
            add("eventgw_orchestrator_lane_paused", [lane], 1.0 if ln.paused else 0.0)
            counters = d.counters.get(lane)
            if counters is not None:
                add("eventgw_orchestrator_retried", [lane], counters.retried)
                add("eventgw_orchestrator_dead_lettered", [lane], counters.dead_lettered)
                add("eventgw_orchestrator_leases_expired", [lane], counters.expired)
        for p in _CLASSES:
            cls = st.classes[p]
            for state, n in zip(_STATES, (cls.ready, cls.leased, cls.delayed), strict=True):
                add("eventgw_orchestrator_class_tasks", [p.name, state], n)
            add("eventgw_orchestrator_class_bytes", [p.name], cls.bytes)
            add("eventgw_orchestrator_late_tasks", [p.name], cls.late_ready)
            add(
                "eventgw_orchestrator_oldest_ready_age_seconds",
                [p.name],
                cls.oldest_ready_age_s or 0.0,
            )
            add("eventgw_orchestrator_slo_seconds", [p.name], SLO_SECONDS[p])
        for part in d.tracker.statistics().partitions:
            add(
                "eventgw_orchestrator_commit_lag_records",
                [part.topic, str(part.partition)],
                part.uncommitted,
            )
        add("eventgw_orchestrator_retry_writes_pending", [], self._writer.pending())
        add("eventgw_orchestrator_commits", ["ok"], self._committer.commits)
        add("eventgw_orchestrator_commits", ["failed"], self._committer.failures)
        return list(out.values())
