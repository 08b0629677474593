"""The door: the lower classes are deferred first under saturation; P30 is taken to the end."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.ingest.door import Door, door_status

P10, P20, P30 = Priority.P10, Priority.P20, Priority.P30


def door(events: int = 100, requests: int = 4) -> tuple[Door, FakeClock]:
    clock = FakeClock()
    d = Door(
        max_in_flight_events=events, max_in_flight_requests=requests, monotonic=clock.monotonic
    )
    return d, clock


def test_each_class_is_taken_up_to_its_share_of_the_events_in_flight() -> None:
    d, _ = door(events=100)
    assert d.admit({P10: 60}) == {P10: 50}  # P10: half the budget
    assert d.admit({P20: 40}) == {P20: 30}  # P20: up to 80 in flight
    assert d.admit({P30: 40}) == {P30: 20}  # P30: up to all 100
    assert d.in_flight_events == 100
    assert d.admit({P10: 1, P20: 1, P30: 1}) == {P10: 0, P20: 0, P30: 0}
    st = d.statistics()
    assert dict(st.deferred) == {P30: 21, P20: 11, P10: 11}
    assert dict(st.admitted) == {P30: 20, P20: 30, P10: 50}


def test_in_a_mixed_request_p30_is_taken_before_the_others() -> None:
    d, _ = door(events=100)
    d.admit({P10: 45})
    assert d.admit({P10: 10, P20: 10, P30: 10}) == {P30: 10, P20: 10, P10: 0}


def test_released_events_make_room_again() -> None:
    d, _ = door(events=10)
    assert d.admit({P10: 5}) == {P10: 5}
    assert d.admit({P10: 5}) == {P10: 0}
    d.release(5)
    assert d.admit({P10: 5}) == {P10: 5}


def test_past_the_request_bound_only_p30_is_taken_and_past_twice_it_nothing() -> None:
    d, _ = door(events=1000, requests=2)
    assert all(d.enter() for _ in range(3))  # one over the soft bound
    assert d.admit({P10: 5, P20: 5, P30: 5}) == {P30: 5, P20: 0, P10: 0}
    assert d.enter() is True  # 4 = twice the bound: still let in
    assert d.enter() is False  # refused whole
    assert d.statistics().refused_requests == 1
    d.leave()
    d.leave()
    assert d.admit({P10: 5}) == {P10: 5}  # back under the soft bound


def test_a_request_already_read_is_never_refused_whole() -> None:
    d, _ = door(events=1000, requests=2)
    for _ in range(10):  # five times the soft bound
        d.enter_read()
    assert d.enter() is False, "an HTTP request, body not yet read, is refused past 2x"
    assert d.admit({P10: 5, P20: 5, P30: 5}) == {P30: 5, P20: 0, P10: 0}
    assert d.statistics().refused_requests == 1
    assert d.in_flight_requests == 10


def answer(d: Door, clock: FakeClock, n: int, latency_s: float) -> None:
    """Take ``n`` P30 events, answer them ``latency_s`` later, and end the quarter second."""
    taken_at = d.now()
    d.admit({P30: n})
    clock.advance(latency_s)
    d.release(n, taken_at)
    clock.advance(0.25)
    d.release(0)  # the next answer ends the window the last one fell in


def test_while_the_write_path_queues_the_lower_classes_shares_shrink_and_p30s_does_not() -> None:
    d, clock = door(events=1000)
    for _ in range(4):  # a second unloaded: 20 ms
        answer(d, clock, 10, 0.02)
    assert d.statistics().unloaded_ms == pytest.approx(20)
    assert d.scale() == 1.0
    answer(d, clock, 10, 0.5)  # 480 ms more than unloaded, past the 100 ms target
    answer(d, clock, 10, 0.5)
    st = d.statistics()
    assert st.scale == pytest.approx(0.49)  # shrunk twice: x 0.7 x 0.7
    assert dict(st.limits) == {P30: 1000, P20: 392, P10: 245}
    assert d.admit({P10: 300, P30: 300}) == {P30: 300, P10: 0}, "P30 first, P10 past 245"
    d.release(300)
    for _ in range(10):  # unloaded again: back up by 5 % of the limits per window
        answer(d, clock, 10, 0.02)
    assert d.scale() == pytest.approx(0.99)
    answer(d, clock, 10, 0.02)
    assert d.scale() == 1.0
    assert dict(d.statistics().limits) == {P30: 1000, P20: 800, P10: 500}


def test_the_shares_shrink_no_lower_than_five_percent() -> None:
    d, clock = door(events=1000)
    answer(d, clock, 10, 0.01)
    for _ in range(30):
        answer(d, clock, 10, 5.0)
    assert d.scale() == pytest.approx(0.05)
    assert dict(d.statistics().limits) == {P30: 1000, P20: 40, P10: 25}


def test_a_slow_write_path_that_is_slow_unloaded_is_not_a_queue() -> None:
    """A remote cluster answering in 400 ms is its unloaded latency, not a queue."""
    d, clock = door(events=1000)
    for _ in range(20):
        answer(d, clock, 10, 0.4)
    assert d.scale() == 1.0
    assert d.statistics().unloaded_ms == pytest.approx(400)


async def test_a_request_without_p30_waits_for_room_instead_of_being_deferred() -> None:
    d, _ = door(events=100)
    assert d.admit({P10: 50}) == {P10: 50}  # P10's share is full
    held = asyncio.create_task(d.hold({P10: 20}))
    await asyncio.sleep(0)
    assert not held.done()
    assert d.statistics().held_events == 20
    d.release(30)  # 20 in flight: room for the 20 held
    assert await held is True
    st = d.statistics()
    assert (st.in_flight_events, st.held_events, st.held) == (40, 0, 1)
    assert st.admitted[P10] == 70
    assert st.deferred[P10] == 0, "held, then taken: never deferred"


async def test_a_held_request_larger_than_its_share_is_taken_once_the_share_has_room() -> None:
    d, _ = door(events=100)  # P10's share: 50
    d.admit({P10: 50})
    held = asyncio.create_task(d.hold({P10: 80}))
    await asyncio.sleep(0)
    d.release(1)
    assert await held is True, "below the limit: taken whole, past it by at most itself"
    assert d.in_flight_events == 129


async def test_held_p20_requests_are_taken_before_held_p10_ones_each_in_arrival_order() -> None:
    d, _ = door(events=100)
    d.admit({P20: 80})
    order: list[str] = []

    async def hold(name: str, wanted: dict[Priority, int]) -> None:
        assert await d.hold(wanted)
        order.append(name)

    tasks = [
        asyncio.create_task(hold(name, wanted))
        for name, wanted in (
            ("p10-a", {P10: 10}),
            ("p20-a", {P20: 10}),
            ("p10-b", {P10: 10}),
            ("p20-b", {P20: 10, P10: 5}),
        )
    ]
    await asyncio.sleep(0)
    d.release(80)
    await asyncio.gather(*tasks)
    assert order == ["p20-a", "p20-b", "p10-a", "p10-b"]


async def test_a_held_request_that_gets_no_room_in_time_is_refused_to_the_caller() -> None:
    clock = FakeClock()
    d = Door(
        max_in_flight_events=100,
        max_in_flight_requests=4,
        monotonic=clock.monotonic,
        hold_s=0.05,
    )
    d.admit({P10: 50})
    assert await d.hold({P10: 1}) is False, "past hold_s: the caller defers what does not fit"
    assert d.statistics().held_events == 0
    assert d.admit({P10: 1}) == {P10: 0}


async def test_holding_is_bounded_at_four_budgets_of_events() -> None:
    d, _ = door(events=10)
    d.admit({P10: 5})
    waiting = [asyncio.create_task(d.hold({P10: 10})) for _ in range(4)]
    await asyncio.sleep(0)
    assert d.statistics().held_events == 40
    assert await d.hold({P10: 1}) is False, "41 events would wait: not held"
    for t in waiting:
        t.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert d.statistics().held_events == 0, "a caller gone away leaves nothing held"
    assert d.in_flight_events == 5


async def test_held_requests_do_not_count_towards_the_soft_request_bound() -> None:
    d, _ = door(events=100, requests=1)
    d.admit({P10: 50})
    d.enter_read()
    held = asyncio.create_task(d.hold({P10: 5}))
    await asyncio.sleep(0)
    d.enter_read()  # a second request: one over the soft bound, but the first only waits
    assert d.admit({P20: 5}) == {P20: 5}
    d.release(55)
    assert await held is True


async def test_a_request_with_p30_is_never_held() -> None:
    d, _ = door()
    with pytest.raises(ValueError, match="P30"):
        await d.hold({P30: 1, P10: 1})


def test_the_hint_is_the_time_the_events_in_flight_take_to_drain() -> None:
    d, clock = door(events=10_000)
    d.admit({P30: 2000})
    assert d.retry_after_ms() == 500, "no rate measured yet: a quarter of the cap"
    clock.advance(1.0)
    d.release(1000)  # 1,000 events answered in the last second
    assert d.in_flight_events == 1000
    assert d.retry_after_ms() == 1000
    d.admit({P30: 5000})
    assert d.retry_after_ms() == 2000, "capped"
    d.release(6000)
    assert d.retry_after_ms() == 20, "floored"


def test_status_document() -> None:
    d, _ = door(events=10)
    d.admit({P10: 7})
    doc = msgspec.to_builtins(door_status(d))
    assert doc["in_flight_events"] == 5
    assert doc["max_in_flight_events"] == 10
    assert doc["classes"] == {
        "P30": {"admitted": 0, "deferred": 0, "limit_events": 10},
        "P20": {"admitted": 0, "deferred": 0, "limit_events": 8},
        "P10": {"admitted": 5, "deferred": 2, "limit_events": 5},
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_in_flight_events": 0, "max_in_flight_requests": 1},
        {"max_in_flight_events": 1, "max_in_flight_requests": 0},
        {"max_in_flight_events": 1, "max_in_flight_requests": 1, "shares": {P30: 1.0}},
        {"max_in_flight_events": 1, "max_in_flight_requests": 1, "queue_target_s": 0},
        {"max_in_flight_events": 1, "max_in_flight_requests": 1, "hold_s": -1},
        {
            "max_in_flight_events": 1,
            "max_in_flight_requests": 1,
            "shares": {P30: 1.0, P20: 0.0, P10: 0.5},
        },
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"door bounds|share of|queue_target_s"):
        Door(monotonic=FakeClock().monotonic, **kwargs)  # type: ignore[arg-type]
