"""Dynamic classifier: hot-tenant isolation and the per-company offload kill switch.

One company that floods (a backfill, a runaway integration) must not eat the capacity of
its class for everyone else. `HotTenantTracker` measures each company's event rate over a
sliding window with bounded memory; `DynamicClassifier` turns a company whose rate reaches
``max_rate_per_company`` into a *hot tenant* and either demotes its events one class
(P30 → P20 → P10) or sends them to the offload lane. Hot-tenant offload never applies to
P30 (P30 is never offloaded by default: docs/flow-control.md, "The SLO service"): a hot
tenant's P30 events are demoted to P20 instead.

``force_offload_companies`` is the operator's kill switch for a company: every event of a
listed company goes to the offload lane, whatever its class (P30 included: the operator
asked for it) and whatever its rate, even with ``enabled=False``.

Deadlines: demotion changes the lane, not the promise. The caller keeps the event's
ORIGINAL ``slo_deadline`` (computed from the static class) when it demotes or offloads —
the deadline never changes once stamped (docs/design.md, "SLO classes and deadlines").

This module is pure: no I/O, no asyncio, time from an injected `Clock`. It is not
thread-safe; the ingest service calls it from its event loop only.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Final

from eventgw.config.admission import HotTenantConfig
from eventgw.core.envelope import Priority

if TYPE_CHECKING:
    from eventgw.config.admission import HotTenantConfig
    from eventgw.core.clock import Clock


# Buckets per window. The window slides in steps of window_s / _BUCKETS; the oldest
# bucket is weighted by the part of it still inside the window (see HotTenantTracker).
_BUCKETS: Final = 10
# An eviction sweep keeps this share of max_tracked, so sweeps are amortised over many
# inserts instead of running on every new company once the table is full.
_KEEP_AFTER_SWEEP: Final = 0.9
_P30: Final = Priority.P30  # a module global: `Priority.P30` is a slow class lookup on 3.11
_DEMOTED: Final = {
    Priority.P30: Priority.P20,
    Priority.P20: Priority.P10,
    Priority.P10: Priority.P10,
}


@dataclass(frozen=True, slots=True)
class HotTenantStatistics:
    """Snapshot of `HotTenantTracker`."""

    tracked: int  # companies with events in the window
    hot: tuple[tuple[str, float], ...]  # (company, events/s), hottest first, at most 10
    observed: int  # events counted since start
    evicted: int  # companies dropped to bound memory since start
    window_s: float
    max_rate_per_company: float


@dataclass(frozen=True, slots=True)
class DynamicClassifierStatistics:
    """Snapshot of `DynamicClassifier`; counts are events since start."""

    tenants: HotTenantStatistics
    demoted: int  # events moved down one class because their company was hot
    offloaded_hot: int  # events offloaded because their company was hot
    offloaded_forced: int  # events offloaded by force_offload_companies


class HotTenantTracker:
    """Per-company event rate over a sliding window, in bounded memory.

    Counting: time is cut into buckets of ``window_s / 10``. Each bucket maps company →
    events; ``totals`` holds each company's sum over the current bucket and the 10 before
    it. The sliding window ``[now - window_s, now]`` covers the current bucket, the 9
    before it in full and the oldest one in part, so the estimate subtracts the oldest
    bucket's count times the fraction of it now outside the window. Error bound: only the
    oldest bucket is estimated, assuming its events were spread evenly over it, so the count
    is off by less than that company's events in one bucket (a steady rate is exact; a
    burst fades out linearly over one bucket width instead of at once). Buckets that leave are
    subtracted from ``totals``, and a company with no events left in the window is
    forgotten.

    Memory: at most ``max_tracked`` companies are tracked (every internal map holds at most
    that many keys). A new company arriving at a full table triggers a sweep that drops
    the companies with the smallest counts down to 90 % of ``max_tracked`` (ties: the
    longest tracked first), then it is inserted — a newcomer always gets in. Chosen over
    LRU because it never drops a busy company for a burst of one-off ones, and over
    Space-Saving top-k because that over-counts newcomers (it inherits the evicted
    minimum), which here would turn cold companies hot. Bound: a dropped company loses its
    count and restarts from zero; it is dropped only when 90 % of ``max_tracked`` other
    companies have at least its count, so a company at the hot threshold can be dropped
    only while the total rate is at least ``0.9 * max_tracked * max_rate_per_company``
    (18 M events/s with the defaults, ~100 times the design peak). Below that, eviction
    costs only cold companies their count and `is_hot` is as exact as the window.
    """

    def __init__(self, config: HotTenantConfig, clock: Clock) -> None:
        self._clock = clock
        self._window_s = config.window_s
        self._bucket_s = config.window_s / _BUCKETS
        self._threshold = config.max_rate_per_company
        self._max_tracked = config.max_tracked
        self._totals: dict[str, int] = {}
        # (bucket index, company -> events), oldest first; at most _BUCKETS + 1 of them.
        self._buckets: deque[tuple[float, dict[str, int]]] = deque()
        self._current: dict[str, int] = {}
        # Bucket indexes are whole floats (``now // bucket_s``): cheaper than int() per event.
        self._current_index = clock.monotonic() // self._bucket_s
        self._buckets.append((self._current_index, self._current))
        # The bucket just outside the full ones (index current - _BUCKETS), or None; it is
        # the one weighted by the part still inside the window.
        self._oldest: dict[str, int] | None = None
        self._observed = 0
        self._evicted = 0

    @property
    def window_s(self) -> float:
        """The averaging window in seconds."""
        return self._window_s

    def reconfigure(self, config: HotTenantConfig) -> None:
        """Take the new threshold and ``max_tracked`` (trimmed at the next new company).

        Raises:
            ValueError: ``window_s`` differs; build a new tracker for a new window.
        """
        if config.window_s != self._window_s:
            raise ValueError(
                f"window_s cannot change in place ({self._window_s} -> {config.window_s})"
            )
        self._threshold = config.max_rate_per_company
        self._max_tracked = config.max_tracked

    def observe(self, company_id: str, n: int = 1) -> float:
        """Count ``n`` events of ``company_id`` now; returns its rate including them.

        ``n == 0`` counts nothing and does not start tracking the company.

        Raises:
            ValueError: ``n`` is negative.
        """
        if n <= 0:
            if n:
                raise ValueError(f"n must be >= 0, got {n}")
            # Nothing to count. Inserting zero counts would break the invariant that a
            # company in a bucket has a positive total, which bucket expiry relies on.
            return self.rate(company_id)
        now = self._clock.monotonic()
        index = now // self._bucket_s
        if index != self._current_index:
            self._roll(index)
        totals = self._totals
        total = totals.get(company_id)
        if total is None:
            if len(totals) >= self._max_tracked:
                self._sweep()
            total = n
        else:
            total += n
        totals[company_id] = total
        current = self._current
        current[company_id] = current.get(company_id, 0) + n
        self._observed += n
        # `_rate` inlined: this runs per event.
        oldest = self._oldest
        if oldest is not None:
            count = oldest.get(company_id)
            if count:
                return (total - count * (now / self._bucket_s - index)) / self._window_s
        return total / self._window_s

    def rate(self, company_id: str) -> float:
        """Events/s of ``company_id`` over the last ``window_s``; 0.0 when not tracked."""
        now = self._advance()
        total = self._totals.get(company_id)
        return 0.0 if total is None else self._rate(company_id, total, now)

    def is_hot(self, company_id: str) -> bool:
        """True when the rate of ``company_id`` is at or above ``max_rate_per_company``."""
        return self.rate(company_id) >= self._threshold

    def hot_companies(self, limit: int = 10) -> list[tuple[str, float]]:
        """Up to ``limit`` hot companies with their rates, hottest first (scans the table)."""
        now = self._advance()
        rates = ((c, self._rate(c, t, now)) for c, t in self._totals.items())
        hot = [(c, r) for c, r in rates if r >= self._threshold]
        return heapq.nlargest(limit, hot, key=itemgetter(1))

    def hot_count(self) -> int:
        """How many companies are at or above the threshold now (scans the table: for scrapes)."""
        now = self._advance()
        threshold = self._threshold
        return sum(1 for c, t in self._totals.items() if self._rate(c, t, now) >= threshold)

    def tracked(self) -> int:
        """How many companies have events in the window (at most ``max_tracked``)."""
        self._advance()
        return len(self._totals)

    def statistics(self) -> HotTenantStatistics:
        """A snapshot for metrics and the status page."""
        hot = tuple(self.hot_companies())
        return HotTenantStatistics(
            tracked=len(self._totals),
            hot=hot,
            observed=self._observed,
            evicted=self._evicted,
            window_s=self._window_s,
            max_rate_per_company=self._threshold,
        )

    def _rate(self, company_id: str, total: int, now: float) -> float:
        oldest = self._oldest
        if oldest is not None:
            count = oldest.get(company_id)
            if count:
                # The part of the oldest bucket that has slid out of the window equals the
                # part of the current bucket that has elapsed.
                outside = now / self._bucket_s - self._current_index
                return (total - count * outside) / self._window_s
        return total / self._window_s

    def _advance(self) -> float:
        now = self._clock.monotonic()
        index = now // self._bucket_s
        if index != self._current_index:
            self._roll(index)
        return now

    def _roll(self, index: float) -> None:
        buckets, totals = self._buckets, self._totals
        while buckets and buckets[0][0] < index - _BUCKETS:
            _, expired = buckets.popleft()
            for company, count in expired.items():
                left = totals[company] - count
                if left:
                    totals[company] = left
                else:
                    del totals[company]
        self._current = {}
        self._current_index = index
        oldest_index, oldest = buckets[0] if buckets else (index, self._current)
        self._oldest = oldest if oldest_index == index - _BUCKETS else None
        buckets.append((index, self._current))

    def _sweep(self) -> None:
        keep = int(self._max_tracked * _KEEP_AFTER_SWEEP)
        drop = len(self._totals) - min(keep, self._max_tracked - 1)
        victims = heapq.nsmallest(drop, self._totals.items(), key=itemgetter(1))
        for company, _ in victims:
            del self._totals[company]
            for _, bucket in self._buckets:
                bucket.pop(company, None)
        self._evicted += len(victims)


class DynamicClassifier:
    """Runtime class decisions on top of the static class: hot tenants and the kill switch.

    Holds a `HotTenantTracker` fed by every `decide` call (while enabled). Not the final
    lane decision: the caller still asks the scheduler (the SLO service) about the returned
    class, and sends the event to the offload lane when either says so.
    """

    def __init__(self, config: HotTenantConfig, clock: Clock) -> None:
        self._clock = clock
        self._config = config
        self._tracker = HotTenantTracker(config, clock)
        self._set_lists(config)
        self._demoted = 0
        self._offloaded_hot = 0
        self._offloaded_forced = 0

    @property
    def config(self) -> HotTenantConfig:
        """The config in force."""
        return self._config

    @property
    def tracker(self) -> HotTenantTracker:
        """The rate tracker (for the status page and tests)."""
        return self._tracker

    def apply_config(self, config: HotTenantConfig) -> None:
        """Hot-apply a new config; rates carry over unless ``window_s`` changed.

        A new window starts a new tracker (rates restart from zero): counts over the old
        window cannot be turned into counts over the new one.
        """
        if config.window_s != self._tracker.window_s:
            self._tracker = HotTenantTracker(config, self._clock)
        else:
            self._tracker.reconfigure(config)
        self._set_lists(config)
        self._config = config

    def decide(self, priority: Priority, company_id: str, n: int = 1) -> tuple[Priority, bool]:
        """Count ``n`` events of ``company_id``; returns (class to use, force offload).

        Kill switch first: a company in ``force_offload_companies`` is offloaded at its
        class. Otherwise a hot, non-exempt company is demoted one class (``action="demote"``,
        P10 stays P10) or offloaded (``action="offload"``; P30 is demoted to P20 instead).
        The caller must keep the event's original deadline.

        Raises:
            ValueError: ``n`` is negative.
        """
        if not self._enabled:
            if n < 0:
                raise ValueError(f"n must be >= 0, got {n}")
            if company_id in self._force:
                self._offloaded_forced += n
                return priority, True
            return priority, False
        rate = self._tracker.observe(company_id, n)
        if company_id in self._force:
            self._offloaded_forced += n
            return priority, True
        if rate < self._threshold or company_id in self._exempt:
            return priority, False
        if self._offload and priority is not _P30:
            self._offloaded_hot += n
            return priority, True
        demoted = _DEMOTED[priority]
        if demoted is not priority:
            self._demoted += n
        return demoted, False

    def statistics(self) -> DynamicClassifierStatistics:
        """A snapshot for metrics and the status page."""
        return DynamicClassifierStatistics(
            tenants=self._tracker.statistics(),
            demoted=self._demoted,
            offloaded_hot=self._offloaded_hot,
            offloaded_forced=self._offloaded_forced,
        )

    def _set_lists(self, config: HotTenantConfig) -> None:
        # Copied to attributes and sets: decide() runs per event.
        self._enabled = config.enabled
        self._threshold = config.max_rate_per_company
        self._offload = config.action == "offload"
        self._exempt = frozenset(config.exempt_companies)
        self._force = frozenset(config.force_offload_companies)
