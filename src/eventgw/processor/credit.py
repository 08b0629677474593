"""How a worker sizes its prefetch and spreads its credit over the orchestrators it serves.

Pure: no I/O, no clock (durations come in as numbers). The protocol these decisions feed
is in docs/dispatch-protocol.md.

Prefetch: a worker holds, beyond the tasks its slots run, at most what those slots can start
within ``window_s`` — ``concurrency x window_s / mean handler time``, rounded, at least 1,
capped — so a task never waits long behind work already handed to this worker, and yet no
slot idles for a round trip to the orchestrator (RabbitMQ's ``basic.qos`` prefetch, sized by
time).

Credit: with one orchestrator, all free capacity is its credit. With several, credit goes
first where an orchestrator says work is waiting (its backlog hint), shared equally among
those with a backlog (a small backlog is not starved by a large one: with a fleet per Kafka
cluster, one fleet's flood must not stall the other's urgent work), the rest is spread
evenly, and credit parked at an orchestrator with nothing to send is taken back (revoked)
when another one has a backlog, so no orchestrator is favoured and none starves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LinkCredit", "PrefetchEstimator", "plan_credit"]


class PrefetchEstimator:
    """Prefetch from a running mean of handler durations.

    Args:
        concurrency: handler slots of the worker.
        window_s: what the prefetch may take to start (``processor.prefetch_window_ms``).
        max_prefetch: upper bound, whatever the handlers' speed.

    Before any handler finished, the estimate assumes a handler takes ``window_s``
    (prefetch = concurrency, capped).
    """

    __slots__ = ("_concurrency", "_max", "_mean_s", "_window_s")

    def __init__(self, concurrency: int, window_s: float, max_prefetch: int) -> None:
        if concurrency < 1 or max_prefetch < 0 or not (window_s >= 0 and math.isfinite(window_s)):
            raise ValueError(f"bad prefetch parameters {concurrency=} {window_s=} {max_prefetch=}")
        self._concurrency = concurrency
        self._window_s = window_s
        self._max = max_prefetch
        self._mean_s: float | None = None

    def observe(self, total_s: float, n: int) -> None:
        """Fold in ``n`` handler calls that took ``total_s`` together."""
        if n <= 0:
            return
        sample = max(total_s / n, 1e-6)
        mean = self._mean_s
        # Weight by count, but let one batch move the mean at most halfway: it follows a
        # change of handler speed within a few dozen calls without jumping on one outlier.
        w = min(0.5, max(0.05, n / 32))
        self._mean_s = sample if mean is None else mean + w * (sample - mean)

    @property
    def mean_s(self) -> float | None:
        """Mean handler duration so far (None before the first)."""
        return self._mean_s

    def prefetch(self) -> int:
        """Tasks to hold unstarted beyond the running ones."""
        if self._window_s == 0:
            return 0
        mean = self._mean_s if self._mean_s is not None else self._window_s
        return min(self._max, max(1, round(self._concurrency * self._window_s / mean)))


@dataclass(slots=True)
class LinkCredit:
    """What a worker knows about its credit at one orchestrator."""

    connected: bool = False
    credit: int = 0  # granted and not used yet, as far as the worker knows
    backlog: int = 0  # the orchestrator's last hint: ready tasks it could send
    revoking: bool = False  # a revoke is out, its answer not back yet


def plan_credit(links: list[LinkCredit], free: int) -> tuple[list[int], list[int]]:
    """Split ``free`` credit over ``links``; returns (grants, revokes) per link.

    1. Backlogs first: a connected link whose backlog exceeds its credit needs the
       difference; ``free`` is shared equally among the needy links, each capped at its
       need, and what a link cannot use goes to the others (water-filling).
    2. The rest is spread evenly over connected links (standing credit, so a task that
       arrives anywhere is dispatched at once).
    3. If a backlog is still not covered, credit parked at links without a backlog is
       revoked (all of it), to be granted where the work is once it comes back.
    """
    n = len(links)
    grants = [0] * n
    revokes = [0] * n
    live = [i for i in range(n) if links[i].connected]
    if not live:
        return grants, revokes
    need = {i: max(0, links[i].backlog - links[i].credit) for i in live}
    left = max(0, free)
    needy = sorted((i for i in live if need[i]), key=lambda i: need[i])
    while left and needy:
        share, extra = divmod(left, len(needy))
        if share == 0:  # fewer credits than needy links: one each, smallest need first
            for i in needy[:extra]:
                grants[i] += 1
                need[i] -= 1
            left = 0
            break
        for i in needy:
            g = min(share, need[i])
            grants[i] += g
            need[i] -= g
            left -= g
        needy = [i for i in needy if need[i]]
    if left:
        share, extra = divmod(left, len(live))
        # Links with the least credit get the remainder first.
        for rank, i in enumerate(sorted(live, key=lambda i: links[i].credit + grants[i])):
            grants[i] += share + (1 if rank < extra else 0)
    if any(need[i] for i in live):
        for i in live:
            link = links[i]
            if link.credit and not link.backlog and not link.revoking and not grants[i]:
                revokes[i] = link.credit
    return grants, revokes
