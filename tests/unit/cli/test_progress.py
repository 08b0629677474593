"""The progress bar: redraws a terminal line, throttled; plain lines elsewhere."""

from __future__ import annotations

import io

from eventgw.cli.progress import ProgressBar
from eventgw.dlq.report import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render() -> None:
    clock = Clock()
    bar = ProgressBar(io.StringIO(), "redrive", monotonic=clock, width=10)
    clock.now = 2.0
    text = bar.render(Progress(scanned=50, total=200, written=40, skipped=3), clock.now)
    assert text == ("redrive [##........]  25% 50/200 offsets  written 40  skipped 3  20.0/s")
    assert "100%" in bar.render(Progress(0, 0, 0, 0), 1.0)  # an empty plan is done


def test_a_terminal_gets_one_redrawn_line_at_most_ten_times_a_second() -> None:
    clock = Clock()
    stream = Terminal()
    bar = ProgressBar(stream, "replay", monotonic=clock)
    for i in range(100):
        clock.now = i * 0.01  # one second of updates
        bar.update(Progress(i, 100, i, 0))
    bar.finish()
    drawings = stream.getvalue().split("\r")[1:]
    assert 10 <= len(drawings) <= 12
    assert drawings[-1].endswith("\n")
    assert " 99/100 " in drawings[-1]


def test_a_log_gets_a_plain_line_every_ten_seconds() -> None:
    clock = Clock()
    stream = io.StringIO()
    bar = ProgressBar(stream, "redrive", monotonic=clock)
    for i in range(31):
        clock.now = float(i)
        bar.update(Progress(i, 30, i, 0))
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 + 1  # t=0, 10, 20, 30, and the final state
    assert "\r" not in stream.getvalue()


def test_finish_without_updates_prints_nothing() -> None:
    stream = Terminal()
    ProgressBar(stream, "redrive").finish()
    assert stream.getvalue() == ""
