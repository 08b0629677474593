"""Prefetch sizing and the split of a worker's credit over orchestrators (pure)."""

from __future__ import annotations

import pytest

from eventgw.processor.credit import LinkCredit, PrefetchEstimator, plan_credit


def test_prefetch_before_any_handler_finished_is_what_the_slots_start_in_the_window() -> None:
    # A handler is assumed to take the window: each slot starts one more within it.
    assert PrefetchEstimator(10, 0.01, 1000).prefetch() == 10


def test_prefetch_is_what_the_slots_start_within_the_window() -> None:
    est = PrefetchEstimator(concurrency=100, window_s=0.01, max_prefetch=1000)
    est.observe(total_s=0.02 * 64, n=64)  # 20 ms handlers
    assert est.mean_s == pytest.approx(0.02)
    assert est.prefetch() == 50  # 100 slots x 10 ms / 20 ms
    for _ in range(200):
        est.observe(0.001, 1)  # the handler became 1 ms
    assert est.prefetch() == pytest.approx(1000, abs=2)  # 100 x 10 ms / 1 ms
    capped = PrefetchEstimator(100, 0.01, 64)
    capped.observe(0.001, 1)
    assert capped.prefetch() == 64


def test_slow_handlers_keep_a_prefetch_of_one() -> None:
    est = PrefetchEstimator(4, 0.01, 100)
    est.observe(10.0, 1)  # 10 s handlers: the window starts none, but keep one ready
    assert est.prefetch() == 1


def test_one_outlier_moves_the_mean_at_most_halfway() -> None:
    est = PrefetchEstimator(10, 0.01, 100)
    est.observe(0.01 * 100, 100)
    est.observe(1.0 * 1000, 1000)
    assert est.mean_s == pytest.approx((0.01 + 1.0) / 2)


def test_a_zero_window_means_no_prefetch() -> None:
    assert PrefetchEstimator(8, 0.0, 100).prefetch() == 0


@pytest.mark.parametrize(
    ("concurrency", "window_s", "max_prefetch"),
    [(0, 0.01, 10), (1, -1.0, 10), (1, float("nan"), 10), (1, 0.01, -1)],
)
def test_bad_estimator_parameters_are_refused(
    concurrency: int, window_s: float, max_prefetch: int
) -> None:
    with pytest.raises(ValueError, match="prefetch"):
        PrefetchEstimator(concurrency, window_s, max_prefetch)


def links(*specs: tuple[bool, int, int]) -> list[LinkCredit]:
    return [LinkCredit(connected=c, credit=cr, backlog=b) for c, cr, b in specs]


def test_one_orchestrator_gets_all_free_credit() -> None:
    assert plan_credit(links((True, 3, 0)), 7) == ([7], [0])


def test_nothing_is_granted_to_a_disconnected_orchestrator() -> None:
    assert plan_credit(links((False, 0, 50), (True, 0, 0)), 4) == ([0, 4], [0, 0])
    assert plan_credit(links((False, 0, 0)), 4) == ([0], [0])


def test_backlogs_share_the_free_credit_each_up_to_its_need() -> None:
    grants, revokes = plan_credit(links((True, 0, 2), (True, 0, 10), (True, 0, 0)), 8)
    assert grants == [2, 6, 0]  # equal shares of 4; what the small one cannot use goes on
    assert revokes == [0, 0, 0]
    grants, _ = plan_credit(links((True, 0, 100), (True, 0, 100), (True, 0, 100)), 2)
    assert sorted(grants) == [0, 1, 1]  # fewer credits than needy links: one each
    grants, _ = plan_credit(links((True, 0, 100), (True, 0, 100)), 9)
    assert sorted(grants) == [4, 5]


def _simulate(rounds: int, capacity: int, arrivals: list[int]) -> list[list[int]]:
    """A worker serving two orchestrators, round by round: each round every link sends what
    its credit covers of its backlog, those tasks finish, and the freed capacity is planned
    again (`plan_credit`, revokes answered at once). ``arrivals[i]`` tasks reach link ``i``'s
    backlog per round. Returns, per link, how many rounds each of its tasks waited."""
    state = links((True, 0, 0), (True, 0, 0))
    queued: list[list[int]] = [[], []]  # arrival round of each task waiting at each link
    waits: list[list[int]] = [[], []]
    held = 0
    for now in range(rounds):
        for i, n in enumerate(arrivals):
            queued[i].extend([now] * n)
            state[i].backlog = len(queued[i])
        free = capacity - held - sum(c.credit for c in state)
        grants, revokes = plan_credit(state, free)
        for i, c in enumerate(state):
            c.credit += grants[i] - revokes[i]
        for i, c in enumerate(state):
            sent = min(c.credit, len(queued[i]))
            waits[i].extend(now - at for at in queued[i][:sent])
            del queued[i][:sent]
            c.credit -= sent
            c.backlog = len(queued[i])
            held += sent
        held = 0  # every task sent this round finishes within it
    return waits


def test_a_fleet_with_a_trickle_is_not_starved_by_a_flooded_one() -> None:
    """Two fleets' orchestrators: one floods (50 new tasks a round for a worker of 16), the
    other gets one a round. Every one of the trickle's tasks is sent in its round, and the
    flooded one still gets the rest of the capacity."""
    waits = _simulate(rounds=200, capacity=16, arrivals=[50, 1])
    assert len(waits[1]) == 200
    assert max(waits[1]) == 0
    assert len(waits[0]) >= 200 * 15 - 16


def test_an_idle_fleet_does_not_hold_the_capacity() -> None:
    """One orchestrator has nothing: after the first round its parked credit is revoked and
    the busy one is sent a full worker's worth every round."""
    waits = _simulate(rounds=100, capacity=16, arrivals=[40, 0])
    assert waits[1] == []
    assert len(waits[0]) >= 99 * 16


def test_credit_left_after_the_backlogs_is_spread_evenly() -> None:
    grants, _ = plan_credit(links((True, 0, 3), (True, 0, 0), (True, 0, 0)), 9)
    assert grants[0] >= 3
    assert sum(grants) == 9
    assert max(grants[1:]) - min(grants[1:]) <= 1


def test_parked_credit_is_revoked_when_a_backlog_is_not_covered() -> None:
    grants, revokes = plan_credit(links((True, 5, 0), (True, 0, 40)), 0)
    assert grants == [0, 0]
    assert revokes == [5, 0]


def test_no_revoke_while_one_is_already_out() -> None:
    state = links((True, 5, 0), (True, 0, 40))
    state[0].revoking = True
    assert plan_credit(state, 0) == ([0, 0], [0, 0])


def test_no_revoke_when_every_backlog_is_covered() -> None:
    assert plan_credit(links((True, 5, 0), (True, 10, 10)), 0) == ([0, 0], [0, 0])
