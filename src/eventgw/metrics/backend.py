"""Prometheus-backed metrics: one registry per process, families created once by name."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from prometheus_client.core import Metric

    from eventgw.metrics.names import MetricName

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """A process's metric families. Hot paths bind ``.labels(...)`` children once and reuse them.

    Thread-safe (prometheus_client locks internally); rendering is cheap enough to serve
    from the event loop.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._families: dict[str, Counter | Gauge | Histogram] = {}
        self._collectors: dict[str, Collector] = {}

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

    def loop_histogram(self, name: MetricName, doc: str) -> LoopHistogram:
        """A latency histogram for one event loop's hot path (no lock per observation)."""
        if name in self._families or name in self._collectors:
            raise ValueError(f"{name} is registered already")
        hist = LoopHistogram(name, doc)
        self.registry.register(hist)
        self._collectors[name] = hist
        return hist

    def counter_from(
        self,
        name: MetricName,
        doc: str,
        labels: Sequence[str],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        """A counter family whose values ``read()`` returns at scrape time (label values →
        total): hot paths count in plain integers and pay nothing per event."""
        if name in self._families or name in self._collectors:
            raise ValueError(f"{name} is registered already")
        collector = _ReadCounter(name, doc, list(labels), read)
        self.registry.register(collector)
        self._collectors[name] = collector

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        return generate_latest(self.registry)


class LoopHistogram(Collector):
    """A histogram observed from one event loop: a bucket list, no lock, scraped as usual.

    prometheus_client's histogram takes a lock and walks its buckets on every observation
    (about 2 µs): too much once per task on a processor. Here an observation is a bisect and
    two additions. Scrapes read the lists without a lock; a scrape that interleaves with an
    observation may see the count one ahead of a bucket, never more.
    """

    def __init__(self, name: str, doc: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._name = name
        self._doc = doc
        self._bounds = list(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (seconds)."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        """The family, with cumulative buckets as Prometheus expects."""
        total = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip([*map(str, self._bounds), "+Inf"], self._counts, strict=True):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=self._sum)


class _ReadCounter(Collector):
    def __init__(
        self,
        name: str,
        doc: str,
        labels: list[str],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        self._name = name.removesuffix("_total")
        self._doc = doc
        self._labels = labels
        self._read = read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labels)
        for values, total in self._read().items():
            family.add_metric(list(values), total)
        yield family
