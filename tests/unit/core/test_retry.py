"""The one backoff policy: exponential, jittered, capped, validated."""

from __future__ import annotations

import random

import pytest

from eventgw.core.retry import Backoff


def test_backoff_is_exponential_jittered_and_capped() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, rng=random.Random(7))
    for attempt, base in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (50, 1.0)]:
        delays = [backoff.delay_s(attempt) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base / 10, "jittered, not lock-step"


def test_a_negative_attempt_waits_like_the_first() -> None:
    backoff = Backoff(initial_s=0.2, max_s=1.0)
    assert 0.1 <= backoff.delay_s(-3) <= 0.2


@pytest.mark.parametrize(
    ("initial_s", "max_s"), [(0, 1.0), (-1, 1.0), (2.0, 1.0), (0.1, float("inf"))]
)
def test_bad_parameters_are_refused(initial_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=initial_s, max_s=max_s)
