"""Prometheus-backed metrics: one registry per process, families created once by name.

Two kinds of families:

- prometheus_client's own (`Metrics.counter`, `gauge`, `histogram`): each update takes a
  lock (about a microsecond), so hot paths update them once per batch, never per event;
- **aggregated** ones, kept as plain Python numbers by their owner and read only when the
  registry is collected (a scrape, a StatsD flush): `Metrics.bulk_histogram` (bucket counts
  incremented without a lock: the one histogram for hot paths) and `Metrics.register` (a
  collector that turns a ``statistics()`` snapshot or counters the owner keeps anyway into
  families; `Metrics.counter_from` is its shorthand for one counter family). These cost
  nothing per event beyond the owner's own arithmetic.

Every name a family or collector exposes is in `eventgw.metrics.names` (`Metrics.register`
checks it at run time, the type checker at the other calls).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import TYPE_CHECKING, Final, Protocol, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from eventgw.metrics.names import MetricName

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "LATENCY_BUCKETS",
    "SLO_LATENCY_BUCKETS",
    "BulkHistogram",
    "BulkHistogramFamily",
    "Collector",
    "CounterMetricFamily",
    "GaugeMetricFamily",
    "Metric",
    "Metrics",
]
# CounterMetricFamily, GaugeMetricFamily and Metric are prometheus_client's, re-exported so
# that a component's scrape-time collector (Metrics.register) builds its families without
# importing the client itself (the client has one home: docs/architecture.md).

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

SLO_LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0,
)  # fmt: skip
"""Seconds from ingest to a task's handler start or ACK: up to an hour, with a bucket edge
at each class's SLO (5 s, 60 s, 1200 s) so ``le`` answers "within SLO" exactly."""

_KNOWN_NAMES: Final = frozenset(get_args(MetricName))


class Collector(Protocol):
    """What `Metrics.register` takes: prometheus_client's custom-collector interface."""

    def collect(self) -> Iterable[Metric]:
        """The families with their current samples (called at each scrape)."""
        ...

    def describe(self) -> Iterable[Metric]:
        """The families without samples (called once, at registration)."""
        ...


def exposed_name(family: Metric) -> str:
    """The name a family is known by in `eventgw.metrics.names` (counters end in ``_total``)."""
    return f"{family.name}_total" if family.type == "counter" else family.name


class BulkHistogram:
    """One histogram series whose bucket counts are plain ints: no lock, no allocation.

    ``observe`` costs a bisection and two additions (prometheus_client's histogram takes a
    lock and walks its buckets: about 2 µs, too much once per task). Not thread-safe: one
    event loop owns it, and the registry reads it from that loop (the status server and the
    StatsD flush run there).
    """

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket (not cumulative); the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value (in the first bucket whose bound is >= it)."""
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Values observed."""
        return sum(self.counts)


class BulkHistogramFamily:
    """A labelled family of `BulkHistogram` series, exposed as a Prometheus histogram.

    ``labels(...)`` creates a series on first use; bind the children once, as with
    prometheus_client's families. Label values must come from a bounded set.
    """

    def __init__(
        self, name: MetricName, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"buckets must be increasing and not empty, got {buckets}")
        if not all(math.isfinite(b) for b in buckets):
            raise ValueError("buckets must be finite (+Inf is implied)")
        self.name = name
        self._doc = doc
        self._labels = tuple(labels)
        self._bounds = tuple(float(b) for b in buckets)
        self._les = [*(repr(b) for b in self._bounds), "+Inf"]
        self._series: dict[tuple[str, ...], BulkHistogram] = {}

    def labels(self, *values: str) -> BulkHistogram:
        """The series of these label values (created on first use).

        Raises:
            ValueError: not one value per label.
        """
        if len(values) != len(self._labels):
            raise ValueError(f"{self.name} takes labels {self._labels}, got {values}")
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = BulkHistogram(self._bounds)
        return series

    def describe(self) -> list[Metric]:
        """The family without samples."""
        return [HistogramMetricFamily(self.name, self._doc, labels=self._labels)]

    def collect(self) -> list[Metric]:
        """The family with every series' cumulative buckets, count and sum."""
        family = HistogramMetricFamily(self.name, self._doc, labels=self._labels)
        for values, series in self._series.items():
            running = 0
            buckets = []
            for le, n in zip(self._les, series.counts, strict=True):
                running += n
                buckets.append((le, float(running)))
            family.add_metric(list(values), buckets, series.sum)
        return [family]


