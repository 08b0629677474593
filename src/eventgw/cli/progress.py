"""A progress bar on stderr for ``eventgw dlq redrive`` and ``eventgw replay``.

On a terminal it redraws one line (``\\r``) at most ten times a second; otherwise (a log
file, a Kubernetes job) it prints a plain line at most every ten seconds. No dependency.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventgw.dlq.report import Progress

_TTY_INTERVAL_S = 0.1
_LOG_INTERVAL_S = 10.0


class ProgressBar:
    """Renders `eventgw.dlq.report.Progress` updates; call `finish` once at the end.

    Args:
        stream: where to draw (stderr: stdout stays clean for the listing or summary).
        label: what runs, e.g. ``redrive`` or ``replay``.
        monotonic: the clock (tests pass a fake one).
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        width: int = 28,
    ) -> None:
        self._stream = stream
        self._label = label
        self._now = monotonic
        self._width = width
        self._tty = stream.isatty()
        self._started = monotonic()
        self._last_drawn: float | None = None
        self._last: Progress | None = None

    def update(self, progress: Progress) -> None:
        """Record ``progress``; draw it if the last drawing is old enough."""
        self._last = progress
        now = self._now()
        interval = _TTY_INTERVAL_S if self._tty else _LOG_INTERVAL_S
        if self._last_drawn is None or now - self._last_drawn >= interval:
            self._draw(progress, now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self._last is not None:
            self._draw(self._last, self._now())
            if self._tty:
                self._stream.write("\n")
                self._stream.flush()

    def render(self, progress: Progress, now: float) -> str:
        """The text of one drawing (without ``\\r`` or newline)."""
        total = progress.total
        done = min(progress.scanned, total)
        fraction = done / total if total else 1.0  # an empty plan is done
        filled = int(self._width * fraction)
        bar = "#" * filled + "." * (self._width - filled)
        elapsed = max(now - self._started, 1e-9)
        rate = progress.written / elapsed
        return (
            f"{self._label} [{bar}] {int(100 * fraction):3d}% {done}/{total} offsets"
            f"  written {progress.written}  skipped {progress.skipped}  {rate:.1f}/s"
        )

    def _draw(self, progress: Progress, now: float) -> None:
        self._last_drawn = now
        text = self.render(progress, now)
        if self._tty:
            self._stream.write("\r" + text)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
