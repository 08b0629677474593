"""Flow-control signals: tell ingest, per class, whether to admit more or less (SYSTEM.md 2.4).

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from eventgw.core.envelope import SLO_SECONDS, Priority

if TYPE_CHECKING:
    from eventgw.orchestrator.priority_buffer import BufferStatistics

Action = Literal["INCREASE", "DECREASE"]
_LANE_OF = {Priority.P30: "p30", Priority.P20: "p20", Priority.P10: "p10"}


@dataclass(frozen=True, slots=True)
class Signal:
    """One flow-control decision for one class."""

    priority: Priority
    action: Action
    orchestrator_index: int
    queue_depth: int
    oldest_ready_age_s: float
    paused_lanes: frozenset[str]
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
    for priority, lane in _LANE_OF.items():
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
