"""The door: the lower classes are deferred first under saturation; P30 is taken to the end."""

from __future__ import annotations

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
        {
            "max_in_flight_events": 1,
            "max_in_flight_requests": 1,
            "shares": {P30: 1.0, P20: 0.0, P10: 0.5},
        },
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"door bounds|share of"):
        Door(monotonic=FakeClock().monotonic, **kwargs)  # type: ignore[arg-type]
