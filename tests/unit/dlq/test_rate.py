"""The rate limiter, on a fake clock: batches are spaced to the rate, never faster."""

from __future__ import annotations

import pytest

from eventgw.core.clock import FakeClock
from eventgw.dlq.rate import RateLimiter


class Sleeper:
    """An injected sleep that moves the fake clock and records each wait."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.clock.advance(seconds)


async def test_first_batch_goes_at_once_then_each_waits_for_the_previous_ones_time() -> None:
    clock = FakeClock()
    sleep = Sleeper(clock)
    limiter = RateLimiter(10, clock, sleep)
    for _ in range(4):
        await limiter.wait_turn(5)  # 5 records at 10/s = 0.5 s each
    assert sleep.waits == [0.5, 0.5, 0.5]
    assert clock.monotonic() == pytest.approx(1.5)


async def test_over_any_run_the_rate_holds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock, Sleeper(clock))
    sent = 0
    for n in (1, 50, 100, 7, 300, 42):
        await limiter.wait_turn(n)
        sent += n
    # Everything but the last batch has had its time: sent - last <= rate x elapsed.
    assert sent - 42 <= 100 * clock.monotonic() + 1e-9


async def test_time_spent_elsewhere_counts_but_is_not_saved_up() -> None:
    clock = FakeClock()
    sleep = Sleeper(clock)
    limiter = RateLimiter(1, clock, sleep)
    await limiter.wait_turn(2)  # booked until t=2
    clock.advance(1.5)  # work between batches
    await limiter.wait_turn(1)
    assert sleep.waits == [0.5]
    clock.advance(60)  # idle: no burst afterwards
    await limiter.wait_turn(1)
    await limiter.wait_turn(1)
    assert sleep.waits == [0.5, 1.0]


async def test_fractional_rates() -> None:
    clock = FakeClock()
    sleep = Sleeper(clock)
    limiter = RateLimiter(0.5, clock, sleep)
    await limiter.wait_turn(1)
    await limiter.wait_turn(1)
    assert sleep.waits == [2.0]


def test_bad_arguments() -> None:
    clock = FakeClock()
    for rate in (0, -1.0):
        with pytest.raises(ValueError, match="rate_per_s must be > 0"):
            RateLimiter(rate, clock)


async def test_a_batch_needs_at_least_one_record() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        await RateLimiter(1, FakeClock()).wait_turn(0)
