"""Ingest's flow-control listener survives any bytes on the flow-control topic.

The fault: a record ``{"queue_depth": 1e400, ...}`` (or deeply nested JSON) raised an
exception the listener did not catch, and every ingest process exited. Each record is
decoded by `decode`, which either returns a signal or raises ValueError; the listener counts
and skips the rest and goes on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventgw.config.admission import AimdConfig
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.ingest.flow_control import MAX_SIGNAL_BYTES, FlowControlListener, decode
from eventgw.ingest.slo_service import SloService
from eventgw.kafka.consumer import ConsumedRecord
from eventgw.metrics.backend import Metrics
from eventgw.orchestrator.flow_control import Signal, encode


def signal_doc(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "orchestrator_index": 0,
        "class": "P10",
        "action": "DECREASE",
        "queue_depth": 12,
        "oldest_ready_age_s": 700.5,
        "paused_lanes": ["p10"],
        "reason": "queueing",
        "emitted_at_ms": 1_700_000_000_000,
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not ...}


def raw(**fields: Any) -> bytes:
    return json.dumps(signal_doc(**fields)).encode()


def literal(field: str, text: bytes) -> bytes:
    """A signal whose ``field`` is the JSON number ``text`` as written (json.dumps cannot)."""
    return raw(**{field: 7}).replace(f'"{field}": 7'.encode(), f'"{field}": '.encode() + text)


def test_the_orchestrators_encoding_decodes() -> None:
    value = encode(
        Signal(Priority.P20, "INCREASE", 3, 5, 1.25, frozenset({"p10", "offload"}), "healthy"),
        1_700_000_000_123,
    )
    signal = decode(value)
    assert signal.priority is Priority.P20
    assert signal.action == "INCREASE"
    assert signal.orchestrator_index == 3
    assert signal.queue_depth == 5
    assert signal.oldest_ready_age_s == 1.25
    assert signal.paused_lanes == frozenset({"p10", "offload"})
    assert signal.emitted_at_ms == 1_700_000_000_123


DEEP = b"[" * 100_000 + b"]" * 100_000
POISON = [
    pytest.param(literal("queue_depth", b"1e400"), id="int-1e400"),
    pytest.param(literal("oldest_ready_age_s", b"1e400"), id="float-1e400"),
    pytest.param(literal("oldest_ready_age_s", b"-1e400"), id="float-minus-1e400"),
    pytest.param(literal("emitted_at_ms", b"1e400"), id="ms-1e400"),
    pytest.param(raw(oldest_ready_age_s=float("nan")), id="NaN-literal"),
    pytest.param(raw(oldest_ready_age_s=float("inf")), id="Infinity-literal"),
    pytest.param(literal("queue_depth", b"9" * 5000), id="5000-digit-int"),
    pytest.param(raw(queue_depth=2**64), id="int-past-64-bits"),
    pytest.param(b'{"class":"P10","x":' + DEEP + b"}", id="deeply-nested-unknown-field"),
    pytest.param(DEEP, id="deeply-nested-array"),
    pytest.param(literal("paused_lanes", b"[" * 3000 + b"]" * 3000), id="nested-lanes"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b"", id="empty"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="array"),
    pytest.param(raw(queue_depth="12"), id="depth-a-string"),
    pytest.param(raw(queue_depth=True), id="depth-a-bool"),
    pytest.param(raw(queue_depth=-1), id="depth-negative"),
    pytest.param(raw(queue_depth=1.5), id="depth-a-float"),
    pytest.param(raw(orchestrator_index=-1), id="index-negative"),
    pytest.param(raw(emitted_at_ms=10**16), id="emitted-past-15-digits"),
    pytest.param(raw(action="EXPLODE"), id="unknown-action"),
    pytest.param(raw(**{"class": "P99"}), id="unknown-class"),
    pytest.param(raw(**{"class": 30}), id="class-a-number"),
    pytest.param(raw(paused_lanes="p10"), id="lanes-a-string"),
    pytest.param(raw(paused_lanes={"p10": 1}), id="lanes-an-object"),
    pytest.param(raw(paused_lanes=["p10"] * 100), id="too-many-lanes"),
    pytest.param(raw(action=...), id="missing-action"),
    pytest.param(b" " * (MAX_SIGNAL_BYTES + 1) + raw(), id="over-the-size-cap"),
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


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
fields = st.sampled_from(
    [
        "orchestrator_index",
        "class",
        "action",
        "queue_depth",
        "oldest_ready_age_s",
        "paused_lanes",
        "emitted_at_ms",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutation=st.dictionaries(fields, json_values, max_size=3),
    noise=st.binary(max_size=64),
    cut=st.integers(min_value=0, max_value=400),
)
def test_decode_of_any_bytes_returns_a_signal_or_raises_value_error(
    mutation: dict[str, Any], noise: bytes, cut: int
) -> None:
    """Mutated signals, cut signals and random bytes: a bounded signal or ValueError only."""
    text = json.dumps(signal_doc(**mutation)).encode()
    for value in (text, text[:cut], noise, text[:cut] + noise):
        try:
            signal = decode(value)
        except ValueError:
            continue
        assert signal.queue_depth >= 0
        assert 0 <= signal.oldest_ready_age_s < float("inf")
        assert 0 <= signal.emitted_at_ms < 10**15
        assert len(signal.paused_lanes) <= 16
