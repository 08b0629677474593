"""Flow-control decisions from buffer snapshots (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from eventgw.core.envelope import Priority
from eventgw.orchestrator.flow_control import evaluate
from eventgw.orchestrator.priority_buffer import BufferedTask, PriorityBuffer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from eventgw.core.envelope import BufferLane
    from eventgw.orchestrator.flow_control import Action, Signal


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000_000
        self.mono = 0.0


def buffer_with(clock: Clock, budget: int = 10_000_000) -> PriorityBuffer:
    return PriorityBuffer(budget, now_ms=lambda: clock.ms, monotonic=lambda: clock.mono)


def task(
    i: int, priority: Priority, ingested_ms: int, slo_s: float, lane: BufferLane
) -> BufferedTask:
    return BufferedTask(
        task_id=f"t/0/{i}",
        topic="t",
        partition=0,
        offset=i,
        lane=lane,
        priority=priority,
        deadline_ms=ingested_ms + int(slo_s * 1000),
        ingested_at_ms=ingested_ms,
        value=b"x" * 100,
    )


def actions(signals: Iterable[Signal]) -> dict[Priority, Action]:
    return {s.priority: s.action for s in signals}


def test_empty_buffer_says_increase_for_every_class() -> None:
    clock = Clock()
    got = actions(evaluate(buffer_with(clock).statistics(), 0))
    assert got == {Priority.P30: "INCREASE", Priority.P20: "INCREASE", Priority.P10: "INCREASE"}


def test_queueing_past_half_the_slo_says_decrease_for_that_class_only() -> None:
    clock = Clock()
    buf = buffer_with(clock)
    buf.push(task(1, Priority.P10, clock.ms, 1200, "p10"))
    clock.ms += 700_000  # P10 oldest age 700 s > 600 s = half its SLO
    signals = evaluate(buf.statistics(), 3)
    got = actions(signals)
    assert got[Priority.P10] == "DECREASE"
    assert got[Priority.P30] == "INCREASE"
    p10 = next(s for s in signals if s.priority == Priority.P10)
    assert p10.orchestrator_index == 3
    assert p10.queue_depth == 1
    assert p10.oldest_ready_age_s == pytest.approx(700, abs=1)


def test_between_thresholds_holds() -> None:
    clock = Clock()
    buf = buffer_with(clock)
    buf.push(task(1, Priority.P20, clock.ms, 60, "p20"))
    clock.ms += 20_000  # 20 s: above 12 s (1/5) and below 30 s (1/2)
    assert Priority.P20 not in actions(evaluate(buf.statistics(), 0))


def test_late_tasks_or_a_paused_lane_say_decrease() -> None:
    clock = Clock()
    buf = buffer_with(clock, budget=1000)  # P10 pauses at 200 bytes
    buf.push(task(1, Priority.P10, clock.ms, 1200, "p10"))
    buf.push(task(2, Priority.P10, clock.ms, 1200, "p10"))
    assert buf.should_pause("p10")
    signals = evaluate(buf.statistics(), 0)
    p10 = next(s for s in signals if s.priority == Priority.P10)
    assert (p10.action, p10.reason) == ("DECREASE", "paused")
    assert "p10" in p10.paused_lanes


def test_thresholds_are_validated() -> None:
    clock = Clock()
    with pytest.raises(ValueError, match="increase_below"):
        evaluate(buffer_with(clock).statistics(), 0, decrease_at=0.2, increase_below=0.5)


def test_encoded_signal_round_trips_through_ingest_decoder() -> None:
    from eventgw.ingest.flow_control import decode
    from eventgw.orchestrator.flow_control import encode

    clock = Clock()
    buf = buffer_with(clock)
    buf.push(task(1, Priority.P10, clock.ms, 1200, "p10"))
    clock.ms += 700_000
    signal = next(s for s in evaluate(buf.statistics(), 2) if s.priority == Priority.P10)
    got = decode(encode(signal, emitted_at_ms=123))
    assert (got.priority, got.action, got.orchestrator_index) == (Priority.P10, "DECREASE", 2)
    assert got.queue_depth == 1
    assert got.emitted_at_ms == 123


def test_decoder_rejects_foreign_records() -> None:
    from eventgw.ingest.flow_control import decode

    for bad in (b"not json", b"{}", b'{"class":"P10","action":"DECREASE"}'):
        with pytest.raises(ValueError, match=r"\S"):
            decode(bad)


def test_an_offload_backlog_does_not_make_its_class_decrease() -> None:
    # Offloaded events wait behind everything by design; counting them as the class's queue
    # would cut the capacity of a class that was already shed (a feedback loop).
    clock = Clock()
    buf = buffer_with(clock)
    buf.push(task(1, Priority.P20, clock.ms, 60, "offload"))
    clock.ms += 50_000  # 50 s: past half the P20 SLO
    assert actions(evaluate(buf.statistics(), 0))[Priority.P20] == "INCREASE"
