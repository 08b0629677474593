"""Tests for eventgw.orchestrator.priority_buffer: dispatch policy, leases, delays, memory."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventgw.core.clock import FakeClock
from eventgw.core.envelope import SLO_SECONDS, BufferLane, Priority
from eventgw.orchestrator import task_heaps
from eventgw.orchestrator.priority_buffer import (
    BUFFER_LANES,
    TASK_OVERHEAD_BYTES,
    BufferedTask,
    PriorityBuffer,
    make_task_id,
)

P10, P20, P30 = Priority.P10, Priority.P20, Priority.P30
LANE: dict[Priority, BufferLane] = {P10: "p10", P20: "p20", P30: "p30"}


class Fixture:
    """A buffer on a FakeClock, and a factory of tasks aged against that clock."""

    def __init__(self, **kwargs: object) -> None:
        self.clock = FakeClock()
        kwargs.setdefault("budget_bytes", 1_000_000)
        self.buffer = PriorityBuffer(
            now_ms=self.clock.wall_ms,
            monotonic=self.clock.monotonic,
            **kwargs,  # type: ignore[arg-type]  # test helper forwarding keyword arguments
        )
        self._offsets = itertools.count()

    def task(
        self,
        priority: Priority,
        *,
        age_s: float = 0.0,
        lane: BufferLane | None = None,
        partition: int = 0,
        value: bytes = b"v",
    ) -> BufferedTask:
        offset = next(self._offsets)
        ingested = self.clock.wall_ms() - int(age_s * 1000)
        return BufferedTask(
            task_id=make_task_id("t", partition, offset),
            topic="t",
            partition=partition,
            offset=offset,
            lane=lane or LANE[priority],
            priority=priority,
            deadline_ms=ingested + int(SLO_SECONDS[priority] * 1000),
            ingested_at_ms=ingested,
            value=value,
        )

    def push(self, priority: Priority, **kwargs: object) -> BufferedTask:
        task = self.task(priority, **kwargs)  # type: ignore[arg-type]  # forwarded keywords
        self.buffer.push(task)
        return task

    def pop_ids(self, n: int, lease_s: float = 30.0) -> list[str]:
        return [t.task_id for t in self.buffer.pop_batch(n, lease_s)]


def ids(tasks: list[BufferedTask]) -> list[str]:
    return [t.task_id for t in tasks]


# -- dispatch policy -------------------------------------------------------------------------


def test_on_time_classes_are_served_earliest_deadline_first() -> None:
    f = Fixture()
    p10, p20, p30 = f.push(P10), f.push(P20), f.push(P30)
    assert f.pop_ids(10) == ids([p30, p20, p10])


def test_on_time_is_edf_across_classes_not_strict_class_order() -> None:
    f = Fixture()
    # A P10 ingested 19m58s ago is due in 2 s: before a fresh P30 (due in 5 s).
    p10 = f.push(P10, age_s=20 * 60 - 2)
    p30 = f.push(P30)
    assert f.pop_ids(2) == ids([p10, p30])


def test_late_p10_backlog_does_not_preempt_on_time_p30() -> None:
    f = Fixture()
    backlog = [f.push(P10, age_s=21 * 60) for _ in range(50)]
    fresh = [f.push(P30) for _ in range(10)]
    assert f.pop_ids(10) == ids(fresh)
    assert f.pop_ids(50) == ids(backlog)


def test_task_pushed_on_time_becomes_late_when_its_deadline_passes() -> None:
    f = Fixture()
    p10 = f.push(P10, age_s=20 * 60 - 1)  # due in 1 s, on time now
    f.clock.advance(2)
    p30 = f.push(P30)
    # Plain EDF would serve the P10 (earlier deadline); it is late, so P30 goes first.
    assert f.pop_ids(2) == ids([p30, p10])


def test_a_task_is_late_from_its_deadline_on() -> None:
    f = Fixture()
    at_deadline = f.push(P10, age_s=20 * 60)  # deadline == now: late
    before_deadline = f.push(P10, age_s=20 * 60 - 0.001)  # due in 1 ms: on time
    assert f.pop_ids(2) == ids([before_deadline, at_deadline])


def test_late_tier_is_ordered_by_class_then_deadline() -> None:
    f = Fixture()
    late_p10_old = f.push(P10, age_s=60 * 60)
    late_p10 = f.push(P10, age_s=30 * 60)
    late_p20 = f.push(P20, age_s=2 * 60)
    late_p30_newer = f.push(P30, age_s=6)
    late_p30 = f.push(P30, age_s=60)
    assert f.pop_ids(10) == ids([late_p30, late_p30_newer, late_p20, late_p10_old, late_p10])


def test_offload_competes_in_edf_with_a_grace_of_one_slo() -> None:
    f = Fixture()
    offload_p30 = f.push(P30, lane="offload")  # key: deadline + 5 s = now + 10 s
    late_p10 = f.push(P10, age_s=25 * 60)
    on_time_p10 = f.push(P10)  # deadline now + 20 min
    on_time_p30 = f.push(P30)  # deadline now + 5 s: before the offloaded P30
    assert f.pop_ids(1) == ids([on_time_p30])
    assert f.pop_ids(1) == ids([offload_p30])  # before bulk with a far deadline
    assert f.pop_ids(1) == ids([on_time_p10])
    assert f.pop_ids(1) == ids([late_p10])


def test_offload_past_its_grace_is_second_tier_after_late_work() -> None:
    f = Fixture()
    stale_offload = f.push(P20, lane="offload", age_s=5 * 60)  # past deadline + 60 s
    late_p10 = f.push(P10, age_s=25 * 60)
    on_time_p10 = f.push(P10)
    assert f.pop_ids(3) == ids([on_time_p10, late_p10, stale_offload])


def test_offload_lane_is_served_by_deadline_across_classes() -> None:
    f = Fixture()
    a = f.push(P10, lane="offload", age_s=30 * 60)  # key: now + 10 min (within grace)
    b = f.push(P30, lane="offload")  # key: now + 10 s
    c = f.push(P20, lane="offload", age_s=10 * 60)  # past its grace: second tier
    assert f.pop_ids(3) == ids([b, a, c])


def test_every_kth_slot_goes_to_late_tasks_then_offload() -> None:
    f = Fixture(late_share_every=5)
    p30s = [f.push(P30) for _ in range(20)]
    late = [f.push(P10, age_s=30 * 60) for _ in range(3)]
    offload = [f.push(P10, lane="offload") for _ in range(2)]
    served = f.pop_ids(25)
    expected = [*p30s[0:4], late[0], *p30s[4:8], late[1], *p30s[8:12], late[2]]
    expected += [*p30s[12:16], offload[0], *p30s[16:20], offload[1]]
    assert served == ids(expected)
    stats = f.buffer.statistics()
    assert (stats.served_slots, stats.late_share_slots) == (25, 5)


def test_slot_counter_runs_across_batches() -> None:
    f = Fixture(late_share_every=4)
    p30s = [f.push(P30) for _ in range(10)]
    late = f.push(P20, age_s=5 * 60)
    assert f.pop_ids(2) == ids(p30s[0:2])
    assert f.pop_ids(2) == ids([p30s[2], late])


def test_anti_starvation_slot_goes_to_the_normal_order_when_second_tier_is_empty() -> None:
    f = Fixture(late_share_every=2)
    p30s = [f.push(P30) for _ in range(6)]
    assert f.pop_ids(6) == ids(p30s)
    assert f.buffer.statistics().late_share_slots == 0


def test_p10_gets_about_one_in_k_slots_under_a_saturating_p30_flood() -> None:
    f = Fixture(late_share_every=20)
    for _ in range(20):
        f.push(P10, age_s=30 * 60)
    served_p10 = 0
    for _ in range(100):  # P30 arrives as fast as it is served
        for _ in range(10):
            f.push(P30)
        batch = f.buffer.pop_batch(10, 30.0)
        served_p10 += sum(t.priority is P10 for t in batch)
        for task in batch:
            f.buffer.complete(task.task_id)
    assert served_p10 == 20  # 1000 slots / 20 = 50 shares; only 20 P10 existed


def test_fifo_within_a_class_for_equal_deadlines() -> None:
    f = Fixture()
    tasks = [f.push(P20) for _ in range(6)]
    assert f.pop_ids(6) == ids(tasks)


def test_retry_lane_is_ordered_by_original_class_and_deadline() -> None:
    f = Fixture()
    retry_p30 = f.push(P30, lane="retry", age_s=90)  # late
    retry_p10 = f.push(P10, lane="retry", age_s=60)  # on time: due in 19 min
    fresh_p20 = f.push(P20)
    assert f.pop_ids(3) == ids([fresh_p20, retry_p10, retry_p30])


# -- leases, release, delay ------------------------------------------------------------------


def test_pop_leases_tasks() -> None:
    f = Fixture()
    task = f.push(P20)
    f.clock.advance(3)
    [served] = f.buffer.pop_batch(5, lease_s=10)
    assert served is task
    assert (task.delivery_count, task.lease_expires) == (1, 13.0)
    assert f.buffer.lease_of(task.task_id) is task
    assert not f.buffer.has_ready()
    assert f.buffer.pop_batch(5, 10) == []  # a leased task is not served twice
    assert f.buffer.next_timer() == 13.0


def test_expired_lease_is_served_again_with_delivery_count_plus_one() -> None:
    f = Fixture()
    task = f.push(P30)
    f.buffer.pop_batch(1, lease_s=10)
    f.clock.advance(9.9)
    assert f.buffer.expire() == []
    f.clock.advance(0.1)
    assert f.buffer.expire() == [task]
    assert f.buffer.lease_of(task.task_id) is None
    assert task.delivery_count == 1  # kept; it grows on the next serve
    assert f.buffer.pop_batch(1, 10) == [task]
    assert task.delivery_count == 2


def test_expire_accepts_an_explicit_time() -> None:
    f = Fixture()
    task = f.push(P30)
    f.buffer.pop_batch(1, lease_s=10)
    assert f.buffer.expire(now=9.0) == []
    assert f.buffer.expire(now=10.0) == [task]


def test_returned_task_keeps_its_place() -> None:
    f = Fixture()
    first, second = f.push(P20), f.push(P20)
    f.buffer.pop_batch(1, 10)
    f.clock.advance(11)
    f.buffer.expire()
    assert f.pop_ids(2) == ids([first, second])


def test_return_lease_serves_the_task_again_keeping_its_delivery() -> None:
    f = Fixture()
    first, second = f.push(P20), f.push(P20)
    f.buffer.pop_batch(2, 30)
    assert f.buffer.return_lease(first.task_id) is True
    assert f.buffer.return_lease(first.task_id) is False  # not leased any more
    assert f.buffer.return_lease("t/9/9") is False
    assert first.delivery_count == 1
    assert f.buffer.ready_count() == 1
    assert f.buffer.pop_batch(2, 30) == [first]
    assert first.delivery_count == 2
    assert second.delivery_count == 1


def test_rank_is_the_serving_key_or_now_for_second_tier_work() -> None:
    f = Fixture(late_share_every=1000)
    p30 = f.push(P30)
    offloaded = f.push(P20, lane="offload")
    late = f.push(P10, age_s=SLO_SECONDS[P10] + 1)
    batch = f.buffer.pop_batch(3, 30)
    assert batch == [p30, offloaded, late]
    now = f.clock.wall_ms()
    assert p30.rank == p30.deadline_ms
    assert offloaded.rank == offloaded.deadline_ms + int(SLO_SECONDS[P20] * 1000)
    assert late.rank == now, "second-tier work is due now: before any on-time task"
    assert late.rank < p30.rank


def test_release_returns_the_task_without_counting_a_delivery() -> None:
    f = Fixture()
    task = f.push(P20)
    f.buffer.pop_batch(1, 10)
    assert f.buffer.release(task.task_id) is True
    assert task.delivery_count == 0
    assert task.attempt == 0
    assert f.buffer.release(task.task_id) is False  # not leased any more
    assert f.buffer.release("t/9/9") is False
    assert f.buffer.next_timer() is None
    assert f.buffer.pop_batch(1, 10) == [task]
    assert task.delivery_count == 1


def test_delay_holds_the_task_then_returns_it_with_attempt_plus_one() -> None:
    f = Fixture()
    task = f.push(P20)
    other = f.push(P20)
    f.buffer.pop_batch(1, lease_s=30)
    assert f.buffer.delay(task.task_id, 5.0) is True
    assert task.attempt == 0  # counted when it is ready again
    assert f.buffer.lease_of(task.task_id) is None
    assert f.buffer.delay(task.task_id, 1.0) is False  # delayed, not leased
    assert f.buffer.next_timer() == 5.0  # the delay is due before other leases
    assert f.buffer.pop_batch(5, 30) == [other]
    f.clock.advance(4.9)
    f.buffer.expire()
    assert f.buffer.pop_batch(5, 30) == []
    assert task.attempt == 0
    f.clock.advance(0.1)
    assert f.buffer.expire() == []  # due delayed tasks become ready but are not "expired"
    assert task.attempt == 1
    assert f.buffer.pop_batch(5, 30) == [task]
    assert (task.attempt, task.delivery_count) == (1, 2)


def test_a_delayed_task_completed_before_it_is_due_counts_no_attempt() -> None:
    # The caller may hold a task as delayed while it writes it to a retry topic.
    f = Fixture()
    task = f.push(P20)
    f.buffer.pop_batch(1, 10)
    f.buffer.delay(task.task_id, 3600)
    assert f.buffer.complete(task.task_id) is task
    assert task.attempt == 0
    assert f.buffer.next_timer() is None


def test_delay_and_release_need_a_leased_task() -> None:
    f = Fixture()
    task = f.push(P20)
    assert f.buffer.delay(task.task_id, 1.0) is False
    assert f.buffer.delay("unknown", 1.0) is False
    assert task.attempt == 0


def test_next_timer_is_the_earliest_lease_or_delay() -> None:
    f = Fixture()
    a, b = f.push(P30), f.push(P30)
    assert f.buffer.next_timer() is None
    f.buffer.pop_batch(1, lease_s=20)
    f.buffer.pop_batch(1, lease_s=8)
    assert f.buffer.next_timer() == 8.0
    f.buffer.complete(b.task_id)
    assert f.buffer.next_timer() == 20.0
    f.buffer.delay(a.task_id, 3.0)
    assert f.buffer.next_timer() == 3.0


# -- completion and partitions ---------------------------------------------------------------


def test_complete_removes_the_task_once() -> None:
    f = Fixture()
    task = f.push(P30)
    f.buffer.pop_batch(1, 10)
    assert f.buffer.complete(task.task_id) is task
    assert f.buffer.complete(task.task_id) is None
    assert task.task_id not in f.buffer
    assert len(f.buffer) == 0
    assert f.buffer.next_timer() is None
    f.clock.advance(60)
    assert f.buffer.expire() == []
    assert f.buffer.pop_batch(10, 10) == []


def test_late_ack_after_lease_expiry_still_completes_the_task() -> None:
    f = Fixture()
    task = f.push(P30)
    f.buffer.pop_batch(1, 10)
    f.clock.advance(10)
    f.buffer.expire()
    assert f.buffer.complete(task.task_id) is task
    assert f.buffer.pop_batch(10, 10) == []


def test_drop_partition_removes_ready_leased_and_delayed_tasks() -> None:
    f = Fixture()
    leased = f.push(P30, partition=1)
    delayed = f.push(P30, partition=1)
    ready = f.push(P10, partition=1)
    kept = f.push(P10, partition=2)
    f.buffer.pop_batch(2, 10)
    f.buffer.delay(delayed.task_id, 5)
    dropped = f.buffer.drop_partition("t", 1)
    assert dropped == [leased, delayed, ready]  # by offset
    assert f.buffer.drop_partition("t", 1) == []
    assert len(f.buffer) == 1
    assert f.buffer.bytes == len(kept.value) + TASK_OVERHEAD_BYTES
    assert f.buffer.complete(leased.task_id) is None
    assert f.buffer.next_timer() is None
    assert f.buffer.pop_batch(10, 10) == [kept]


def test_bytes_return_to_zero_after_everything_completes() -> None:
    f = Fixture()
    tasks = [f.push(p, value=b"x" * n) for n, p in enumerate([P10, P20, P30] * 20)]
    assert f.buffer.bytes == sum(len(t.value) + TASK_OVERHEAD_BYTES for t in tasks)
    served = f.buffer.pop_batch(40, 10)
    for task in served[:10]:
        f.buffer.delay(task.task_id, 1)
    for task in tasks:
        assert f.buffer.complete(task.task_id) is task
    assert (len(f.buffer), f.buffer.bytes) == (0, 0)
    stats = f.buffer.statistics()
    assert stats.tasks == stats.ready == stats.leased == stats.delayed == stats.total_bytes == 0
    assert all(s.bytes == s.ready == s.leased == s.delayed == 0 for s in stats.lanes.values())
    assert all(s.bytes == s.ready == s.leased == s.delayed == 0 for s in stats.classes.values())


def test_stale_heap_entries_are_compacted() -> None:
    f = Fixture()
    tasks = [f.push(P20) for _ in range(1000)]
    for task in tasks[:990]:
        f.buffer.complete(task.task_id)
    heap = f.buffer._ontime[P20]
    assert len(heap) == 10
    assert len(heap.entries) + len(heap.run) < 200
    assert f.pop_ids(20) == ids(tasks[990:])


# -- memory shares ---------------------------------------------------------------------------


def test_lane_pauses_at_its_share_and_resumes_below_the_hysteresis() -> None:
    f = Fixture(budget_bytes=100_000)  # p10 pauses at 20_000, resumes below 18_000
    value = b"x" * (1000 - TASK_OVERHEAD_BYTES)  # 1000 accounted bytes each
    tasks = [f.push(P10, value=value) for _ in range(20)]
    assert f.buffer.bytes == 20_000
    assert f.buffer.paused_lanes() == {"p10"}
    assert f.buffer.should_pause("p10")
    assert not f.buffer.should_pause("p20")
    f.buffer.complete(tasks[0].task_id)  # 19_000
    f.buffer.complete(tasks[1].task_id)  # 18_000: still paused (hysteresis)
    assert f.buffer.should_pause("p10")
    f.buffer.complete(tasks[2].task_id)  # 17_000
    assert not f.buffer.should_pause("p10")
    f.buffer.push(f.task(P10, value=value))  # 18_000: below the pause point again
    assert not f.buffer.should_pause("p10")


def test_flood_pauses_lanes_in_order_of_their_shares() -> None:
    f = Fixture(budget_bytes=100_000)
    value = b"x" * (1000 - TASK_OVERHEAD_BYTES)
    paused_at: dict[str, int] = {}
    tasks = []
    for _ in range(80):
        tasks.append(f.push(P30, value=value))
        for lane in f.buffer.paused_lanes() - paused_at.keys():
            paused_at[lane] = f.buffer.bytes
    assert paused_at == {
        "p10": 20_000,
        "offload": 30_000,
        "p20": 50_000,
        "retry": 70_000,
        "p30": 80_000,
    }
    for task in tasks:  # bytes accounted per lane are shared: the total decides
        f.buffer.complete(task.task_id)
    assert f.buffer.paused_lanes() == set()
    assert f.buffer.statistics().paused_lanes == frozenset()


def test_flow_control_sees_a_lane_that_paused_and_resumed_between_two_samples() -> None:
    f = Fixture(budget_bytes=100_000)  # p10 pauses at 20_000
    value = b"x" * (1000 - TASK_OVERHEAD_BYTES)
    assert f.buffer.pressure_statistics().paused_lanes == frozenset()
    tasks = [f.push(P10, value=value) for _ in range(20)]
    for task in tasks[:5]:
        f.buffer.complete(task.task_id)  # 15_000: resumed
    assert f.buffer.statistics().paused_lanes == frozenset(), "not paused now"
    assert f.buffer.pressure_statistics().paused_lanes == {"p10"}, "but it was since"
    assert f.buffer.pressure_statistics().paused_lanes == frozenset(), "each pause read once"


def test_settings_may_be_passed_positionally() -> None:
    clock = FakeClock()
    buffer = PriorityBuffer(
        1000, {"p30": 0.5}, 0.5, 1, now_ms=clock.wall_ms, monotonic=clock.monotonic
    )
    assert buffer.paused_lanes() == set()
    assert buffer.statistics().budget_bytes == 1000


def test_custom_shares_define_the_lanes() -> None:
    f = Fixture(budget_bytes=1000, shares={"p30": 1.0}, hysteresis=0.5)
    with pytest.raises(ValueError, match="unknown lane"):
        f.buffer.push(f.task(P10))
    with pytest.raises(ValueError, match="unknown lane"):
        f.buffer.should_pause("p10")


# -- statistics and validation ---------------------------------------------------------------


def test_statistics_per_lane_and_class() -> None:
    f = Fixture(budget_bytes=10_000)
    f.push(P30, value=b"ab")
    leased = f.push(P30, age_s=1)
    f.push(P10, age_s=30 * 60, value=b"abc")
    f.push(P10, lane="offload", age_s=40 * 60)
    f.push(P20, lane="retry", age_s=90)
    # served first: on-time P30 with the earlier deadline
    assert f.buffer.pop_batch(1, 10) == [leased]
    stats = f.buffer.statistics()
    assert (stats.tasks, stats.ready, stats.leased, stats.delayed) == (5, 4, 1, 0)
    assert stats.budget_bytes == 10_000
    assert stats.total_bytes == 5 * TASK_OVERHEAD_BYTES + 2 + 1 + 3 + 1 + 1
    assert set(stats.lanes) == set(BUFFER_LANES)
    p30_lane = stats.lanes["p30"]
    assert (p30_lane.ready, p30_lane.leased, p30_lane.delayed) == (1, 1, 0)
    assert p30_lane.bytes == 2 * TASK_OVERHEAD_BYTES + 3
    assert stats.lanes["offload"].ready == 1
    p10 = stats.classes[P10]
    assert (p10.ready, p10.leased, p10.late_ready) == (2, 0, 1)
    # The offloaded P10 (40 min old) does not count: the class's own queue is 30 min old.
    assert p10.oldest_ready_age_s == 30 * 60
    assert stats.classes[P30].oldest_ready_age_s == 0.0
    assert stats.classes[P20].oldest_ready_age_s == 90.0
    assert stats.classes[P20].late_ready == 1
    with pytest.raises(TypeError):
        stats.lanes["p30"] = p30_lane  # type: ignore[index]  # read-only mapping


def test_statistics_of_an_empty_buffer() -> None:
    stats = Fixture().buffer.statistics()
    assert stats.tasks == stats.total_bytes == 0
    assert all(c.oldest_ready_age_s is None for c in stats.classes.values())


def test_push_rejects_a_duplicate_task_id() -> None:
    f = Fixture()
    task = f.push(P20)
    with pytest.raises(ValueError, match="already in the buffer"):
        f.buffer.push(task)
    assert len(f.buffer) == 1


def test_push_rejects_an_unknown_class() -> None:
    f = Fixture()
    task = f.task(P20)
    task.priority = 40  # type: ignore[assignment]  # what a bad header would give
    with pytest.raises(ValueError, match="unknown class"):
        f.buffer.push(task)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget_bytes": 0}, "budget_bytes"),
        ({"shares": {}}, "at least one lane"),
        ({"shares": {"p10": 0.0}}, "positive number"),
        ({"shares": {"p10": math.nan}}, "positive number"),
        ({"hysteresis": 0.0}, "hysteresis"),
        ({"hysteresis": 1.5}, "hysteresis"),
        ({"late_share_every": 0}, "late_share_every"),
    ],
)
def test_constructor_validates(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Fixture(**kwargs)


@pytest.mark.parametrize(
    ("max_tasks", "lease_s", "match"),
    [(-1, 1.0, "max_tasks"), (1, 0.0, "lease_s"), (1, math.inf, "lease_s")],
)
def test_pop_batch_validates(max_tasks: int, lease_s: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Fixture().buffer.pop_batch(max_tasks, lease_s)


@pytest.mark.parametrize("delay_s", [-1.0, math.nan, math.inf])
def test_delay_validates(delay_s: float) -> None:
    f = Fixture()
    task = f.push(P20)
    f.buffer.pop_batch(1, 10)
    with pytest.raises(ValueError, match="delay_s"):
        f.buffer.delay(task.task_id, delay_s)


def test_pop_batch_of_zero_serves_nothing() -> None:
    f = Fixture()
    f.push(P20)
    assert f.buffer.pop_batch(0, 10) == []
    assert f.buffer.statistics().served_slots == 0


# -- state machine ---------------------------------------------------------------------------

CLASS_RANK = {P30: 0, P20: 1, P10: 2}
STATES = ("ready", "leased", "delayed")
K = 3  # late_share_every: small, so the anti-starvation slot is exercised often


class BufferMachine(RuleBasedStateMachine):
    """Random push/pop/complete/release/delay/expire/drop against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        # Compact the lazy heaps after a few stale entries, so the examples exercise it.
        self.saved_slack = task_heaps._COMPACT_SLACK
        task_heaps._COMPACT_SLACK = 2
        self.clock = FakeClock()
        self.buffer = PriorityBuffer(
            20_000, now_ms=self.clock.wall_ms, monotonic=self.clock.monotonic, late_share_every=K
        )
        self.tasks: dict[str, BufferedTask] = {}  # owned, by id
        self.state: dict[str, str] = {}  # id -> "ready" | "leased" | "delayed"
        self.seq: dict[str, int] = {}  # push order
        self.lease: dict[str, float] = {}
        self.due: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.deliveries: dict[str, int] = {}
        self.finished: set[str] = set()  # completed or dropped: must never reappear
        self.offsets = itertools.count()
        self.slots = 0

    def size(self, task_id: str) -> int:
        return len(self.tasks[task_id].value) + TASK_OVERHEAD_BYTES

    def teardown(self) -> None:
        task_heaps._COMPACT_SLACK = self.saved_slack

    def ids_in(self, state: str) -> list[str]:
        return sorted(i for i, s in self.state.items() if s == state)

    @rule(
        priority=st.sampled_from([P10, P20, P30]),
        lane=st.sampled_from(BUFFER_LANES),
        partition=st.integers(0, 2),
        # Deadline relative to now: often within a step or two of the clock, so tasks cross
        # it while buffered and sit exactly on it (on time is deadline > now).
        due_in_ms=st.one_of(st.integers(-4, 4).map(lambda n: n * 500), st.integers(-1500, 1500)),
        size=st.integers(0, 400),
    )
    def push(
        self, priority: Priority, lane: BufferLane, partition: int, due_in_ms: int, size: int
    ) -> None:
        offset = next(self.offsets)
        ingested = self.clock.wall_ms() + due_in_ms - int(SLO_SECONDS[priority] * 1000)
        task = BufferedTask(
            task_id=make_task_id("t", partition, offset),
            topic="t",
            partition=partition,
            offset=offset,
            lane=lane,
            priority=priority,
            deadline_ms=ingested + int(SLO_SECONDS[priority] * 1000),
            ingested_at_ms=ingested,
            value=b"x" * size,
        )
        self.buffer.push(task)
        self.tasks[task.task_id] = task
        self.state[task.task_id] = "ready"
        self.seq[task.task_id] = offset
        self.attempts[task.task_id] = self.deliveries[task.task_id] = 0

    def expected_batch(self, n: int) -> list[tuple[str, int]]:
        """The policy, written the slow and obvious way: (task id, rank) in serve order."""
        now = self.clock.wall_ms()
        ready = [self.tasks[i] for i in self.ids_in("ready")]
        served: list[tuple[str, int]] = []
        slots = self.slots

        def key(t: BufferedTask) -> int:
            # Offloaded tasks compete with a grace of one SLO.
            grace = int(SLO_SECONDS[t.priority] * 1000) if t.lane == "offload" else 0
            return t.deadline_ms + grace

        for _ in range(n):
            on_time = [t for t in ready if key(t) > now]
            late = [t for t in ready if t.lane != "offload" and t.deadline_ms <= now]
            offload = [t for t in ready if t.lane == "offload"]
            second = sorted(
                late, key=lambda t: (CLASS_RANK[t.priority], t.deadline_ms, self.seq[t.task_id])
            ) + sorted(offload, key=lambda t: (key(t), self.seq[t.task_id]))
            if (slots + 1) % K == 0 and second:
                pick, rank = second[0], now
            elif on_time:
                pick = min(on_time, key=lambda t: (key(t), self.seq[t.task_id]))
                rank = key(pick)
            elif second:
                pick, rank = second[0], now
            else:
                break
            slots += 1
            ready.remove(pick)
            served.append((pick.task_id, rank))
        return served

    @rule(n=st.integers(0, 6), lease_s=st.sampled_from([1.0, 5.0, 30.0]))
    def pop(self, n: int, lease_s: float) -> None:
        expected = self.expected_batch(n)
        batch = self.buffer.pop_batch(n, lease_s)
        assert [(t.task_id, t.rank) for t in batch] == expected
        for task in batch:
            assert self.state[task.task_id] == "ready"  # never served twice concurrently
            assert task.task_id not in self.finished
            self.state[task.task_id] = "leased"
            self.lease[task.task_id] = self.clock.monotonic() + lease_s
            self.deliveries[task.task_id] += 1
        self.slots += len(batch)

    def forget(self, task_id: str) -> None:
        del self.tasks[task_id], self.state[task_id]
        self.lease.pop(task_id, None)
        self.due.pop(task_id, None)
        self.finished.add(task_id)

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from([*self.state, *self.finished, "t/9/9"]))
        removed = self.buffer.complete(task_id)
        if task_id in self.state:
            assert removed is self.tasks[task_id]
            self.forget(task_id)
        else:
            assert removed is None

    @precondition(lambda self: self.state)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.state)))
        leased = self.state[task_id] == "leased"
        assert self.buffer.release(task_id) is leased
        if leased:
            self.state[task_id] = "ready"
            self.deliveries[task_id] -= 1
            del self.lease[task_id]

    @precondition(lambda self: self.state)
    @rule(data=st.data())
    def return_lease(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.state)))
        leased = self.state[task_id] == "leased"
        assert self.buffer.return_lease(task_id) is leased
        if leased:
            self.state[task_id] = "ready"  # the delivery counts: deliveries unchanged
            del self.lease[task_id]

    @precondition(lambda self: self.state)
    @rule(data=st.data(), delay_s=st.sampled_from([0.0, 0.5, 3.0, 20.0]))
    def delay(self, data: st.DataObject, delay_s: float) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.state)))
        leased = self.state[task_id] == "leased"
        assert self.buffer.delay(task_id, delay_s) is leased
        if leased:
            self.state[task_id] = "delayed"
            self.due[task_id] = self.clock.monotonic() + delay_s
            del self.lease[task_id]

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 4.0, 30.0, 300.0]))
    def advance_and_expire(self, seconds: float) -> None:
        self.clock.advance(seconds)
        now = self.clock.monotonic()
        expected = {i for i, t in self.lease.items() if t <= now}
        expired = self.buffer.expire()
        assert {t.task_id for t in expired} == expected
        assert [t.lease_expires for t in expired] == sorted(t.lease_expires for t in expired)
        for task_id in expected:
            self.state[task_id] = "ready"
            del self.lease[task_id]
        for task_id in [i for i, t in self.due.items() if t <= now]:
            self.state[task_id] = "ready"
            self.attempts[task_id] += 1
            del self.due[task_id]

    @rule(partition=st.integers(0, 2))
    def drop(self, partition: int) -> None:
        expected = sorted(
            (t for t in self.tasks.values() if t.partition == partition), key=lambda t: t.offset
        )
        assert self.buffer.drop_partition("t", partition) == expected
        for task in expected:
            self.forget(task.task_id)

    @invariant()
    def accounting_matches_the_model(self) -> None:
        buffer = self.buffer
        assert len(buffer) == len(self.tasks)
        assert buffer.bytes == sum(self.size(i) for i in self.tasks)
        stats = buffer.statistics()
        counts = [sum(s == name for s in self.state.values()) for name in STATES]
        assert [stats.ready, stats.leased, stats.delayed] == counts
        assert buffer.has_ready() is (counts[0] > 0)
        for lane, lane_stats in stats.lanes.items():
            mine = [i for i, t in self.tasks.items() if t.lane == lane]
            counts = [sum(self.state[i] == s for i in mine) for s in STATES]
            assert [lane_stats.ready, lane_stats.leased, lane_stats.delayed] == counts
            assert lane_stats.bytes == sum(self.size(i) for i in mine)
        for priority, class_stats in stats.classes.items():
            mine = [i for i, t in self.tasks.items() if t.priority is priority]
            counts = [sum(self.state[i] == s for i in mine) for s in STATES]
            assert [class_stats.ready, class_stats.leased, class_stats.delayed] == counts
            assert class_stats.bytes == sum(self.size(i) for i in mine)
        for lane, pause_at in ((lane, share * 20_000) for lane, share in _SHARES.items()):
            if buffer.bytes >= pause_at:
                assert buffer.should_pause(lane)
            elif buffer.bytes < pause_at * 0.9:
                assert not buffer.should_pause(lane)

    @invariant()
    def every_task_is_in_exactly_one_place(self) -> None:
        buffer = self.buffer
        heaps: dict[tuple[object, ...], task_heaps.LazyHeap] = {
            **{("ready", p, "ontime"): h for p, h in buffer._ontime.items()},
            **{("ready", p, "late"): h for p, h in buffer._late.items()},
            **{("ready", p, "offload"): h for p, h in buffer._offload.items()},
            **{("ready", p, "offload-late"): h for p, h in buffer._offload_late.items()},
            ("delayed",): buffer._delays,
        }
        places: dict[str, list[tuple[object, ...]]] = {}
        for where, heap in heaps.items():
            live = [e for e in (*heap.entries, *heap.run) if e[3]._gen == e[2]]
            assert len(heap) == len(live)  # the stale count is exact
            for entry in live:
                places.setdefault(entry[3].task_id, []).append(where)
                assert entry[3]._heap is heap
        # Leases: one timer per served batch; a task holds a slot in its group while leased.
        for expires, _, group in buffer._leases:
            held = [t for t in group.tasks if t is not None]
            assert group.live == len(held)
            for task in held:
                assert task._lease is group
                assert group.tasks[task._lease_i] is task
                assert task.lease_expires == expires
                places.setdefault(task.task_id, []).append(("leased",))
        assert places.keys() == self.state.keys()
        assert not places.keys() & self.finished  # a finished task never reappears
        for task_id, [where] in places.items():
            task = self.tasks[task_id]
            assert where[0] == self.state[task_id]
            assert buffer.get(task_id) is task
            assert (task.attempt, task.delivery_count) == (
                self.attempts[task_id],
                self.deliveries[task_id],
            )
            if where[0] == "ready":
                assert where[1] is task.priority
                assert str(where[2]).startswith("offload") == (task.lane == "offload")
            elif where[0] == "leased":
                assert buffer.lease_of(task_id) is task
                assert task.lease_expires == self.lease[task_id]
            else:
                assert buffer.lease_of(task_id) is None

    @invariant()
    def next_timer_is_the_earliest_timer(self) -> None:
        timers = [*self.lease.values(), *self.due.values()]
        assert self.buffer.next_timer() == min(timers, default=None)


_SHARES: dict[BufferLane, float] = {
    "p10": 0.2,
    "p20": 0.5,
    "p30": 0.8,
    "offload": 0.3,
    "retry": 0.7,
}

BufferMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=40, deadline=None)
test_buffer_state_machine = BufferMachine.TestCase
