"""SLO service: per-class admission capacity steered by AIMD on flow-control signals.

Each SLO class has an admission *capacity* in events/s and a token bucket refilled at that
capacity. An event that finds a token keeps its class lane; an event that finds none is
*shed*: the scheduler sends it to the offload lane. Shed events are offloaded, never
dropped — the offload lane is durable and processed when there is room, and the event
keeps its original deadline.

AIMD (additive increase, multiplicative decrease), as in TCP congestion control:
orchestrators compare each class's queueing delay with its SLO and publish INCREASE or
DECREASE on the flow-control topic. A DECREASE multiplies the capacity by
``decrease_factor`` (back off fast: queues that are already late must stop growing now); an
INCREASE adds ``increase_step`` (probe up slowly: overshooting refills the queues we just
drained). From any start this converges to a capacity just under what the processors
sustain, and several gateways sharing the same orchestrators converge to a fair share.

Cool-down: every orchestrator watches its own partitions, so one congestion episode
reaches us as N DECREASE signals (one per orchestrator, every flow-control period). Applying
each would cut capacity by ``decrease_factor ** N`` for a single cause. At most one
decrease per class is applied per ``cooldown_s`` window; the others are ignored. For the
same reason an INCREASE inside the window after a decrease is ignored too: when the
orchestrators disagree, the congested one wins, otherwise healthy replicas would undo each
decrease before it could take effect.

Alert: every applied decrease counts as a *decrement* (also one that is clamped at the
floor, which is sustained congestion). More than ``alert_decrements_per_minute`` P10
decrements in the last 60 s means serious congestion (docs/flow-control.md, "The SLO
service"); `serious_congestion` reports it and the ingest service raises the alert (a
metric, a log line, the status page). The alert
can only fire when ``60 / cooldown_s`` of P10 exceeds that threshold: the default P10
cool-down of 5 s allows 12 decrements a minute, so the alert means "decreasing in at least
11 of the last 12 windows".

P30 is never shed unless ``offload_p30``: a customer is waiting on it, and the offload lane
would break its 5 s SLO for sure. ``enabled=False`` admits everything (capacity tracking
and the alert keep running, so re-enabling starts from a current capacity).

This module is pure: no I/O, no asyncio, time from an injected `Clock`. It is not
thread-safe; the ingest service calls it from its event loop only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from eventgw.config.admission import MAX_DECREMENTS_TRACKED
from eventgw.core.envelope import Priority

if TYPE_CHECKING:
    from collections.abc import Mapping

    from eventgw.config.admission import AimdConfig, AimdParams, ClassName
    from eventgw.core.clock import Clock
    from eventgw.core.envelope import BufferLane

SignalAction = Literal["INCREASE", "DECREASE"]
SignalOutcome = Literal[
    "increased",  # INCREASE applied (possibly clamped at the ceiling)
    "decreased",  # DECREASE applied and counted as a decrement (possibly clamped at the floor)
    "cooldown",  # ignored: inside the cool-down window of the last decrease
    "stale",  # ignored: emitted longer than max_signal_age_s ago
]

_WINDOW_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class FlowSignal:
    """One flow-control record from an orchestrator about one SLO class.

    Raises:
        ValueError: an unknown action or a negative index, depth or age.
    """

    priority: Priority
    action: SignalAction
    orchestrator_index: int
    queue_depth: int
    oldest_ready_age_s: float
    paused_lanes: frozenset[BufferLane]
    emitted_at_ms: int  # wall clock of the orchestrator

    def __post_init__(self) -> None:
        if self.action not in ("INCREASE", "DECREASE"):
            raise ValueError(f"action must be INCREASE or DECREASE, got {self.action!r}")
        if self.orchestrator_index < 0:
            raise ValueError(f"orchestrator_index must be >= 0, got {self.orchestrator_index}")
        if self.queue_depth < 0:
            raise ValueError(f"queue_depth must be >= 0, got {self.queue_depth}")
        if self.oldest_ready_age_s < 0:
            raise ValueError(f"oldest_ready_age_s must be >= 0, got {self.oldest_ready_age_s}")


@dataclass(frozen=True, slots=True)
class SloClassStatistics:
    """Admission state of one class at the time of `SloService.statistics`."""

    capacity: float  # events/s
    tokens: float  # events admissible right now without waiting
    decrements_last_minute: int
    admitted: int  # events kept on their class lane since start
    shed: int  # events sent to the offload lane since start
    signals_ignored: int  # cool-down and stale signals since start


@dataclass(frozen=True, slots=True)
class SloStatistics:
    """Snapshot of `SloService` for metrics, logs and the status page."""

    enabled: bool
    offload_p30: bool
    classes: Mapping[Priority, SloClassStatistics]
    serious_congestion: bool


class _ClassState:
    """Mutable per-class state. Invariants: floor <= capacity <= ceiling, 0 <= tokens <= depth."""

    __slots__ = (
        "admitted",
        "bypass",
        "capacity",
        "decrements",
        "depth",
        "ignored",
        "last_decrease",
        "params",
        "refilled_at",
        "sample_admitted",
        "sample_at",
        "shed",
        "tokens",
    )

    def __init__(self, params: AimdParams, now: float) -> None:
        self.params = params
        self.capacity = params.initial
        self.depth = params.initial * params.burst_s
        self.tokens = self.depth  # start full: the first burst after start-up is admitted
        self.refilled_at = now
        self.last_decrease = -math.inf
        self.decrements: deque[float] = deque(maxlen=MAX_DECREMENTS_TRACKED)
        self.admitted = 0
        self.sample_admitted = 0  # `admitted` at the last signal, to measure the admit rate
        self.sample_at = now
        self.shed = 0
        self.ignored = 0
        self.bypass = False  # admit everything: disabled, or P30 without offload_p30

    def refill(self, now: float) -> None:
        elapsed = now - self.refilled_at
        if elapsed > 0:
            self.tokens = min(self.depth, self.tokens + elapsed * self.capacity)
            self.refilled_at = now

    def set_capacity(self, capacity: float) -> None:
        # Callers refill first, so tokens earned so far were earned at the old rate.
        params = self.params
        self.capacity = min(params.ceiling, max(params.floor, capacity))
        self.depth = self.capacity * params.burst_s
        self.tokens = min(self.tokens, self.depth)

    def decrements_since(self, since: float) -> int:
        decrements = self.decrements
        while decrements and decrements[0] <= since:
            decrements.popleft()
        return len(decrements)


class SloService:
    """Per-class admission capacity (AIMD) with a token bucket per class; an `Admission`.

    State per class: ``capacity`` (events/s, always within [floor, ceiling] of the current
    params) and a token bucket of depth ``capacity * burst_s`` refilled at ``capacity``,
    full at start. Capacity moves only through `on_signal` and `apply_config`; tokens only
    through admission and the passage of time.

    Nothing here blocks or raises on the hot path; admission never waits for tokens — the
    answer is now or the offload lane.
    """

    def __init__(self, config: AimdConfig, clock: Clock) -> None:
        self._clock = clock
        self._config = config
        now = clock.monotonic()
        self._classes = {p: _ClassState(config.classes[_name(p)], now) for p in Priority}
        self._p10 = self._classes[Priority.P10]
        self._set_bypass(config)

    @property
    def config(self) -> AimdConfig:
        """The config in force."""
        return self._config

    def admit(self, priority: Priority, company_id: str) -> bool:
        """Take one token of ``priority``; False means: send the event to the offload lane.

        ``company_id`` is not used for admission (per-company isolation is the dynamic
        classifier's job); it is part of the `Admission` protocol.
        """
        # Per event on the ingest hot path: `admit_many` inlined for n == 1.
        state = self._classes[priority]
        if state.bypass:
            state.admitted += 1
            return True
        now = self._clock.monotonic()
        tokens = state.tokens + (now - state.refilled_at) * state.capacity
        if tokens > state.depth:
            tokens = state.depth
        state.refilled_at = now
        if tokens >= 1.0:
            state.tokens = tokens - 1.0
            state.admitted += 1
            return True
        state.tokens = tokens
        state.shed += 1
        return False

    def admit_many(self, priority: Priority, n: int) -> int:
        """Take up to ``n`` tokens of ``priority`` at once; returns how many were taken.

        The caller keeps that many events of the batch on the class lane and offloads the
        rest. Cheaper per event than `admit` for a batch of one class.

        Raises:
            ValueError: ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        state = self._classes[priority]
        if state.bypass:
            state.admitted += n
            return n
        now = self._clock.monotonic()
        tokens = state.tokens + (now - state.refilled_at) * state.capacity
        if tokens > state.depth:
            tokens = state.depth
        state.refilled_at = now
        admitted = n if n <= tokens else int(tokens)
        state.tokens = tokens - admitted
        state.admitted += admitted
        state.shed += n - admitted
        return admitted

    def on_signal(self, signal: FlowSignal) -> SignalOutcome:
        """Apply one flow-control signal to its class; returns what was done with it.

        DECREASE: ``capacity = max(floor, min(capacity, admitted rate) * decrease_factor)``
        where the admitted rate is measured since the previous signal, at most once per
        ``cooldown_s`` per class, counted as a decrement. INCREASE: ``capacity =
        min(ceiling, capacity + increase_step)``, except inside the cool-down window after a
        decrease. A signal emitted more than ``max_signal_age_s`` ago (wall clock) is
        ignored: a lagging flow-control consumer must not replay old congestion.
        """
        state = self._classes[signal.priority]
        if self._clock.wall_ms() - signal.emitted_at_ms > self._config.max_signal_age_s * 1000:
            state.ignored += 1
            return "stale"
        now = self._clock.monotonic()
        params = state.params
        if now - state.last_decrease < params.cooldown_s:
            state.ignored += 1
            return "cooldown"
        state.refill(now)
        # The rate actually admitted since the previous signal. A DECREASE cuts from it, not
        # from the capacity: a capacity far above the real load (the default starts at the
        # ceiling) would otherwise take many cool-downs to come down to where it matters.
        elapsed = now - state.sample_at
        admitted_rate = (state.admitted - state.sample_admitted) / elapsed if elapsed > 0 else 0.0
        state.sample_admitted, state.sample_at = state.admitted, now
        if signal.action == "DECREASE":
            base = min(state.capacity, admitted_rate) if admitted_rate > 0 else state.capacity
            state.set_capacity(base * params.decrease_factor)
            state.last_decrease = now
            state.decrements.append(now)
            return "decreased"
        state.set_capacity(state.capacity + params.increase_step)
        return "increased"

    def decrements_last_minute(self, priority: Priority) -> int:
        """Decreases applied to ``priority`` in the last 60 s (monotonic clock)."""
        return self._classes[priority].decrements_since(self._clock.monotonic() - _WINDOW_S)

    def serious_congestion(self) -> bool:
        """True while P10 decrements in the last minute exceed ``alert_decrements_per_minute``."""
        now = self._clock.monotonic()
        return (
            self._p10.decrements_since(now - _WINDOW_S) > self._config.alert_decrements_per_minute
        )

    def capacity(self, priority: Priority) -> float:
        """Current admission capacity of ``priority`` in events/s."""
        return self._classes[priority].capacity

    def apply_config(self, config: AimdConfig) -> None:
        """Hot-apply new parameters, keeping state.

        Capacity is clamped into the new [floor, ceiling] (``initial`` applies at start-up
        only); tokens earned so far are kept up to the new bucket depth; counters,
        decrements and the cool-down clock carry over.
        """
        now = self._clock.monotonic()
        for priority, state in self._classes.items():
            state.refill(now)
            state.params = config.classes[_name(priority)]
            state.set_capacity(state.capacity)
        self._config = config
        self._set_bypass(config)

    def _set_bypass(self, config: AimdConfig) -> None:
        # Decided once per config, not per event: comparing enum members costs more than
        # the whole token-bucket update on CPython 3.11.
        for priority, state in self._classes.items():
            p30_protected = priority is Priority.P30 and not config.offload_p30
            state.bypass = not config.enabled or p30_protected

    def statistics(self) -> SloStatistics:
        """A snapshot of every class (refills the buckets to now first)."""
        now = self._clock.monotonic()
        classes: dict[Priority, SloClassStatistics] = {}
        for priority, state in self._classes.items():
            state.refill(now)
            classes[priority] = SloClassStatistics(
                capacity=state.capacity,
                tokens=state.tokens,
                decrements_last_minute=state.decrements_since(now - _WINDOW_S),
                admitted=state.admitted,
                shed=state.shed,
                signals_ignored=state.ignored,
            )
        return SloStatistics(
            enabled=self._config.enabled,
            offload_p30=self._config.offload_p30,
            classes=classes,
            serious_congestion=(
                classes[Priority.P10].decrements_last_minute
                > self._config.alert_decrements_per_minute
            ),
        )


_NAMES: Final[Mapping[Priority, ClassName]] = MappingProxyType(
    {Priority.P10: "P10", Priority.P20: "P20", Priority.P30: "P30"}
)


def _name(priority: Priority) -> ClassName:
    return _NAMES[priority]
