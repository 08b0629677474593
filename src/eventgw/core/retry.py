"""The one backoff policy: capped exponential delays with jitter.

Pure: no I/O, no clock. Callers sleep the delay themselves, with a sleep that ends on stop
(`eventgw.core.lifecycle.sleep_or_stop`), so no retry loop delays a shutdown.
"""

from __future__ import annotations

import math
import random

__all__ = ["Backoff"]


class Backoff:
    """Capped exponential backoff with jitter.

    Attempt ``n`` (from 0) waits a random time in ``[base/2, base]`` where
    ``base = min(max_s, initial_s * 2**n)``: bounded, and many clients that lost the same
    peer do not come back in lock-step.

    Raises:
        ValueError: unless ``0 < initial_s <= max_s`` and both are finite.
    """

    __slots__ = ("_rng", "initial_s", "max_s")

    def __init__(
        self, initial_s: float = 0.1, max_s: float = 5.0, rng: random.Random | None = None
    ) -> None:
        if not (0 < initial_s <= max_s and math.isfinite(max_s)):
            raise ValueError(f"need 0 < initial_s <= max_s (finite), got {initial_s=} {max_s=}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()  # noqa: S311  # jitter, not cryptography

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        base = min(self.max_s, self.initial_s * 2 ** min(max(attempt, 0), 32))
        return self._rng.uniform(base / 2, base)
