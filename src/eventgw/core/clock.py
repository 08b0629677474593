"""Injected time: monotonic for durations, wall clock for event timestamps."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where services read the time from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations."""
        ...

    def wall_ms(self) -> int:
        """Unix time in milliseconds, for event timestamps and deadlines."""
        ...


class SystemClock:
    """The real clocks of the machine."""

    def monotonic(self) -> float:
        """See `Clock.monotonic`."""
        return time.monotonic()

    def wall_ms(self) -> int:
        """See `Clock.wall_ms`."""
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock tests move by hand with `advance`."""

    def __init__(self, wall_ms: int = 1_700_000_000_000, monotonic: float = 0.0) -> None:
        self._wall_ms = wall_ms
        self._mono = monotonic

    def monotonic(self) -> float:
        """See `Clock.monotonic`."""
        return self._mono

    def wall_ms(self) -> int:
        """See `Clock.wall_ms`."""
        return self._wall_ms

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self._mono += seconds
        self._wall_ms += int(seconds * 1000)
