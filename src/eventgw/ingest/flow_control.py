"""Ingest's side of flow control: read every flow-control partition, feed the SLO service.

The flow-control topic is written by the orchestrators (`eventgw.orchestrator.flow_control`),
but anything with write access can put any bytes there, and every ingest process reads every
record. So a record (an ``eventgw.v1.FlowControlSignal``) is decoded into bounded, typed
values or refused (`decode` raises only ValueError), and a refused record is counted, logged
and skipped: one bad record must never stop admission control, let alone exit ingest
(docs/flow-control.md, "What ingest accepts").
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final

from google.protobuf.message import DecodeError

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import Priority, from_pb_lane
from eventgw.ingest.slo_service import FlowSignal

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable

    from eventgw.core.envelope import BufferLane
    from eventgw.ingest.slo_service import SignalAction, SloService
    from eventgw.kafka.consumer import PartitionReader
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

MAX_SIGNAL_BYTES: Final = 4096
"""A signal is about 40 bytes; a larger record is refused before it is parsed."""

_MAX_WALL_MS: Final = 10**15  # a wall-clock ms value has 13 digits; 15 or more is not a time
_MAX_INDEX: Final = 1_000_000
_MAX_LANES: Final = 16
_ACTIONS: Final[dict[int, SignalAction]] = {
    pb.FLOW_ACTION_INCREASE: "INCREASE",
    pb.FLOW_ACTION_DECREASE: "DECREASE",
}


def decode(value: bytes) -> FlowSignal:
    """Parse one flow-control record value (``eventgw.v1.FlowControlSignal``) into a signal.

    Protobuf parses many byte strings that were never a signal (the empty string is a
    message with every field at its default), so every field is checked as well: the class
    and action must be set and known, the numbers in range. Unknown fields (anything a newer
    orchestrator adds) are ignored; so are lane numbers this version does not know.

    Raises:
        ValueError: the value is not a signal (too large, not a FlowControlSignal -- the JSON
            records of earlier versions among them --, a number out of range, an unknown or
            missing class or action). Nothing else: every failure of the parser is turned
            into this.
    """
    if len(value) > MAX_SIGNAL_BYTES:
        raise ValueError(f"{len(value)} bytes is over the limit of {MAX_SIGNAL_BYTES}")
    msg = pb.FlowControlSignal()
    try:
        msg.ParseFromString(value)
    except DecodeError as exc:
        raise ValueError(f"not a FlowControlSignal: {exc}") from None
    if msg.priority not in _PRIORITIES:
        raise ValueError(f"priority: unknown SLO class {msg.priority}")
    action = _ACTIONS.get(msg.action)
    if action is None:
        raise ValueError(f"action: {msg.action} is neither INCREASE nor DECREASE")
    if msg.orchestrator_index > _MAX_INDEX:
        raise ValueError(f"orchestrator_index: {msg.orchestrator_index} is over {_MAX_INDEX}")
    if msg.queue_depth < 0:
        raise ValueError(f"queue_depth: {msg.queue_depth} is negative")
    age = msg.oldest_ready_age_s
    if not (math.isfinite(age) and age >= 0):
        raise ValueError(f"oldest_ready_age_s: {age} is not a finite number >= 0")
    if not 0 < msg.emitted_at_ms < _MAX_WALL_MS:
        raise ValueError(f"emitted_at_ms: {msg.emitted_at_ms} is not a wall-clock time")
    if len(msg.paused_lanes) > _MAX_LANES:
        raise ValueError(f"paused_lanes: {len(msg.paused_lanes)} is over {_MAX_LANES}")
    return FlowSignal(
        priority=Priority(msg.priority),
        action=action,
        orchestrator_index=msg.orchestrator_index,
        queue_depth=msg.queue_depth,
        oldest_ready_age_s=age,
        paused_lanes=_known_lanes(msg.paused_lanes),
        emitted_at_ms=msg.emitted_at_ms,
    )


_PRIORITIES: Final = frozenset(int(p) for p in Priority)


def _known_lanes(numbers: Iterable[int]) -> frozenset[BufferLane]:
    lanes: set[BufferLane] = set()
    for number in numbers:
        try:
            lanes.add(from_pb_lane(number))
        except ValueError:
            continue  # a lane of a newer orchestrator: informational only, not worth refusing
    return frozenset(lanes)


class FlowControlListener:
    """Tails the flow-control topic and applies each signal to the SLO service.

    Every ingest instance reads every partition from its end (no consumer group): each one
    keeps its own admission state, and old signals describe a past that no longer matters.
    A record that is not a signal is counted (``eventgw_ingest_flow_control_invalid_total``),
    logged at WARNING and skipped.
    """

    def __init__(self, reader: PartitionReader, slo: SloService, metrics: Metrics) -> None:
        self._reader = reader
        self._slo = slo
        self._m_invalid = metrics.counter(
            "eventgw_ingest_flow_control_invalid_total",
            "flow-control records that are not signals (skipped)",
        )
        self.applied = 0
        self.invalid = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Apply signals until ``stop``."""
        while not stop.is_set():
            for record in await self._reader.poll_batch(500, 0.2):
                try:
                    signal = decode(record.value)
                except ValueError as exc:
                    self.invalid += 1
                    self._m_invalid.inc()
                    logger.warning(
                        "flow_control.invalid partition=%d offset=%d bytes=%d error=%s",
                        record.partition,
                        record.offset,
                        len(record.value),
                        exc,
                    )
                    continue
                outcome = self._slo.on_signal(signal)
                self.applied += 1
                if outcome == "decreased":
                    logger.info(
                        "slo.capacity_decreased class=%s capacity=%.0f from_orchestrator=%d",
                        signal.priority.name,
                        self._slo.capacity(signal.priority),
                        signal.orchestrator_index,
                    )
