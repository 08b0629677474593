"""The front door: under saturation ingest defers the lowest class first and keeps taking P30.

Pure bookkeeping (no I/O; time from the injected clock). Two budgets, both shared by HTTP and
gRPC (docs/flow-control.md, "The door"):

- **Events in flight** (accepted, not yet answered): a class is taken while the events in
  flight stay within its share of ``max_in_flight_events`` — P10 half of it, P20 80 %, P30
  all — so when the publisher or Kafka slows, P10 is deferred first, then P20, and P30 is
  taken until the whole budget is used.
- **How long the write path takes**: each answered request reports how long its events were
  in flight. While the slowest of a quarter second takes more than ``queue_target_s`` longer
  than the write path takes unloaded, the P10 and P20 shares shrink (x 0.7, down to 5 % of
  themselves); otherwise they grow back (+ 5 % of themselves per quarter second). A P30 event
  taken then waits behind a short queue, not behind a whole budget of P10 (measured at
  10,000 events/s: docs/benchmarks.md).
- **Requests in flight**: beyond ``max_in_flight_requests`` a request is still read and only
  its P30 events are taken; beyond twice that a request whose body is not yet read (HTTP) is
  refused whole — the last bound on memory, far past where classes are told apart. A gRPC
  request arrives read (its bound is the server's ``maximum_concurrent_rpcs``), so its P30
  events are still taken.

- **Holding instead of deferring**: a request without P30 events that its classes' shares
  cannot take now waits inside ingest (up to ``hold_s``, in a queue per class: P20 requests
  before P10 ones, first come first served) until they can take all of it. A request waiting
  costs memory only, while a deferral costs a round trip, a parse and a classification at
  every retry: under a flood, the retries of deferred events took more CPU than the flood
  itself. Up to ``4 x max_in_flight_events`` events wait; past that, or after ``hold_s``,
  or in a request with P30 events (whose P30 must not wait for its P10), the events that do
  not fit are deferred.

A deferred event is answered ``DEFERRED`` with a retry hint — how long the events in flight
take to drain at the recent rate — and nothing is written for it; the client library sends
it again after the hint (jittered), within its own timeout.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from eventgw.core.envelope import Priority
from eventgw.ingest.status_doc import DoorClass, DoorClasses, DoorStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["DEFAULT_SHARES", "Door", "DoorStatistics", "door_status"]

DEFAULT_SHARES: Final[Mapping[Priority, float]] = MappingProxyType(
    {Priority.P30: 1.0, Priority.P20: 0.8, Priority.P10: 0.5}
)
"""Share of ``max_in_flight_events`` up to which each class is taken."""

_ORDER: Final = (Priority.P30, Priority.P20, Priority.P10)  # admitted first to last
_MIN_HINT_MS: Final = 20
_MAX_HINT_MS: Final = 2_000
_RATE_WINDOW_S: Final = 1.0
_LATENCY_WINDOW_S: Final = 0.25
_SHRINK: Final = 0.7  # the lower classes' scale, multiplied while the write path queues
_GROW: Final = 0.05  # added to it per window otherwise
_MIN_SCALE: Final = 0.05
_UNLOADED_CREEP: Final = 0.002  # per window, the unloaded estimate's drift towards the latest
_HELD_PER_BUDGET: Final = 4  # events held at most, in budgets of max_in_flight_events


class _Waiter:
    """A held request: what it wants, and the future that says whether it was taken."""

    __slots__ = ("future", "n", "wanted")

    def __init__(self, wanted: Mapping[Priority, int], future: asyncio.Future[bool]) -> None:
        self.wanted = wanted
        self.n = sum(wanted.values())
        self.future = future


@dataclass(frozen=True, slots=True)
class DoorStatistics:
    """Point-in-time view of a `Door`."""

    in_flight_events: int
    in_flight_requests: int
    admitted: Mapping[Priority, int]  # events taken since start, per class
    deferred: Mapping[Priority, int]  # events deferred since start, per class
    held_events: int  # events of requests waiting to be taken now
    held: int  # requests that waited to be taken since start (taken or deferred after)
    refused_requests: int  # requests refused whole (past the hard request bound)
    retry_after_ms: int  # the hint a deferral would carry now
    max_in_flight_events: int  # the events budget
    limits: Mapping[Priority, int]  # events in flight up to which each class is taken now
    scale: float  # share of their configured limits P10 and P20 have now (1.0: all of it)
    unloaded_ms: float  # the write path's latency without a queue (estimate; 0: none yet)


class Door:
    """Admission by class under saturation; see the module docstring.

    Use: ``enter()`` when a request arrives (False: refuse it whole), ``admit(wanted)``
    once its events are classified, ``release(n)`` when its admitted events are answered,
    ``leave()`` when the request ends. Not thread-safe: one event loop owns it.

    Raises:
        ValueError: a non-positive bound, or a share outside (0, 1].
    """

    def __init__(
        self,
        *,
        max_in_flight_events: int,
        max_in_flight_requests: int,
        monotonic: Callable[[], float],
        queue_target_s: float = 0.1,
        hold_s: float = 10.0,
        shares: Mapping[Priority, float] = DEFAULT_SHARES,
    ) -> None:
        if max_in_flight_events < 1 or max_in_flight_requests < 1:
            raise ValueError(
                f"door bounds must be >= 1, got {max_in_flight_events=} {max_in_flight_requests=}"
            )
        if queue_target_s <= 0 or hold_s < 0:
            raise ValueError(
                f"need queue_target_s > 0 and hold_s >= 0, got {queue_target_s=} {hold_s=}"
            )
        for p in _ORDER:
            share = shares.get(p)
            if share is None or not 0 < share <= 1:
                raise ValueError(f"share of {p.name} must be in (0, 1], got {share}")
        self._max_events = max_in_flight_events
        self._configured = {p: int(shares[p] * max_in_flight_events) for p in _ORDER}
        self._limit = dict(self._configured)
        self._scale = 1.0
        self._queue_target_s = queue_target_s
        self._unloaded_s: float | None = None  # None: no window seen yet
        self._latency_start = monotonic()
        self._latency_max = -1.0  # the slowest answer of this window; -1: none
        self._hold_s = hold_s
        self._max_held = _HELD_PER_BUDGET * max_in_flight_events
        self._waiting: dict[Priority, collections.deque[_Waiter]] = {
            Priority.P20: collections.deque(),
            Priority.P10: collections.deque(),
        }
        self._held_events = 0
        self._held_requests = 0
        self._held_total = 0
        self._soft_requests = max_in_flight_requests
        self._hard_requests = 2 * max_in_flight_requests
        self._mono = monotonic
        self.in_flight_events = 0
        self.in_flight_requests = 0
        self._admitted = dict.fromkeys(_ORDER, 0)
        self._deferred = dict.fromkeys(_ORDER, 0)
        self._refused = 0
        # Events answered per second, over windows of _RATE_WINDOW_S (for the hint).
        self._window_start = monotonic()
        self._window_events = 0
        self._rate = 0.0

    def now(self) -> float:
        """The door's clock; pass it to `release` as ``taken_at``."""
        return self._mono()

    def enter(self) -> bool:
        """A request arrived, body not yet read: count it; False if it must be refused whole."""
        if self.in_flight_requests >= self._hard_requests:
            self._refused += 1
            return False
        self.in_flight_requests += 1
        return True

    def enter_read(self) -> None:
        """A request arrived already read (gRPC): count it; it is never refused whole.

        Refusing it would save no memory; past the soft bound only its P30 is taken.
        """
        self.in_flight_requests += 1

    def leave(self) -> None:
        """A request that `enter` let in has ended."""
        self.in_flight_requests -= 1

    def admit(self, wanted: Mapping[Priority, int]) -> dict[Priority, int]:
        """How many of ``wanted`` events per class to take now; they count as in flight.

        P30 first, then P20, then P10, each up to its share of the events budget; past the
        soft request bound only P30. The caller defers the rest (the last events of a class
        in the request) and calls `release` with the total taken once they are answered.
        """
        admitted: dict[Priority, int] = {}
        # Held requests wait without work: they do not count towards the soft bound.
        over_requests = self.in_flight_requests - self._held_requests > self._soft_requests
        for p in _ORDER:
            n = wanted.get(p, 0)
            if n <= 0:
                continue
            room = self._limit[p] - self.in_flight_events
            if over_requests and p is not Priority.P30:
                room = 0
            take = max(0, min(n, room))
            admitted[p] = take
            self.in_flight_events += take
            self._admitted[p] += take
            self._deferred[p] += n - take
        return admitted

    async def hold(self, wanted: Mapping[Priority, int]) -> bool:
        """Take all of ``wanted`` (P20 and P10 events only), waiting for room up to ``hold_s``.

        True: every event is taken (in flight; `release` them once answered). False: none
        is (past ``hold_s``, or too many events already held); the caller then takes what
        fits with `admit` and defers the rest. Called for requests without P30 events.
        """
        if Priority.P30 in wanted:
            raise ValueError("a request with P30 events is not held: admit it")
        if self._fits(wanted) and not any(self._waiting.values()):
            self._take(wanted)
            return True
        waiter_n = sum(wanted.values())
        if self._hold_s <= 0 or self._held_events + waiter_n > self._max_held:
            return False
        loop = asyncio.get_running_loop()
        waiter = _Waiter(wanted, loop.create_future())
        queue = self._waiting[Priority.P20 if wanted.get(Priority.P20) else Priority.P10]
        queue.append(waiter)
        self._held_events += waiter.n
        self._held_requests += 1
        self._held_total += 1
        expiry = loop.call_later(self._hold_s, self._expire, queue, waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result():
                self.release(waiter.n)  # taken as the caller went away: nothing will answer
            else:
                self._forget(queue, waiter)
            raise
        finally:
            expiry.cancel()

    def _expire(self, queue: collections.deque[_Waiter], waiter: _Waiter) -> None:
        if not waiter.future.done():
            self._forget(queue, waiter)
            waiter.future.set_result(False)

    def _forget(self, queue: collections.deque[_Waiter], waiter: _Waiter) -> None:
        """Drop a waiter that was not taken."""
        if waiter in queue:
            queue.remove(waiter)
            self._held_events -= waiter.n
            self._held_requests -= 1

    def _fits(self, wanted: Mapping[Priority, int]) -> bool:
        """True when each class of ``wanted`` (P20, P10) has room left under its share now.

        A held request is taken whole once its classes are below their limits, so it may
        pass them by up to its own size: a request larger than a shrunk share (500 P10
        events against 5 % of 10,000) would otherwise wait out ``hold_s`` at the head of
        its queue and hold every request behind it.
        """
        p20, p10 = wanted.get(Priority.P20, 0), wanted.get(Priority.P10, 0)
        if p20 and self.in_flight_events >= self._limit[Priority.P20]:
            return False
        return not p10 or self.in_flight_events + p20 < self._limit[Priority.P10]

    def _take(self, wanted: Mapping[Priority, int]) -> None:
        for p, n in wanted.items():
            self.in_flight_events += n
            self._admitted[p] += n

    def _grant(self) -> None:
        """Take held requests that fit now: P20 ones first, each queue in arrival order."""
        for p in (Priority.P20, Priority.P10):
            queue = self._waiting[p]
            while queue:
                waiter = queue[0]
                if not self._fits(waiter.wanted):
                    return  # the order is strict: no P10 request passes a waiting P20 one
                queue.popleft()
                self._held_events -= waiter.n
                self._held_requests -= 1
                self._take(waiter.wanted)
                waiter.future.set_result(True)

    def release(self, n: int, taken_at: float | None = None) -> None:
        """``n`` events taken by `admit` are answered (durable, failed or rejected).

        ``taken_at``: `now` when they were taken; how long they were in flight steers the
        P10 and P20 shares (module docstring).
        """
        self.in_flight_events -= n
        now = self._mono()
        self._window_events += n
        elapsed = now - self._window_start
        if elapsed >= _RATE_WINDOW_S:
            self._rate = self._window_events / elapsed
            self._window_start, self._window_events = now, 0
        if now - self._latency_start >= _LATENCY_WINDOW_S:
            self._adapt(now)  # the window before this answer
        if taken_at is not None and n > 0:
            self._latency_max = max(self._latency_max, now - taken_at)
        if self._held_requests:
            self._grant()

    def _adapt(self, now: float) -> None:
        """End a latency window: shrink the lower classes' shares if the write path queued."""
        worst, self._latency_max, self._latency_start = self._latency_max, -1.0, now
        if worst < 0:
            return  # nothing answered in the window: nothing learnt
        unloaded = self._unloaded_s
        if unloaded is None or worst < unloaded:
            unloaded = worst
        else:
            unloaded += (worst - unloaded) * _UNLOADED_CREEP
        self._unloaded_s = unloaded
        if worst > unloaded + self._queue_target_s:
            self._scale = max(_MIN_SCALE, self._scale * _SHRINK)
        elif self._scale < 1.0:
            self._scale = min(1.0, self._scale + _GROW)
        else:
            return
        for p in (Priority.P20, Priority.P10):
            self._limit[p] = max(1, round(self._configured[p] * self._scale))

    def scale(self) -> float:
        """The share of their configured limits P10 and P20 have now (1.0: all of it)."""
        return self._scale

    def retry_after_ms(self) -> int:
        """When deferred events should come back: the events in flight drained at the rate."""
        rate = self._rate
        if rate <= 0:
            return _MAX_HINT_MS // 4
        drain_ms = int(1000 * self.in_flight_events / rate)
        return max(_MIN_HINT_MS, min(_MAX_HINT_MS, drain_ms))

    def statistics(self) -> DoorStatistics:
        """A snapshot for /status and metrics."""
        return DoorStatistics(
            in_flight_events=self.in_flight_events,
            in_flight_requests=self.in_flight_requests,
            admitted=MappingProxyType(dict(self._admitted)),
            deferred=MappingProxyType(dict(self._deferred)),
            held_events=self._held_events,
            held=self._held_total,
            refused_requests=self._refused,
            retry_after_ms=self.retry_after_ms(),
            max_in_flight_events=self._max_events,
            limits=MappingProxyType(dict(self._limit)),
            scale=self._scale,
            unloaded_ms=(self._unloaded_s or 0.0) * 1000,
        )


def door_status(door: Door) -> DoorStatus:
    """The ``door`` part of ingest's ``/status`` document."""
    st = door.statistics()

    def of(p: Priority) -> DoorClass:
        return DoorClass(
            admitted=st.admitted[p], deferred=st.deferred[p], limit_events=st.limits[p]
        )

    return DoorStatus(
        in_flight_events=st.in_flight_events,
        max_in_flight_events=st.max_in_flight_events,
        in_flight_requests=st.in_flight_requests,
        retry_after_ms=st.retry_after_ms,
        refused_requests=st.refused_requests,
        scale=round(st.scale, 3),
        unloaded_ms=round(st.unloaded_ms, 1),
        held_events=st.held_events,
        held=st.held,
        classes=DoorClasses(P30=of(Priority.P30), P20=of(Priority.P20), P10=of(Priority.P10)),
    )