class Metrics:
    """A process's metric families. Hot paths bind ``.labels(...)`` children once and reuse them.

    prometheus_client's families are thread-safe (they lock); the aggregated ones are
    owned by one event loop and read from it (see `BulkHistogram`). Rendering is cheap
    enough to serve from the event loop.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._families: dict[str, Counter | Gauge | Histogram | BulkHistogramFamily] = {}
        self._collectors: dict[frozenset[str], Collector] = {}  # by the names they expose

    def counter(self, name: MetricName, doc: str, labels: Sequence[str] = ()) -> Counter:
        """Return the counter family ``name`` (``_total`` suffix is Prometheus's own)."""
        fam = self._families.get(name)
        if fam is None:
            fam = Counter(name.removesuffix("_total"), doc, labels, registry=self.registry)
            self._families[name] = fam
        if not isinstance(fam, Counter):
            raise TypeError(f"{name} is not a counter")
        return fam

    def gauge(self, name: MetricName, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """Return the gauge family ``name``."""
        fam = self._families.get(name)
        if fam is None:
            fam = Gauge(name, doc, labels, registry=self.registry)
            self._families[name] = fam
        if not isinstance(fam, Gauge):
            raise TypeError(f"{name} is not a gauge")
        return fam

    def histogram(self, name: MetricName, doc: str, labels: Sequence[str] = ()) -> Histogram:
        """Return the latency histogram family ``name``."""
        fam = self._families.get(name)
        if fam is None:
            fam = Histogram(name, doc, labels, buckets=LATENCY_BUCKETS, registry=self.registry)
            self._families[name] = fam
        if not isinstance(fam, Histogram):
            raise TypeError(f"{name} is not a histogram")
        return fam

    def bulk_histogram(
        self,
        name: MetricName,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = SLO_LATENCY_BUCKETS,
    ) -> BulkHistogramFamily:
        """Return the aggregated histogram family ``name`` (see the module docstring)."""
        fam = self._families.get(name)
        if fam is None:
            fam = BulkHistogramFamily(name, doc, labels, buckets)
            self.registry.register(fam)
            self._families[name] = fam
        if not isinstance(fam, BulkHistogramFamily):
            raise TypeError(f"{name} is not a bulk histogram")
        return fam

    def register(self, collector: Collector) -> None:
        """Expose ``collector``'s families at every collection.

        A collector that describes exactly the families of one registered before replaces
        it: a component rebuilt in the same process (an orchestrator moving to another
        fleet builds a new dispatcher) exposes its new parts, and its counters restart from
        zero, which Prometheus's ``rate`` reads as a counter reset.

        Raises:
            ValueError: a family it describes is not named in `eventgw.metrics.names`, or
                its name is taken already by another family or collector.
        """
        names = frozenset(exposed_name(family) for family in collector.describe())
        unknown = sorted(names - _KNOWN_NAMES)
        if unknown:
            raise ValueError(f"{unknown[0]} is not in eventgw.metrics.names")
        previous = self._collectors.pop(names, None)
        if previous is not None:
            self.registry.unregister(previous)
        self.registry.register(collector)
        self._collectors[names] = collector

    def counter_from(
        self,
        name: MetricName,
        doc: str,
        labels: Sequence[str],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        """Register a counter family whose samples ``read()`` returns at each collection.

        A shorthand for `register` with a one-family collector: ``read`` maps label values to
        the total so far, from plain integers the owner counts on its hot path.

        Raises:
            ValueError: as `register`.
        """
        self.register(_ReadCounter(name, doc, labels, read))

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        return generate_latest(self.registry)


class _ReadCounter:
    """The collector behind `Metrics.counter_from`."""

    def __init__(
        self,
        name: MetricName,
        doc: str,
        labels: Sequence[str],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        self._name = name.removesuffix("_total")  # prometheus_client adds it back
        self._doc = doc
        self._labels = list(labels)
        self._read = read

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._doc, labels=self._labels)]

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labels)
        for values, total in self._read().items():
            family.add_metric(list(values), total)
        return [family]
