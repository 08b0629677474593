"""SLO attainment as the orchestrator sees it: every ACK, against the event's deadline.

The orchestrator is the one place that sees every ACK together with the task's deadline and
ingest time, so it is where "processed within SLO" is decided: an ACK applied at or before
``slo_deadline_ms`` is **met**, after it **missed**. Per class and tier
(`eventgw.metrics.slo`) it keeps:

- ``eventgw_orchestrator_processed_total{class, tier, slo}``: met and missed counts;
- ``eventgw_orchestrator_ack_latency_seconds{class, tier}``: ingest → ACK applied.

Cost: the dispatcher hands over the ACKed tasks of one result message at once (`record`);
per task that is a comparison and a few integer additions, with no prometheus_client call
(its locks cost microseconds). The counts are Python ints read by the registry at scrape
time, and by ``Stats`` / ``eventgw status`` through `statistics`.

What the numbers do not include: results other than ACK (NACKed, retried, dead-lettered
tasks are counted by ``eventgw_orchestrator_retried_total`` / ``_dead_lettered_total``);
an ACK for a task no longer held (stale: its partition moved, or a duplicate) — the replica
that owns the task counts it once. A task whose partition moved counts at its new owner.
Both clocks are wall clocks (ingest's and the orchestrator's), so skew between hosts
shifts latency; negative latencies are counted as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw.core.envelope import Priority
from eventgw.metrics.backend import CounterMetricFamily
from eventgw.metrics.slo import TIERS, class_label

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from eventgw.metrics.backend import Metric, Metrics
    from eventgw.orchestrator.task_heaps import BufferedTask

__all__ = ["Attainment", "SloRecorder"]

_PROCESSED_DOC = "tasks ACKed, by class, tier and whether the ACK came by the deadline"
_CLASSES = (Priority.P30, Priority.P20, Priority.P10)


@dataclass(frozen=True, slots=True)
class Attainment:
    """ACKed tasks of one class and tier, by whether they met the deadline."""

    met: int
    missed: int

    @property
    def ratio(self) -> float | None:
        """met / (met + missed); None before the first ACK."""
        total = self.met + self.missed
        return self.met / total if total else None


class SloRecorder:
    """Counts ACKed tasks as met or missed and their latency; see the module docstring."""

    def __init__(self, metrics: Metrics, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        latency = metrics.bulk_histogram(
            "eventgw_orchestrator_ack_latency_seconds",
            "ingest to ACK applied, by class and tier",
            ["class", "tier"],
        )
        # (class, offloaded) → [met, missed] and its latency series; bound once.
        self._counts: dict[tuple[Priority, bool], list[int]] = {}
        # The same keyed by class value + offloaded (30/31, 20/21, 10/11): an int key per
        # task instead of building a tuple, and both parts in one lookup.
        self._slots: dict[int, tuple[list[int], Callable[[float], None]]] = {}
        for p in _CLASSES:
            for offloaded, tier in zip((False, True), TIERS, strict=True):
                counts = self._counts[p, offloaded] = [0, 0]
                observe = latency.labels(p.name, tier).observe
                self._slots[p + offloaded] = (counts, observe)
        metrics.register(self)

    def record(self, tasks: Sequence[BufferedTask]) -> None:
        """Count ``tasks``, ACKed now (one result message's worth).

        Per task: a dict lookup, a comparison, a list increment and a `BulkHistogram`
        observation — about 0.2 µs (300 tasks a call, best of 15 runs on the 2-core dev box).
        """
        now = self._now_ms()
        slots = self._slots
        for t in tasks:
            counts, observe = slots[t.priority + t.offloaded]
            counts[now > t.deadline_ms] += 1  # [met, missed]
            waited_ms = now - t.ingested_at_ms
            observe(waited_ms / 1000 if waited_ms > 0 else 0.0)

    def statistics(self) -> Mapping[tuple[Priority, bool], Attainment]:
        """Met and missed so far per (class, offloaded)."""
        return {key: Attainment(c[0], c[1]) for key, c in self._counts.items()}

    # -- collector ------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The processed counter family, without samples."""
        return [CounterMetricFamily("eventgw_orchestrator_processed", _PROCESSED_DOC)]

    def collect(self) -> Iterable[Metric]:
        """``eventgw_orchestrator_processed_total{class, tier, slo}``."""
        family = CounterMetricFamily(
            "eventgw_orchestrator_processed", _PROCESSED_DOC, labels=["class", "tier", "slo"]
        )
        for (p, offloaded), (met, missed) in self._counts.items():
            tier = TIERS[offloaded]
            family.add_metric([class_label(p), tier, "met"], met)
            family.add_metric([class_label(p), tier, "missed"], missed)
        return [family]
