"""Tests for eventgw.ingest.hot_tenants: windowed rates, bounded memory, demote/offload."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventgw.config.admission import HotTenantConfig
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Priority
from eventgw.ingest.hot_tenants import DynamicClassifier, HotTenantTracker

P10, P20, P30 = Priority.P10, Priority.P20, Priority.P30


def cfg(**overrides: object) -> HotTenantConfig:
    base: dict[str, object] = {"window_s": 10.0, "max_rate_per_company": 100.0}
    return HotTenantConfig.model_validate(base | overrides)


def flood(
    target: HotTenantTracker | DynamicClassifier, clock: FakeClock, company: str, rate: int
) -> None:
    """Send ``rate`` events/s of ``company`` for 10 s in 125 ms steps (exact in binary)."""
    for _ in range(80):
        if isinstance(target, HotTenantTracker):
            target.observe(company, rate // 8)
        else:
            target.decide(P20, company, rate // 8)
        clock.advance(0.125)


def maps_of(tracker: HotTenantTracker) -> list[dict[str, int]]:
    return [tracker._totals, *(bucket for _, bucket in tracker._buckets)]


# --- config ---------------------------------------------------------------------------------


def test_config_defaults() -> None:
    c = HotTenantConfig()
    assert c.enabled
    assert c.window_s == 10
    assert c.max_rate_per_company == 2000
    assert c.action == "offload"
    assert c.exempt_companies == ()
    assert c.force_offload_companies == ()
    assert c.max_tracked == 10_000


@pytest.mark.parametrize(
    "overrides",
    [
        {"window_s": 0},
        {"max_rate_per_company": 0},
        {"action": "drop"},
        {"max_tracked": 0},
        {"unknown": 1},
    ],
)
def test_config_refuses_invalid_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        cfg(**overrides)


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        HotTenantConfig().enabled = False


# --- tracker --------------------------------------------------------------------------------


def test_steady_rate_is_measured_exactly() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(), clock)
    for _ in range(240):  # 30 s at 32 events/s, in 125 ms steps (exact in binary)
        tracker.observe("acme", 4)
        clock.advance(0.125)
        assert tracker.rate("acme") <= 32.0
    assert tracker.rate("acme") == 32.0
    # Mid-bucket the oldest (1 s) bucket is half out of the window: half its 32 events are
    # taken off. The true count in (20.5, 30.5] is 300; the estimate 304.
    clock.advance(0.5)
    assert tracker.rate("acme") == pytest.approx(30.4)


def test_a_flooding_company_becomes_hot_and_others_do_not() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(max_rate_per_company=100), clock)
    for _ in range(100):  # 10 s
        tracker.observe("flood", 20)  # 200/s
        tracker.observe("calm", 5)  # 50/s
        clock.advance(0.1)
    assert tracker.is_hot("flood")
    assert not tracker.is_hot("calm")
    assert not tracker.is_hot("never-seen")
    assert tracker.rate("never-seen") == 0.0
    [(company, rate)] = tracker.hot_companies()
    assert company == "flood"
    assert rate == pytest.approx(200.0)


def test_observe_returns_the_rate_including_the_new_events() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(window_s=10), clock)
    assert tracker.observe("acme", 500) == 50.0
    assert tracker.observe("acme", 500) == 100.0
    with pytest.raises(ValueError, match="n must be >= 0"):
        tracker.observe("acme", -1)


def test_observing_zero_events_tracks_nothing() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(window_s=1), clock)
    assert tracker.observe("a", 0) == 0.0
    assert tracker.tracked() == 0
    tracker.observe("a", 3)
    clock.advance(0.2)
    assert tracker.observe("a", 0) == 3.0
    clock.advance(0.2)
    tracker.observe("a", 0)
    clock.advance(2)  # every bucket expires without a stray zero count
    assert tracker.tracked() == 0
    assert all(len(m) == 0 for m in maps_of(tracker))


def test_rate_decays_after_the_window_and_memory_is_released() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(window_s=10), clock)
    flood(tracker, clock, "acme", 800)
    assert tracker.is_hot("acme")
    clock.advance(5)
    assert tracker.rate("acme") == pytest.approx(400.0)
    clock.advance(5)
    assert tracker.rate("acme") == 0.0
    assert not tracker.is_hot("acme")
    assert tracker.tracked() == 0
    assert all(len(m) == 0 for m in maps_of(tracker))


def test_a_burst_counts_for_one_window() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(window_s=10, max_rate_per_company=100), clock)
    tracker.observe("acme", 1000)  # one burst: 100/s averaged over the window
    assert tracker.is_hot("acme")
    clock.advance(9.95)
    assert tracker.is_hot("acme")
    clock.advance(0.1)
    assert not tracker.is_hot("acme")


def test_hot_companies_are_sorted_and_limited() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(window_s=1, max_rate_per_company=10), clock)
    for i in range(20):
        tracker.observe(f"c{i}", 10 + i)
    tracker.observe("cold", 1)
    top = tracker.hot_companies(limit=3)
    assert [c for c, _ in top] == ["c19", "c18", "c17"]
    assert len(tracker.hot_companies()) == 10
    assert len(tracker.hot_companies(limit=100)) == 20


def test_hot_count_counts_every_hot_company_and_forgets_them_after_the_window() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(window_s=1, max_rate_per_company=10), clock)
    for i in range(20):
        tracker.observe(f"c{i}", 10 + i)
    tracker.observe("cold", 9)
    assert tracker.hot_count() == 20  # not limited like hot_companies()
    clock.advance(2)
    assert tracker.hot_count() == 0


def test_memory_is_bounded_under_100k_distinct_companies() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(max_tracked=2_000, max_rate_per_company=50), clock)
    for i in range(100_000):
        tracker.observe(f"company-{i}")
        if i % 10 == 0:
            tracker.observe("flood", 10)  # ~100/s against one event per company
        if i % 1000 == 0:
            clock.advance(0.01)
    assert all(len(m) <= 2_000 for m in maps_of(tracker))
    assert len(tracker._buckets) <= 11
    stats = tracker.statistics()
    assert stats.tracked <= 2_000
    assert stats.evicted >= 98_000
    assert stats.observed == 100_000 + 10 * 10_000
    # The busy company survived every sweep, with its whole count.
    assert tracker.rate("flood") == pytest.approx(100_000 / 10)
    assert tracker.is_hot("flood")


def test_the_newcomer_is_kept_and_the_smallest_are_evicted() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(max_tracked=10), clock)
    for i in range(10):
        tracker.observe(f"c{i}", 100 + i)
    tracker.observe("c0", 100)  # c0 is now the busiest
    tracker.observe("new")
    assert tracker.tracked() == 10
    assert tracker.rate("new") > 0
    assert tracker.rate("c0") > 0
    assert tracker.rate("c1") == 0  # the smallest count was dropped
    assert tracker.statistics().evicted == 1


def test_max_tracked_of_one() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(max_tracked=1), clock)
    for company in ("a", "b", "c"):
        tracker.observe(company)
        assert tracker.tracked() == 1
        assert tracker.rate(company) > 0


def test_evicted_company_is_forgotten_consistently() -> None:
    # A company dropped while it still has events in old buckets must not corrupt the
    # totals when those buckets expire later.
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(max_tracked=2, window_s=1), clock)
    tracker.observe("a", 1)
    clock.advance(0.3)
    tracker.observe("b", 5)
    tracker.observe("c", 5)  # evicts "a" (smallest)
    tracker.observe("a", 7)  # evicts "b" or "c"; "a" restarts from 7
    clock.advance(0.75)  # "a"'s first bucket would now expire
    assert tracker.rate("a") == pytest.approx(7.0)
    clock.advance(1)
    assert tracker.tracked() == 0


def test_reconfigure_keeps_rates_and_refuses_a_new_window() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(max_rate_per_company=100), clock)
    tracker.observe("acme", 500)  # 50/s
    assert not tracker.is_hot("acme")
    tracker.reconfigure(cfg(max_rate_per_company=40))
    assert tracker.is_hot("acme")
    assert tracker.statistics().max_rate_per_company == 40
    with pytest.raises(ValueError, match="window_s"):
        tracker.reconfigure(cfg(window_s=5))


def test_tracker_statistics() -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(), clock)
    tracker.observe("hot", 2000)
    tracker.observe("cold", 3)
    stats = tracker.statistics()
    assert stats.tracked == 2
    assert stats.hot == (("hot", 200.0),)
    assert stats.observed == 2003
    assert stats.evicted == 0
    assert stats.window_s == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.tracked = 0  # type: ignore[misc]  # frozen on purpose


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 50), st.floats(0, 3)), max_size=80
    ),
    st.integers(1, 5),
)
def test_tracker_matches_a_naive_sliding_window(
    steps: list[tuple[str, int, float]], max_tracked: int
) -> None:
    clock = FakeClock()
    tracker = HotTenantTracker(cfg(window_s=1, max_tracked=100), clock)
    bounded = HotTenantTracker(cfg(window_s=1, max_tracked=max_tracked), clock)
    log: list[tuple[float, str, int]] = []
    for company, n, dt in steps:
        tracker.observe(company, n)
        bounded.observe(company, n)
        log.append((clock.monotonic(), company, n))
        clock.advance(dt)
        now = clock.monotonic()
        for c in "abcdefgh":
            # Exact for the last 0.9 s; the oldest 0.1 s bucket is interpolated.
            sure = sum(k for t, cc, k in log if cc == c and t > now - 0.9 + 1e-9)
            maybe = sum(k for t, cc, k in log if cc == c and t > now - 1.1 - 1e-9)
            assert sure - 1e-6 <= tracker.rate(c) <= maybe + 1e-6
            assert 0 <= bounded.rate(c) <= tracker.rate(c) + 1e-6
        assert all(len(m) <= max_tracked for m in maps_of(bounded))


# --- dynamic classifier ---------------------------------------------------------------------


def test_cold_companies_keep_their_class() -> None:
    dyn = DynamicClassifier(cfg(), FakeClock())
    for p in Priority:
        assert dyn.decide(p, "acme") == (p, False)


def test_hot_company_is_offloaded_but_p30_only_demoted() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(action="offload"), clock)
    flood(dyn, clock, "flood", 800)
    assert dyn.decide(P10, "flood") == (P10, True)
    assert dyn.decide(P20, "flood") == (P20, True)
    assert dyn.decide(P30, "flood") == (P20, False)  # P30 is never offloaded for its rate
    assert dyn.decide(P20, "calm") == (P20, False)
    stats = dyn.statistics()
    assert stats.demoted == 1
    assert stats.tenants.hot[0][0] == "flood"
    # Counted from the call that crossed the threshold: 100/s is 1000 in the window, reached
    # by the 10th call of 100 events; then P10 and P20 once each.
    assert stats.offloaded_hot == 8000 - 900 + 2


def test_hot_company_is_demoted_one_class() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(action="demote"), clock)
    flood(dyn, clock, "flood", 800)
    assert dyn.decide(P30, "flood") == (P20, False)
    assert dyn.decide(P20, "flood") == (P10, False)
    assert dyn.decide(P10, "flood") == (P10, False)  # P10 stays P10
    assert dyn.decide(P30, "calm") == (P30, False)
    stats = dyn.statistics()
    assert stats.offloaded_hot == 0
    assert stats.demoted == 8000 - 900 + 2  # the P10 one did not move


def test_the_event_that_crosses_the_threshold_is_acted_on() -> None:
    dyn = DynamicClassifier(cfg(max_rate_per_company=100, window_s=10), FakeClock())
    assert dyn.decide(P20, "acme", 999) == (P20, False)
    assert dyn.decide(P20, "acme", 1) == (P20, True)


def test_hot_company_recovers_after_the_window() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(), clock)
    flood(dyn, clock, "flood", 800)
    assert dyn.decide(P20, "flood") == (P20, True)
    clock.advance(10.1)
    assert dyn.decide(P20, "flood") == (P20, False)


def test_exempt_companies_are_tracked_but_never_isolated() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(exempt_companies=("big",)), clock)
    flood(dyn, clock, "big", 800)
    assert dyn.tracker.is_hot("big")
    assert dyn.decide(P30, "big") == (P30, False)
    assert dyn.decide(P20, "big") == (P20, False)


def test_force_offload_is_a_kill_switch() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(force_offload_companies=("bad",), exempt_companies=("bad",)), clock)
    for p in Priority:
        assert dyn.decide(p, "bad") == (p, True)  # whatever the rate, P30 included
    assert dyn.decide(P20, "good") == (P20, False)
    assert dyn.statistics().offloaded_forced == 3


def test_disabled_isolates_nobody_but_the_kill_switch_holds() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(enabled=False, force_offload_companies=("bad",)), clock)
    flood(dyn, clock, "flood", 5000)
    assert dyn.decide(P20, "flood") == (P20, False)
    assert dyn.decide(P30, "bad", 4) == (P30, True)
    stats = dyn.statistics()
    assert stats.tenants.tracked == 0  # no tracking while disabled
    assert stats.offloaded_forced == 4
    with pytest.raises(ValueError, match="n must be >= 0"):
        dyn.decide(P20, "acme", -1)


def test_decide_refuses_negative_counts_when_enabled() -> None:
    dyn = DynamicClassifier(cfg(), FakeClock())
    with pytest.raises(ValueError, match="n must be >= 0"):
        dyn.decide(P20, "acme", -1)


def test_apply_config_keeps_rates_for_the_same_window() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(max_rate_per_company=1000), clock)
    flood(dyn, clock, "flood", 800)
    assert dyn.decide(P20, "flood") == (P20, False)
    dyn.apply_config(cfg(max_rate_per_company=100, action="demote"))
    assert dyn.config.action == "demote"
    assert dyn.decide(P20, "flood") == (P10, False)
    dyn.apply_config(cfg(max_rate_per_company=100, exempt_companies=("flood",)))
    assert dyn.decide(P20, "flood") == (P20, False)
    dyn.apply_config(cfg(max_rate_per_company=100, force_offload_companies=("calm",)))
    assert dyn.decide(P30, "calm") == (P30, True)


def test_apply_config_with_a_new_window_restarts_the_rates() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(), clock)
    flood(dyn, clock, "flood", 800)
    old = dyn.tracker
    dyn.apply_config(cfg(window_s=30))
    assert dyn.tracker is not old
    assert dyn.tracker.window_s == 30
    assert dyn.tracker.rate("flood") == 0.0


def test_apply_config_lowering_max_tracked_trims_on_the_next_newcomer() -> None:
    clock = FakeClock()
    dyn = DynamicClassifier(cfg(max_tracked=100), clock)
    for i in range(100):
        dyn.decide(P20, f"c{i}")
    dyn.apply_config(cfg(max_tracked=10))
    dyn.decide(P20, "new")
    assert dyn.tracker.tracked() <= 10
