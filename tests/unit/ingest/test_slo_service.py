"""Tests for eventgw.ingest.slo_service: AIMD capacity, token buckets, cool-down, alert."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventgw.config.admission import DEFAULT_AIMD_PARAMS, AimdConfig, AimdParams
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.ingest.scheduler import Admission, Scheduler
from eventgw.ingest.slo_service import FlowSignal, SloService

if TYPE_CHECKING:
    from eventgw.ingest.slo_service import SignalAction

P10, P20, P30 = Priority.P10, Priority.P20, Priority.P30


def params(**overrides: float) -> AimdParams:
    base: dict[str, float] = {
        "initial": 100,
        "floor": 10,
        "ceiling": 1000,
        "increase_step": 50,
        "decrease_factor": 0.5,
        "cooldown_s": 5,
        "burst_s": 1,
    }
    return AimdParams.model_validate(base | overrides)


def config(*, offload_p30: bool = False, enabled: bool = True, **overrides: float) -> AimdConfig:
    p = params(**overrides)
    return AimdConfig(
        enabled=enabled, classes={"P10": p, "P20": p, "P30": p}, offload_p30=offload_p30
    )


def signal(
    clock: FakeClock, priority: Priority, action: SignalAction, index: int = 0
) -> FlowSignal:
    return FlowSignal(
        priority=priority,
        action=action,
        orchestrator_index=index,
        queue_depth=1000,
        oldest_ready_age_s=3.0,
        paused_lanes=frozenset(),
        emitted_at_ms=clock.wall_ms(),
    )


def drain(slo: SloService, priority: Priority) -> int:
    """Take every token available now; returns how many."""
    return slo.admit_many(priority, 10**9)


# --- config models -------------------------------------------------------------------------


def test_defaults_cover_every_class_and_are_ordered() -> None:
    cfg = AimdConfig()
    assert set(cfg.classes) == {"P10", "P20", "P30"}
    p10 = cfg.classes["P10"]
    # Start unconstrained: a gateway that was never told of congestion offloads nothing.
    assert (p10.initial, p10.floor, p10.ceiling) == (200_000, 50, 200_000)
    for p in cfg.classes.values():
        assert p.floor <= p.initial <= p.ceiling
        assert 0 < p.decrease_factor < 1
    # The P10 alert (> 10 decrements/min) must be reachable with the default cool-down.
    assert 60 / cfg.classes["P10"].cooldown_s > cfg.alert_decrements_per_minute
    assert cfg.enabled
    assert not cfg.offload_p30


def test_missing_classes_take_the_defaults() -> None:
    cfg = AimdConfig.model_validate({"classes": {"P20": params().model_dump()}})
    assert cfg.classes["P20"] == params()
    assert cfg.classes["P10"] == DEFAULT_AIMD_PARAMS["P10"]
    assert cfg.classes["P30"] == DEFAULT_AIMD_PARAMS["P30"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"floor": 200},  # floor above initial
        {"ceiling": 50},  # ceiling below initial
        {"decrease_factor": 1.0},
        {"decrease_factor": 0.0},
        {"increase_step": 0},
        {"cooldown_s": -1},
        {"burst_s": 0},
        {"floor": 0, "initial": 0},
    ],
)
def test_invalid_params_are_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        params(**overrides)


def test_config_refuses_unknown_fields_and_classes() -> None:
    with pytest.raises(ValidationError):
        AimdConfig.model_validate({"bogus": 1})
    with pytest.raises(ValidationError):
        AimdConfig.model_validate({"classes": {"P40": params().model_dump()}})
    with pytest.raises(ValidationError):
        AimdParams.model_validate(params().model_dump() | {"extra": 1})
    with pytest.raises(ValidationError):
        AimdConfig(alert_decrements_per_minute=-1)


def test_config_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        AimdConfig().enabled = False
    with pytest.raises(ValidationError):
        params().initial = 1


def test_config_round_trips_through_json() -> None:
    cfg = config(offload_p30=True)
    assert AimdConfig.model_validate_json(cfg.model_dump_json()) == cfg


@pytest.mark.parametrize(
    "overrides",
    [
        {"action": "SIDEWAYS"},
        {"orchestrator_index": -1},
        {"queue_depth": -1},
        {"oldest_ready_age_s": -0.1},
    ],
)
def test_flow_signal_validates(overrides: dict[str, object]) -> None:
    good = signal(FakeClock(), P10, "DECREASE")
    with pytest.raises(ValueError, match=next(iter(overrides))):
        dataclasses.replace(good, **overrides)  # type: ignore[arg-type]  # invalid on purpose


def test_flow_signal_is_frozen() -> None:
    sig = signal(FakeClock(), P10, "DECREASE")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.queue_depth = 3  # type: ignore[misc]  # frozen on purpose


# --- AIMD -----------------------------------------------------------------------------------


def test_starts_at_initial_capacity() -> None:
    slo = SloService(config(), FakeClock())
    assert all(slo.capacity(p) == 100 for p in Priority)


def test_decrease_is_multiplicative_and_increase_additive() -> None:
    clock = FakeClock()
    slo = SloService(config(), clock)
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "decreased"
    assert slo.capacity(P10) == 50
    clock.advance(5)
    assert slo.on_signal(signal(clock, P10, "INCREASE")) == "increased"
    assert slo.capacity(P10) == 100
    assert slo.on_signal(signal(clock, P10, "INCREASE")) == "increased"
    assert slo.capacity(P10) == 150
    # Other classes are independent.
    assert slo.capacity(P20) == 100
    assert slo.capacity(P30) == 100


def test_one_decrease_per_cooldown_window_whatever_the_number_of_orchestrators() -> None:
    clock = FakeClock()
    slo = SloService(config(cooldown_s=5), clock)
    outcomes = [slo.on_signal(signal(clock, P10, "DECREASE", index=i)) for i in range(4)]
    assert outcomes == ["decreased", "cooldown", "cooldown", "cooldown"]
    assert slo.capacity(P10) == 50
    clock.advance(4.999)
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "cooldown"
    assert slo.capacity(P10) == 50
    clock.advance(0.001)
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "decreased"
    assert slo.capacity(P10) == 25
    assert slo.decrements_last_minute(P10) == 2
    assert slo.statistics().classes[P10].signals_ignored == 4


def test_cooldown_is_per_class() -> None:
    clock = FakeClock()
    slo = SloService(config(), clock)
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "decreased"
    assert slo.on_signal(signal(clock, P20, "DECREASE")) == "decreased"
    assert (slo.capacity(P10), slo.capacity(P20)) == (50, 50)


def test_increase_is_held_inside_the_cooldown_after_a_decrease() -> None:
    # Orchestrators disagree: the congested one wins until the window passes.
    clock = FakeClock()
    slo = SloService(config(cooldown_s=5), clock)
    slo.on_signal(signal(clock, P10, "DECREASE", index=0))
    assert slo.on_signal(signal(clock, P10, "INCREASE", index=1)) == "cooldown"
    assert slo.capacity(P10) == 50
    clock.advance(5)
    assert slo.on_signal(signal(clock, P10, "INCREASE", index=1)) == "increased"
    assert slo.capacity(P10) == 100


def test_increases_are_not_rate_limited_without_a_recent_decrease() -> None:
    clock = FakeClock()
    slo = SloService(config(), clock)
    for _ in range(3):
        assert slo.on_signal(signal(clock, P20, "INCREASE")) == "increased"
    assert slo.capacity(P20) == 250


def test_capacity_stops_at_floor_and_ceiling() -> None:
    clock = FakeClock()
    slo = SloService(config(cooldown_s=0), clock)
    for _ in range(20):
        slo.on_signal(signal(clock, P10, "DECREASE"))
    assert slo.capacity(P10) == 10
    for _ in range(100):
        slo.on_signal(signal(clock, P10, "INCREASE"))
    assert slo.capacity(P10) == 1000


def test_a_decrease_at_the_floor_still_counts_as_a_decrement() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=10, cooldown_s=1), clock)
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "decreased"
    assert slo.capacity(P10) == 10
    assert slo.decrements_last_minute(P10) == 1


def test_stale_signals_are_ignored() -> None:
    clock = FakeClock()
    slo = SloService(config(), clock)
    old = signal(clock, P10, "DECREASE")
    clock.advance(30.001)
    assert slo.on_signal(old) == "stale"
    assert slo.capacity(P10) == 100
    assert slo.decrements_last_minute(P10) == 0
    fresh = dataclasses.replace(old, emitted_at_ms=clock.wall_ms() - 30_000)
    assert slo.on_signal(fresh) == "decreased"


# --- token bucket ---------------------------------------------------------------------------


def test_bucket_starts_full_and_admits_at_capacity_over_time() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=100, burst_s=2), clock)
    admitted = 0
    for _ in range(1000):  # 10 s in steps of 10 ms, offering 5 events each (500/s)
        admitted += sum(slo.admit(P10, "acme") for _ in range(5))
        clock.advance(0.01)
    # 100/s for 10 s plus the initial burst of 2 s of capacity.
    assert 1000 + 200 - 5 <= admitted <= 1000 + 200
    stats = slo.statistics().classes[P10]
    assert stats.admitted == admitted
    assert stats.shed == 5000 - admitted


def test_admit_many_takes_whole_tokens_and_sheds_the_rest() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=100, burst_s=1), clock)
    assert slo.admit_many(P20, 30) == 30
    assert slo.admit_many(P20, 100) == 70
    assert slo.admit_many(P20, 5) == 0
    clock.advance(0.055)  # 5.5 tokens
    assert slo.admit_many(P20, 10) == 5
    assert not slo.admit(P20, "acme")
    clock.advance(0.006)  # the half token left + 0.6
    assert slo.admit(P20, "acme")
    assert slo.admit_many(P20, 0) == 0
    stats = slo.statistics().classes[P20]
    assert (stats.admitted, stats.shed) == (106, 41)


def test_admit_many_refuses_negative_counts() -> None:
    slo = SloService(config(), FakeClock())
    with pytest.raises(ValueError, match="n must be >= 0"):
        slo.admit_many(P10, -1)


def test_bucket_depth_caps_idle_accumulation() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=100, burst_s=3), clock)
    drain(slo, P10)
    clock.advance(3600)
    assert drain(slo, P10) == 300


def test_decrease_shrinks_the_bucket_and_the_refill_rate() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=100, burst_s=1), clock)
    slo.on_signal(signal(clock, P10, "DECREASE"))
    assert slo.statistics().classes[P10].tokens == 50  # clamped to the new depth
    drain(slo, P10)
    clock.advance(1)
    assert drain(slo, P10) == 50


def test_tokens_earned_before_a_change_keep_the_old_rate() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=100, burst_s=10, cooldown_s=0), clock)
    drain(slo, P10)
    clock.advance(1)  # 100 tokens earned at 100/s
    slo.on_signal(signal(clock, P10, "INCREASE"))  # 150/s from now on
    clock.advance(1)
    assert drain(slo, P10) == 250


def test_p30_is_never_shed_by_default() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=10, floor=1, burst_s=1), clock)
    assert all(slo.admit(P30, "acme") for _ in range(10_000))
    assert slo.admit_many(P30, 10_000) == 10_000
    assert slo.statistics().classes[P30].shed == 0
    # ...while P20 with the same parameters is shed.
    assert slo.admit_many(P20, 10_000) == 10


def test_p30_is_shed_with_offload_p30() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=10, floor=1, burst_s=1, offload_p30=True), clock)
    assert slo.admit_many(P30, 100) == 10
    assert not slo.admit(P30, "acme")


def test_disabled_admits_everything_but_keeps_tracking() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=10, floor=1, burst_s=1, enabled=False), clock)
    assert slo.admit_many(P10, 1_000) == 1_000
    assert all(slo.admit(P20, "acme") for _ in range(1_000))
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "decreased"
    stats = slo.statistics()
    assert not stats.enabled
    assert stats.classes[P10].shed == 0
    assert stats.classes[P10].admitted == 1_000
    assert stats.classes[P10].capacity == 5
    assert stats.classes[P10].decrements_last_minute == 1


def test_works_as_the_scheduler_admission() -> None:
    clock = FakeClock()
    slo: Admission = SloService(config(initial=2, floor=1, burst_s=1), clock)
    scheduler = Scheduler(slo)
    assert scheduler.may_offload
    assert [scheduler.offload(P10, "acme") for _ in range(3)] == [False, False, True]
    assert not any(scheduler.offload(P30, "acme") for _ in range(10))


# --- decrements and the serious-congestion alert --------------------------------------------


def test_serious_congestion_after_more_than_ten_p10_decrements_a_minute() -> None:
    clock = FakeClock()
    slo = SloService(config(cooldown_s=5, floor=1, initial=1000, ceiling=1000), clock)
    for _ in range(10):  # t = 0, 5, ..., 45
        assert slo.on_signal(signal(clock, P10, "DECREASE")) == "decreased"
        clock.advance(5)
    assert slo.decrements_last_minute(P10) == 10
    assert not slo.serious_congestion()
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "decreased"  # t = 50
    assert slo.decrements_last_minute(P10) == 11
    assert slo.serious_congestion()
    assert slo.statistics().serious_congestion
    clock.advance(9.9)
    assert slo.serious_congestion()
    clock.advance(0.1)  # t = 60: the one at t = 0 has left the window
    assert slo.decrements_last_minute(P10) == 10
    assert not slo.serious_congestion()
    clock.advance(50)  # a minute after the last one
    assert slo.decrements_last_minute(P10) == 0


def test_exactly_the_threshold_is_not_serious() -> None:
    clock = FakeClock()
    slo = SloService(config(cooldown_s=1), clock)
    for _ in range(10):
        slo.on_signal(signal(clock, P10, "DECREASE"))
        clock.advance(1)
    assert slo.decrements_last_minute(P10) == 10
    assert not slo.serious_congestion()
    slo.on_signal(signal(clock, P10, "DECREASE"))
    assert slo.serious_congestion()


def test_serious_congestion_clears_after_a_quiet_minute() -> None:
    clock = FakeClock()
    slo = SloService(config(cooldown_s=1), clock)
    for _ in range(15):
        slo.on_signal(signal(clock, P10, "DECREASE"))
        clock.advance(1)
    assert slo.serious_congestion()
    clock.advance(50)  # the last decrease was at t=14; now t=65: those at t<=5 left
    assert slo.decrements_last_minute(P10) == 9
    assert not slo.serious_congestion()
    clock.advance(60)
    assert slo.decrements_last_minute(P10) == 0
    assert not slo.statistics().serious_congestion


def test_only_p10_decrements_raise_the_alert() -> None:
    clock = FakeClock()
    slo = SloService(config(cooldown_s=0), clock)
    for _ in range(50):
        slo.on_signal(signal(clock, P20, "DECREASE"))
        slo.on_signal(signal(clock, P30, "DECREASE"))
    assert slo.decrements_last_minute(P20) == 50
    assert not slo.serious_congestion()


def test_the_alert_threshold_is_configurable() -> None:
    clock = FakeClock()
    cfg = config(cooldown_s=0).model_copy(update={"alert_decrements_per_minute": 2})
    slo = SloService(cfg, clock)
    for _ in range(3):
        slo.on_signal(signal(clock, P10, "DECREASE"))
    assert slo.serious_congestion()


def test_decrement_memory_is_bounded() -> None:
    clock = FakeClock()
    slo = SloService(config(cooldown_s=0), clock)
    for _ in range(5000):
        slo.on_signal(signal(clock, P10, "DECREASE"))
    assert slo.decrements_last_minute(P10) == 1024  # saturates; far above any threshold
    assert slo.serious_congestion()


# --- hot reconfiguration --------------------------------------------------------------------


def test_apply_config_clamps_capacity_and_keeps_state() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=500, ceiling=1000, burst_s=1), clock)
    slo.on_signal(signal(clock, P10, "DECREASE"))  # 250
    slo.admit_many(P10, 100)
    slo.apply_config(config(initial=900, floor=400, ceiling=2000, burst_s=1))
    assert slo.capacity(P10) == 400  # raised to the new floor, not reset to initial
    assert slo.capacity(P20) == 500  # within the new bounds: unchanged
    slo.apply_config(config(initial=100, floor=50, ceiling=300, burst_s=1))
    assert slo.capacity(P20) == 300  # lowered to the new ceiling
    stats = slo.statistics()
    assert stats.classes[P20].tokens == 300  # clamped to the new depth
    assert stats.classes[P10].admitted == 100  # counters carried over
    assert stats.classes[P10].decrements_last_minute == 1
    # The cool-down clock carried over too.
    assert slo.on_signal(signal(clock, P10, "DECREASE")) == "cooldown"


def test_apply_config_switches_enabled_and_offload_p30() -> None:
    clock = FakeClock()
    slo = SloService(config(initial=10, floor=1, burst_s=1), clock)
    assert slo.admit_many(P30, 100) == 100
    slo.apply_config(config(initial=10, floor=1, burst_s=1, offload_p30=True))
    assert slo.config.offload_p30
    assert slo.admit_many(P30, 100) == 10
    slo.apply_config(config(initial=10, floor=1, burst_s=1, offload_p30=True, enabled=False))
    assert slo.admit_many(P30, 100) == 100


def test_statistics_is_a_frozen_snapshot() -> None:
    clock = FakeClock()
    slo = SloService(config(), clock)
    slo.admit_many(P10, 150)
    stats = slo.statistics()
    assert stats.classes[P10].capacity == 100
    assert stats.classes[P10].tokens == 0
    assert (stats.classes[P10].admitted, stats.classes[P10].shed) == (100, 50)
    assert stats.enabled
    assert not stats.offload_p30
    assert not stats.serious_congestion
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.enabled = False  # type: ignore[misc]  # frozen on purpose


# --- properties -----------------------------------------------------------------------------

_params = st.builds(
    lambda floor, span, pos, step, factor, cooldown, burst: params(
        floor=floor,
        ceiling=floor + span,
        initial=floor + span * pos,
        increase_step=step,
        decrease_factor=factor,
        cooldown_s=cooldown,
        burst_s=burst,
    ),
    st.floats(0.01, 1e5),
    st.floats(0, 1e6),
    st.floats(0, 1),
    st.floats(0.01, 1e5),
    st.floats(0.01, 0.99),
    st.floats(0, 10),
    st.floats(0.01, 10),
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("signal"), st.sampled_from(list(Priority)), st.booleans()),
        st.tuples(st.just("advance"), st.floats(0, 20), st.integers(0, 10**6)),
        st.tuples(st.just("config"), _params, st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(first=_params, steps=_steps)
def test_capacity_and_tokens_stay_in_bounds(
    first: AimdParams, steps: list[tuple[object, ...]]
) -> None:
    clock = FakeClock()
    cfg = AimdConfig(classes={"P10": first, "P20": first, "P30": first}, offload_p30=True)
    slo = SloService(cfg, clock)
    for step in steps:
        match step:
            case ("signal", Priority() as priority, bool(decrease)):
                slo.on_signal(signal(clock, priority, "DECREASE" if decrease else "INCREASE"))
            case ("advance", float(seconds), int(n)):
                clock.advance(seconds)
                for priority in Priority:
                    assert 0 <= slo.admit_many(priority, n) <= n
            case ("config", AimdParams() as p, bool(offload_p30)):
                cfg = AimdConfig(classes={"P10": p, "P20": p, "P30": p}, offload_p30=offload_p30)
                slo.apply_config(cfg)
            case _:
                raise AssertionError(step)
        stats = slo.statistics()
        for priority, cls in stats.classes.items():
            p = cfg.classes[priority.name]  # type: ignore[index]  # names are P10/P20/P30
            assert p.floor <= cls.capacity <= p.ceiling
            assert 0 <= cls.tokens <= cls.capacity * p.burst_s * (1 + 1e-9)


def test_decrease_cuts_from_the_admitted_rate_not_from_an_idle_ceiling() -> None:
    clock = FakeClock()
    params = AimdParams(
        initial=10_000,
        floor=10,
        ceiling=10_000,
        increase_step=10,
        decrease_factor=0.5,
        cooldown_s=1,
        burst_s=1,
    )
    slo = SloService(AimdConfig(classes={"P10": params}), clock)
    for _ in range(4):  # 4 s at 100 events/s
        clock.advance(1)
        assert slo.admit_many(Priority.P10, 100) == 100
    outcome = slo.on_signal(
        FlowSignal(Priority.P10, "DECREASE", 0, 10, 1.0, frozenset(), clock.wall_ms())
    )
    assert outcome == "decreased"
    # Half the 100/s actually admitted, not half the 10k/s ceiling nobody used.
    assert slo.capacity(Priority.P10) == pytest.approx(50, rel=0.01)
