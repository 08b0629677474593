"""Ingest's side of flow control: read every flow-control partition, feed the SLO service.

The flow-control topic is written by the orchestrators (`eventgw.orchestrator.flow_control`),
but anything with write access can put any bytes there, and every ingest process reads every
record. So a record is decoded into bounded, typed values or refused (`decode` raises only
ValueError), and a refused record is counted, logged and skipped: one bad record must never
stop admission control, let alone exit ingest (docs/flow-control.md, "What ingest accepts").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec

from eventgw.core.envelope import Priority
from eventgw.ingest.slo_service import FlowSignal

if TYPE_CHECKING:
    import asyncio

    from eventgw.ingest.slo_service import SloService
    from eventgw.kafka.consumer import PartitionReader
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

MAX_SIGNAL_BYTES: Final = 4096
"""A signal is about 200 bytes; a larger record is refused before it is parsed."""

_MAX_WALL_MS: Final = 10**15  # a wall-clock ms value has 13 digits; 15 or more is not a time
_MAX_INDEX: Final = 1_000_000
_MAX_LANES: Final = 16
_MAX_DEPTH: Final = 2**63 - 1  # an int64, as the orchestrator counts it
_MAX_ERROR_CHARS: Final = 200

_Lane = Annotated[str, msgspec.Meta(max_length=32)]


class _SignalDoc(msgspec.Struct):
    """The record's JSON, as `eventgw.orchestrator.flow_control.encode` writes it.

    Unknown fields (``reason``, anything a newer orchestrator adds) are ignored. msgspec
    refuses numbers out of range (``1e400``, integers past 64 bits) and JSON has no NaN.
    """

    orchestrator_index: Annotated[int, msgspec.Meta(ge=0, le=_MAX_INDEX)]
    priority: Annotated[str, msgspec.Meta(max_length=8)] = msgspec.field(name="class")
    action: Literal["INCREASE", "DECREASE"]
    queue_depth: Annotated[int, msgspec.Meta(ge=0, le=_MAX_DEPTH)]
    oldest_ready_age_s: Annotated[float, msgspec.Meta(ge=0)]
    emitted_at_ms: Annotated[int, msgspec.Meta(ge=0, lt=_MAX_WALL_MS)]
    paused_lanes: Annotated[list[_Lane], msgspec.Meta(max_length=_MAX_LANES)] = msgspec.field(
        default_factory=list
    )


_DECODER = msgspec.json.Decoder(_SignalDoc)


def decode(value: bytes) -> FlowSignal:
    """Parse one flow-control record value into a bounded signal.

    Raises:
        ValueError: the value is not a signal (too large, not UTF-8 JSON, nested too deeply,
            a number out of range, a wrong type, a missing field, an unknown class or action).
            Nothing else: every failure of the decoder is turned into this.
    """
    if len(value) > MAX_SIGNAL_BYTES:
        raise ValueError(f"{len(value)} bytes is over the limit of {MAX_SIGNAL_BYTES}")
    try:
        doc = _DECODER.decode(value)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError, and a ValueError
        raise ValueError(str(exc)[:_MAX_ERROR_CHARS]) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return FlowSignal(
        priority=Priority.parse(doc.priority),
        action=doc.action,
        orchestrator_index=doc.orchestrator_index,
        queue_depth=doc.queue_depth,
        oldest_ready_age_s=doc.oldest_ready_age_s,
        paused_lanes=frozenset(doc.paused_lanes),
        emitted_at_ms=doc.emitted_at_ms,
    )


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
