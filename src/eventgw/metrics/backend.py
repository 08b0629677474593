"""Prometheus-backed metrics: one registry per process, families created once by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from collections.abc import Sequence

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

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        return generate_latest(self.registry)
