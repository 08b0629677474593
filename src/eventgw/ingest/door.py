"""The front door: under saturation ingest defers the lowest class first and keeps taking P30.

Pure bookkeeping (no I/O; time from the injected clock). Two budgets, both shared by HTTP and
gRPC (docs/flow-control.md, "The door"):

- **Events in flight** (accepted, not yet answered): a class is taken while the events in
  flight stay within its share of ``max_in_flight_events`` — P10 half of it, P20 80 %, P30
  all — so when the publisher or Kafka slows, P10 is deferred first, then P20, and P30 is
  taken until the whole budget is used.
- **Requests in flight**: beyond ``max_in_flight_requests`` a request is still read and only
  its P30 events are taken; beyond twice that it is refused whole (the last bound on memory,
  far past where classes are told apart).

A deferred event is answered ``DEFERRED`` with a retry hint — how long the events in flight
take to drain at the recent rate — and nothing is written for it; the client library sends
it again after the hint (jittered), within its own timeout.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class DoorStatistics:
    """Point-in-time view of a `Door`."""

    in_flight_events: int
    in_flight_requests: int
    admitted: Mapping[Priority, int]  # events taken since start, per class
    deferred: Mapping[Priority, int]  # events deferred since start, per class
    refused_requests: int  # requests refused whole (past the hard request bound)
    retry_after_ms: int  # the hint a deferral would carry now
    max_in_flight_events: int  # the events budget
    limits: Mapping[Priority, int]  # events in flight up to which each class is taken


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
        shares: Mapping[Priority, float] = DEFAULT_SHARES,
    ) -> None:
        if max_in_flight_events < 1 or max_in_flight_requests < 1:
            raise ValueError(
                f"door bounds must be >= 1, got {max_in_flight_events=} {max_in_flight_requests=}"
            )
        for p in _ORDER:
            share = shares.get(p)
            if share is None or not 0 < share <= 1:
                raise ValueError(f"share of {p.name} must be in (0, 1], got {share}")
        self._max_events = max_in_flight_events
        self._limit = {p: int(shares[p] * max_in_flight_events) for p in _ORDER}
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

    def enter(self) -> bool:
        """A request arrived: count it; False if it must be refused whole (hard bound)."""
        if self.in_flight_requests >= self._hard_requests:
            self._refused += 1
            return False
        self.in_flight_requests += 1
        return True

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
        over_requests = self.in_flight_requests > self._soft_requests
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

    def release(self, n: int) -> None:
        """``n`` events taken by `admit` are answered (durable, failed or rejected)."""
        self.in_flight_events -= n
        now = self._mono()
        self._window_events += n
        elapsed = now - self._window_start
        if elapsed >= _RATE_WINDOW_S:
            self._rate = self._window_events / elapsed
            self._window_start, self._window_events = now, 0

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
            refused_requests=self._refused,
            retry_after_ms=self.retry_after_ms(),
            max_in_flight_events=self._max_events,
            limits=MappingProxyType(dict(self._limit)),
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
        classes=DoorClasses(P30=of(Priority.P30), P20=of(Priority.P20), P10=of(Priority.P10)),
    )
