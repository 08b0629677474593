"""Flow-control signals: tell ingest, per class, whether to admit more or less.

docs/flow-control.md, "What triggers a DECREASE".

Every ``flow_control_interval_s`` each orchestrator looks at its own buffer and decides, per
SLO class:

- **DECREASE** when the class is falling behind: its oldest ready task has waited more than
  ``decrease_at`` * SLO (default half the SLO: at that point the queue, not the processors,
  is what makes events late), or it has late tasks (past their deadline), or its lane is
  paused because the buffer reached the lane's memory share;
- **INCREASE** when it is comfortably inside its SLO: nothing late, lane not paused, and the
  oldest ready task younger than ``increase_below`` * SLO (default a fifth);
- nothing in between (hold), so capacity does not oscillate around the threshold.

The signal carries the orchestrator index, queue depth, oldest ready age and the paused
lanes, so operators (and the SLO service's logs) can see why. Pure: `evaluate` takes the
buffer statistics and returns signals; the service publishes them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    LANE_OF_PRIORITY,
    SLO_SECONDS,
    Priority,
    to_pb_lane,
    to_pb_priority,
)
from eventgw.core.lifecycle import sleep_or_stop

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Sequence

    from eventgw.core.envelope import BufferLane
    from eventgw.kafka.producer import Delivery, Record
    from eventgw.metrics.backend import Metrics
    from eventgw.orchestrator.priority_buffer import BufferStatistics

logger = logging.getLogger(__name__)

Action = Literal["INCREASE", "DECREASE"]


@dataclass(frozen=True, slots=True)
class Signal:
    """One flow-control decision for one class."""

    priority: Priority
    action: Action
    orchestrator_index: int
    queue_depth: int
    oldest_ready_age_s: float
    paused_lanes: frozenset[BufferLane]
    reason: str


def evaluate(
    stats: BufferStatistics,
    index: int,
    *,
    decrease_at: float = 0.5,
    increase_below: float = 0.2,
) -> list[Signal]:
    """Decide INCREASE / DECREASE / hold per class from a buffer snapshot."""
    if not 0 < increase_below < decrease_at:
        raise ValueError(
            f"need 0 < increase_below < decrease_at, got {increase_below}, {decrease_at}"
        )
    out: list[Signal] = []
    for priority, lane in LANE_OF_PRIORITY.items():
        cls = stats.classes[priority]
        slo = SLO_SECONDS[priority]
        age = cls.oldest_ready_age_s or 0.0
        paused = lane in stats.paused_lanes
        if paused or cls.late_ready or age > decrease_at * slo:
            reason = "paused" if paused else ("late" if cls.late_ready else "queueing")
            action: Action | None = "DECREASE"
        elif age < increase_below * slo:
            action, reason = "INCREASE", "healthy"
        else:
            action, reason = None, ""
        if action is not None:
            out.append(
                Signal(
                    priority=priority,
                    action=action,
                    orchestrator_index=index,
                    queue_depth=cls.ready + cls.delayed,
                    oldest_ready_age_s=age,
                    paused_lanes=stats.paused_lanes,
                    reason=reason,
                )
            )
    return out


def encode(signal: Signal, emitted_at_ms: int) -> bytes:
    """The flow-control record value: a serialized ``eventgw.v1.FlowControlSignal``.

    The message is defined once in proto/eventgw/v1/eventgw.proto; ingest decodes the same
    message (`eventgw.ingest.flow_control.decode`).
    """
    msg = pb.FlowControlSignal(
        orchestrator_index=signal.orchestrator_index,
        priority=to_pb_priority(signal.priority),
        action=_ACTIONS[signal.action],
        queue_depth=signal.queue_depth,
        oldest_ready_age_s=signal.oldest_ready_age_s,
        paused_lanes=[to_pb_lane(lane) for lane in sorted(signal.paused_lanes)],
        reason=signal.reason,
        emitted_at_ms=emitted_at_ms,
    )
    value: bytes = msg.SerializeToString()
    return value


_ACTIONS: Final[dict[Action, pb.FlowAction]] = {
    "INCREASE": pb.FLOW_ACTION_INCREASE,
    "DECREASE": pb.FLOW_ACTION_DECREASE,
}


class Producer(Protocol):
    """What the emitter needs (`BatchProducer`)."""

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]: ...


class FlowControlEmitter:
    """Publishes `evaluate`'s signals every ``interval_s`` until ``stop`` is set.

    A failed publish is logged and skipped: the next period sends fresh signals, and a
    stale signal is worth nothing. Signals Kafka confirmed are counted in
    ``eventgw_orchestrator_flow_control_signals_total{class, action}``.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        index: int,
        stats: Callable[[], BufferStatistics],
        interval_s: float,
        metrics: Metrics,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._index = index
        self._stats = stats
        self._interval_s = interval_s
        self.sent = 0
        signals = metrics.counter(
            "eventgw_orchestrator_flow_control_signals_total",
            "flow-control signals published, by class and action",
            ["class", "action"],
        )
        self._m_signals = {
            (p, action): signals.labels(p.name, action)
            for p in LANE_OF_PRIORITY
            for action in ("INCREASE", "DECREASE")
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Emit until ``stop``."""
        while not stop.is_set():
            await sleep_or_stop(stop, self._interval_s)
            if stop.is_set():
                return
            signals = evaluate(self._stats(), self._index)
            now = time.time_ns() // 1_000_000
            records: list[Record] = [
                (s.priority.name.encode(), encode(s, now), []) for s in signals
            ]
            deliveries = await self._producer.send(self._topic, records)
            failed = [d.error for d in deliveries if not d.ok]
            if failed:
                logger.warning("flow_control.publish_failed error=%s", failed[0])
            self.sent += len(records) - len(failed)
            # Once per signal and interval (a few a second at most): a plain counter is fine.
            for s, d in zip(signals, deliveries, strict=False):
                if d.ok:
                    self._m_signals[s.priority, s.action].inc()
            for s in signals:
                if s.action == "DECREASE":
                    logger.info(
                        "flow_control.decrease class=%s reason=%s depth=%d oldest_s=%.1f",
                        s.priority.name,
                        s.reason,
                        s.queue_depth,
                        s.oldest_ready_age_s,
                    )
