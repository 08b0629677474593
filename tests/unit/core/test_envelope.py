"""Tests for eventgw.core.envelope: SLO classes, lanes, headers and UUIDv7 event ids."""

from __future__ import annotations

import itertools
import re
import time
import uuid
from typing import get_args

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    BUFFER_LANES,
    DEFAULT_LANE_SHARES,
    H_ATTEMPT,
    H_CLASS,
    H_DEADLINE_MS,
    H_EVENT_ID,
    LANE_OF_PRIORITY,
    LANES,
    SLO_SECONDS,
    BufferLane,
    Lane,
    Priority,
    event_headers,
    header_value,
    new_event_id,
    new_event_ids,
)

UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P30", Priority.P30),
        ("p30", Priority.P30),
        ("30", Priority.P30),
        (" P20 ", Priority.P20),
        ("p10", Priority.P10),
        ("10", Priority.P10),
    ],
)
def test_priority_parse(text: str, expected: Priority) -> None:
    assert Priority.parse(text) is expected


@pytest.mark.parametrize("text", ["P40", "P0", "", "P", "high", "PP30", "P3O", "25", "p-10"])
def test_priority_parse_refuses_unknown_classes_naming_the_input(text: str) -> None:
    with pytest.raises(ValueError, match="unknown SLO class") as info:
        Priority.parse(text)
    assert repr(text) in str(info.value)
    assert info.value.__cause__ is None


def test_priority_order_and_values() -> None:
    assert Priority.P30 > Priority.P20 > Priority.P10
    assert [p.value for p in Priority] == [10, 20, 30]


def test_slo_seconds_match_the_spec() -> None:
    assert SLO_SECONDS == {Priority.P30: 5.0, Priority.P20: 60.0, Priority.P10: 1200.0}


def test_every_class_has_a_lane_and_offload_is_a_lane() -> None:
    assert LANE_OF_PRIORITY == {Priority.P30: "p30", Priority.P20: "p20", Priority.P10: "p10"}
    assert set(LANES) == {*LANE_OF_PRIORITY.values(), "offload"}


def test_the_lane_tuples_are_the_lane_types_and_every_buffer_lane_has_a_share() -> None:
    assert get_args(Lane) == LANES
    assert BUFFER_LANES == get_args(BufferLane) == (*LANES, "retry")
    assert set(DEFAULT_LANE_SHARES) == set(BUFFER_LANES)


def test_event_headers() -> None:
    event = pb.EventData(
        event_id="e-1", priority=pb.P30, slo_deadline_ms=1_700_000_005_000, attempt=2
    )
    assert event_headers(event) == [
        (H_EVENT_ID, b"e-1"),
        (H_CLASS, b"P30"),
        (H_DEADLINE_MS, b"1700000005000"),
        (H_ATTEMPT, b"2"),
    ]


def test_event_headers_of_unknown_class_is_empty() -> None:
    assert header_value(event_headers(pb.EventData(event_id="x")), H_CLASS) == b""


def test_header_value() -> None:
    headers = [("a", b"1"), ("b", b"2"), ("a", b"3")]
    assert header_value(headers, "a") == b"1"
    assert header_value(headers, "b") == b"2"
    assert header_value(headers, "c") is None
    assert header_value(None, "a") is None
    assert header_value([], "a") is None


# --- UUIDv7 ---------------------------------------------------------------------------------


def test_event_id_is_uuid7_shaped() -> None:
    for _ in range(100):
        text = new_event_id()
        assert UUID7_RE.match(text), text
        u = uuid.UUID(text)
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert str(u) == text


def test_event_id_carries_the_current_unix_ms() -> None:
    before = time.time_ns() // 1_000_000
    ms = uuid.UUID(new_event_id()).int >> 80
    after = time.time_ns() // 1_000_000
    # Earlier calls in this process may have borrowed a few ms ahead (counter overflow).
    assert before <= ms <= after + 50


def test_event_ids_strictly_increase_and_are_unique_over_10k_calls() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
    # Lexical order is numeric order: the string sort is the time sort.
    assert [uuid.UUID(i).int for i in ids] == sorted(uuid.UUID(i).int for i in ids)


def test_event_ids_sharing_a_millisecond_strictly_increase() -> None:
    """The counter orders ids made within one millisecond (the clock alone cannot)."""
    ids = new_event_ids(5_000)
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert len(set(stamps)) < len(ids) // 2, "most ids share a millisecond"
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert sorted(stamps) == stamps


# --- UUIDv7 in batches ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 500, 5_000])
def test_batched_event_ids_are_uuid7_shaped(n: int) -> None:
    ids = new_event_ids(n)
    assert len(ids) == n
    for text in ids:
        assert UUID7_RE.match(text), text
        u = uuid.UUID(text)
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert str(u) == text


def test_batched_event_ids_of_nothing_is_empty() -> None:
    assert new_event_ids(0) == []


def test_batched_event_ids_carry_the_current_unix_ms() -> None:
    before = time.time_ns() // 1_000_000
    first, *_ = new_event_ids(10)
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(first).int >> 80 <= after + 50


def test_batched_event_ids_strictly_increase_within_and_across_batches_and_single_calls() -> None:
    ids: list[str] = []
    for n in (1, 7, 500, 3, 4_100, 1):
        ids += new_event_ids(n)
        ids.append(new_event_id())
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
    assert [uuid.UUID(i).int for i in ids] == sorted(uuid.UUID(i).int for i in ids)


def test_batched_event_ids_random_bits_differ() -> None:
    rand_b = [uuid.UUID(i).int & ((1 << 62) - 1) for i in new_event_ids(1_000)]
    assert len(set(rand_b)) == len(rand_b)
    # Below the 42-bit counter: 32 random bits per id, not a sequence (a few birthday
    # collisions among 1,000 draws are possible, hundreds are not).
    low = [uuid.UUID(i).int & 0xFFFF_FFFF for i in new_event_ids(1_000)]
    assert len(set(low)) > 990
    assert sorted(low) != low
