"""A rate limiter for the operator tools: at most ``rate_per_s`` records per second. Pure.

Time comes from an injected `eventgw.core.clock.Clock` and waiting from an injected
``sleep``, so tests drive it with a `FakeClock` and no real sleeps.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from eventgw.core.clock import Clock


class RateLimiter:
    """Spaces batches so that, over any run, records go out at ``rate_per_s`` at most.

    Each call to `wait_turn` for ``n`` records books ``n / rate_per_s`` seconds of the
    schedule and waits until its booking starts: the first batch goes at once, the next one
    when the first one's time is used up. Unused time is not saved up (no burst after an
    idle period), which keeps the contract simple: after ``t`` seconds at most
    ``rate_per_s * t + n_first`` records have gone.

    Cancellation: a cancelled wait keeps its booking; the next caller waits behind it.
    """

    def __init__(
        self,
        rate_per_s: float,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._next_free_s: float | None = None

    async def wait_turn(self, n: int) -> None:
        """Wait until ``n`` more records may go (``n`` >= 1)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        now = self._clock.monotonic()
        start = now if self._next_free_s is None else max(now, self._next_free_s)
        self._next_free_s = start + n / self.rate_per_s
        if start > now:
            await self._sleep(start - now)
