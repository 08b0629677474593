"""Ingest's flow-control listener survives any bytes on the flow-control topic.

The fault: a record ``{"queue_depth": 1e400, ...}`` (or deeply nested JSON) raised an
exception the listener did not catch, and every ingest process exited. The record is now an
``eventgw.v1.FlowControlSignal``; each one is decoded by `decode`, which either returns a
signal or raises ValueError (the JSON records of earlier versions included); the listener
counts and skips the rest and goes on.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.admission import AimdConfig
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import BUFFER_LANES, Priority, from_pb_lane, to_pb_lane
from eventgw.ingest.flow_control import MAX_SIGNAL_BYTES, FlowControlListener, decode
from eventgw.ingest.slo_service import SloService
from eventgw.kafka.consumer import ConsumedRecord
from eventgw.metrics.backend import Metrics
from eventgw.orchestrator.flow_control import Signal, encode


def signal_msg(**fields: Any) -> pb.FlowControlSignal:
    values: dict[str, Any] = {
        "orchestrator_index": 0,
        "priority": pb.P10,
        "action": pb.FLOW_ACTION_DECREASE,
        "queue_depth": 12,
        "oldest_ready_age_s": 700.5,
        "paused_lanes": [pb.LANE_P10],
        "reason": "queueing",
        "emitted_at_ms": 1_700_000_000_000,
    }
    values.update(fields)
    return pb.FlowControlSignal(**{k: v for k, v in values.items() if v is not ...})


def raw(**fields: Any) -> bytes:
    value: bytes = signal_msg(**fields).SerializeToString()
    return value


# What orchestrators before the protobuf record wrote: must be refused, never misread.
OLD_JSON = json.dumps(
    {
        "orchestrator_index": 0,
        "class": "P10",
        "action": "DECREASE",
        "queue_depth": 12,
        "oldest_ready_age_s": 700.5,
        "paused_lanes": ["p10"],
        "reason": "queueing",
        "emitted_at_ms": 1_700_000_000_000,
    },
    separators=(",", ":"),
).encode()


def test_the_orchestrators_encoding_decodes() -> None:
    value = encode(
        Signal(Priority.P20, "INCREASE", 3, 5, 1.25, frozenset({"p10", "offload"}), "healthy"),
        1_700_000_000_123,
    )
    assert pb.FlowControlSignal.FromString(value).reason == "healthy"
    signal = decode(value)
    assert signal.priority is Priority.P20
    assert signal.action == "INCREASE"
    assert signal.orchestrator_index == 3
    assert signal.queue_depth == 5
    assert signal.oldest_ready_age_s == 1.25
    assert signal.paused_lanes == frozenset({"p10", "offload"})
    assert signal.emitted_at_ms == 1_700_000_000_123


def test_every_buffer_lane_has_its_wire_value_and_back() -> None:
    # pb.Lane is numbered in the order of BUFFER_LANES; a lane added on one side only fails here.
    wire = {name: number for name, number in pb.Lane.items() if number != pb.LANE_UNSPECIFIED}
    assert {f"LANE_{lane.upper()}": to_pb_lane(lane) for lane in BUFFER_LANES} == wire
    assert [from_pb_lane(to_pb_lane(lane)) for lane in BUFFER_LANES] == list(BUFFER_LANES)
    for number in (0, len(BUFFER_LANES) + 1, -1):
        with pytest.raises(ValueError, match="unknown lane number"):
            from_pb_lane(number)


def test_lanes_unknown_to_this_version_are_ignored_not_refused() -> None:
    signal = decode(raw(paused_lanes=[pb.LANE_RETRY, 99]))
    assert signal.paused_lanes == frozenset({"retry"})


def test_fields_unknown_to_this_version_are_ignored() -> None:
    extra = b"\xa0\x06\x01"  # field 100, varint 1: what a newer orchestrator might add
    assert decode(raw() + extra).queue_depth == 12


NESTED_GROUPS = b"\x5b" * 100_000  # field 11 start-group, over and over
POISON = [
    pytest.param(OLD_JSON, id="old-json-record"),
    pytest.param(b'{"class":"P10","x":' + b"[" * 3000 + b"]" * 3000 + b"}", id="nested-json"),
    pytest.param(NESTED_GROUPS[:MAX_SIGNAL_BYTES], id="nested-groups"),
    pytest.param(b"\xff\xfe{}", id="not-protobuf"),
    pytest.param(b"", id="empty"),
    pytest.param(b"null", id="null"),
    pytest.param(raw()[:-3], id="truncated"),
    pytest.param(raw(priority=...), id="missing-class"),
    pytest.param(raw(priority=99), id="unknown-class"),
    pytest.param(raw(action=...), id="missing-action"),
    pytest.param(raw(action=7), id="unknown-action"),
    pytest.param(raw(queue_depth=-1), id="depth-negative"),
    pytest.param(raw(orchestrator_index=1_000_001), id="index-over-the-limit"),
    pytest.param(raw(oldest_ready_age_s=float("nan")), id="age-NaN"),
    pytest.param(raw(oldest_ready_age_s=float("inf")), id="age-Infinity"),
    pytest.param(raw(oldest_ready_age_s=-1.0), id="age-negative"),
    pytest.param(raw(emitted_at_ms=...), id="missing-emitted"),
    pytest.param(raw(emitted_at_ms=-5), id="emitted-negative"),
    pytest.param(raw(emitted_at_ms=10**16), id="emitted-past-15-digits"),
    pytest.param(raw(paused_lanes=[pb.LANE_P10] * 100), id="too-many-lanes"),
    pytest.param(raw(reason="x" * (MAX_SIGNAL_BYTES + 1)), id="over-the-size-cap"),
]


@pytest.mark.parametrize("value", POISON)
def test_decode_refuses_poison_with_a_value_error(value: bytes) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        decode(value)


class FakeReader:
    """Hands out the given batches, then sets ``stop``."""

    def __init__(self, batches: list[list[bytes]], stop: asyncio.Event) -> None:
        self._batches = batches
        self._stop = stop
        self._offset = 0

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        if not self._batches:
            self._stop.set()
            return []
        out = []
        for value in self._batches.pop(0):
            out.append(ConsumedRecord("flow-control", 0, self._offset, b"P10", value, []))
            self._offset += 1
        return out


async def test_the_listener_counts_and_skips_poison_and_applies_what_follows() -> None:
    clock = FakeClock()
    slo = SloService(AimdConfig(), clock)
    metrics = Metrics()
    stop = asyncio.Event()
    good = raw(emitted_at_ms=clock.wall_ms())
    batches = [[p.values[0] for p in POISON] + [good]]
    listener = FlowControlListener(FakeReader(batches, stop), slo, metrics)  # type: ignore[arg-type]
    before = slo.capacity(Priority.P10)
    async with asyncio.timeout(30):
        await listener.run(stop)
    assert listener.invalid == len(POISON)
    assert listener.applied == 1
    assert slo.capacity(Priority.P10) < before, "the good DECREASE after the poison was applied"
    rendered = metrics.render().decode()
    assert f"eventgw_ingest_flow_control_invalid_total {float(len(POISON))}" in rendered


fields = st.sampled_from(
    [
        "orchestrator_index",
        "priority",
        "action",
        "queue_depth",
        "oldest_ready_age_s",
        "paused_lanes",
        "emitted_at_ms",
    ]
)
numbers = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=20)
)


def mutated(mutation: dict[str, Any]) -> bytes:
    msg = signal_msg()
    for field, value in mutation.items():
        try:
            if field == "paused_lanes":
                msg.paused_lanes[:] = value if isinstance(value, list) else [int(value)]
            else:
                setattr(msg, field, value)
        except (TypeError, ValueError, OverflowError):
            continue  # not a value this field can hold: the sender could not write it either
    out: bytes = msg.SerializeToString()
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutation=st.dictionaries(fields, numbers, max_size=3),
    noise=st.binary(max_size=64),
    cut=st.integers(min_value=0, max_value=60),
)
def test_decode_of_any_bytes_returns_a_signal_or_raises_value_error(
    mutation: dict[str, Any], noise: bytes, cut: int
) -> None:
    """Mutated signals, cut signals and random bytes: a bounded signal or ValueError only."""
    value = mutated(mutation)
    for candidate in (value, value[:cut], noise, value[:cut] + noise):
        try:
            signal = decode(candidate)
        except ValueError:
            continue
        assert signal.queue_depth >= 0
        assert signal.oldest_ready_age_s >= 0
        assert math.isfinite(signal.oldest_ready_age_s)
        assert 0 < signal.emitted_at_ms < 10**15
        assert signal.paused_lanes <= set(BUFFER_LANES)
