"""Tests for eventgw.orchestrator.ack_tracker: commit only up to the first unfinished offset."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw.orchestrator.ack_tracker import AckTracker, PartitionAckStatistics


def tracker_with(offsets: list[int], topic: str = "t", partition: int = 0) -> AckTracker:
    tracker = AckTracker()
    for offset in offsets:
        tracker.track(topic, partition, offset)
    return tracker


def test_unknown_partition_has_nothing_to_commit() -> None:
    tracker = AckTracker()
    assert tracker.committable("t", 0) is None
    assert tracker.pending() == {}
    assert tracker.outstanding("t", 0) == 0
    assert tracker.finish("t", 0, 5) is False


def test_nothing_finished_means_nothing_to_commit() -> None:
    tracker = tracker_with([10, 11, 12])
    # The consumer started at 10: committing 10 would move nothing.
    assert tracker.committable("t", 0) is None
    assert tracker.pending() == {}
    assert tracker.outstanding("t", 0) == 3


def test_commits_stop_at_the_first_unfinished_offset() -> None:
    tracker = tracker_with([10, 11, 12, 13])
    assert tracker.finish("t", 0, 12) is True
    assert tracker.committable("t", 0) is None  # 10 still holds the position back
    assert tracker.finish("t", 0, 10) is True
    assert tracker.committable("t", 0) == 11
    assert tracker.finish("t", 0, 11) is True
    assert tracker.committable("t", 0) == 13
    assert tracker.finish("t", 0, 13) is True
    assert tracker.committable("t", 0) == 14  # all finished: last tracked + 1
    assert tracker.outstanding("t", 0) == 0


def test_gaps_between_offsets_do_not_hold_commits_back() -> None:
    # Transaction markers take offsets that are never delivered.
    tracker = tracker_with([3, 5, 9])
    tracker.finish("t", 0, 3)
    assert tracker.committable("t", 0) == 5
    tracker.finish("t", 0, 5)
    assert tracker.committable("t", 0) == 9
    tracker.finish("t", 0, 9)
    assert tracker.committable("t", 0) == 10


def test_finish_is_idempotent_and_reports_stale_results() -> None:
    tracker = tracker_with([0, 1])
    assert tracker.finish("t", 0, 1) is True
    assert tracker.finish("t", 0, 1) is False  # already finished, still behind the head
    assert tracker.finish("t", 0, 0) is True
    assert tracker.finish("t", 0, 0) is False  # already passed by the head
    assert tracker.finish("t", 0, 7) is False  # never tracked
    assert tracker.committable("t", 0) == 2


@pytest.mark.parametrize("offset", [4, 5])
def test_track_rejects_non_increasing_offsets(offset: int) -> None:
    tracker = tracker_with([5])
    with pytest.raises(ValueError, match="increasing order"):
        tracker.track("t", 0, offset)


def test_track_and_mark_reject_negative_offsets() -> None:
    tracker = AckTracker()
    with pytest.raises(ValueError, match=">= 0"):
        tracker.track("t", 0, -1)
    with pytest.raises(ValueError, match=">= 0"):
        tracker.mark_committed("t", 0, -1)


def test_pending_reports_only_partitions_that_moved_since_the_last_commit() -> None:
    tracker = AckTracker()
    for partition in (0, 1):
        for offset in range(5):
            tracker.track("t", partition, offset)
    tracker.track("u", 0, 100)
    tracker.finish("t", 0, 0)
    tracker.finish("t", 0, 1)
    tracker.finish("t", 1, 0)
    assert tracker.pending() == {("t", 0): 2, ("t", 1): 1}

    tracker.mark_committed("t", 0, 2)
    tracker.mark_committed("t", 1, 1)
    assert tracker.pending() == {}
    assert tracker.committable("t", 0) is None

    tracker.finish("t", 0, 2)
    assert tracker.pending() == {("t", 0): 3}


def test_late_completion_of_an_older_commit_keeps_the_highest() -> None:
    tracker = tracker_with(list(range(10)))
    for offset in range(6):
        tracker.finish("t", 0, offset)
    tracker.mark_committed("t", 0, 6)
    tracker.mark_committed("t", 0, 3)  # an older commit completing late
    assert tracker.committable("t", 0) is None
    assert tracker.statistics().partitions[0].committed == 6


def test_mark_above_the_position_never_lets_a_commit_move_the_group_back() -> None:
    # The group already holds 50 (e.g. committed by a previous owner); our position is 12.
    tracker = tracker_with(list(range(10, 60)))
    tracker.mark_committed("t", 0, 50)
    tracker.finish("t", 0, 10)
    tracker.finish("t", 0, 11)
    assert tracker.committable("t", 0) is None


def test_mark_for_an_unknown_partition_is_ignored() -> None:
    tracker = AckTracker()
    tracker.mark_committed("t", 0, 5)
    assert tracker.partitions() == []


def test_drop_forgets_the_partition_and_allows_tracking_again() -> None:
    tracker = tracker_with([7, 8, 9])
    tracker.finish("t", 0, 7)
    assert tracker.drop("t", 0) == 2
    assert tracker.drop("t", 0) == 0
    assert tracker.finish("t", 0, 8) is False  # result after revoke: unknown
    assert tracker.committable("t", 0) is None
    assert tracker.pending() == {}
    tracker.track("t", 0, 8)  # re-assigned: the new owner starts from the committed offset
    tracker.finish("t", 0, 8)
    assert tracker.committable("t", 0) == 9


def test_partitions_are_independent() -> None:
    tracker = AckTracker()
    tracker.track("t", 0, 0)
    tracker.track("t", 1, 0)
    tracker.track("u", 0, 0)
    tracker.finish("t", 1, 0)
    assert tracker.committable("t", 0) is None
    assert tracker.committable("t", 1) == 1
    assert tracker.committable("u", 0) is None
    assert tracker.partitions() == [("t", 0), ("t", 1), ("u", 0)]


def test_statistics() -> None:
    tracker = tracker_with([4, 5, 6])
    tracker.track("a", 2, 0)
    tracker.finish("t", 0, 4)
    tracker.mark_committed("t", 0, 5)
    stats = tracker.statistics()
    assert stats.unfinished == 3
    assert stats.partitions == (
        PartitionAckStatistics(
            "a", 2, unfinished=1, first_unfinished=0, next_offset=0, committed=None, uncommitted=1
        ),
        PartitionAckStatistics(
            "t", 0, unfinished=2, first_unfinished=5, next_offset=5, committed=5, uncommitted=2
        ),
    )
    tracker.finish("a", 2, 0)
    assert tracker.statistics().partitions[0].first_unfinished is None


def test_uncommitted_counts_consumed_offsets_above_the_last_commit() -> None:
    tracker = tracker_with([10, 11, 12, 13])
    assert tracker.statistics().partitions[0].uncommitted == 4  # from where it started
    for offset in (10, 11, 12, 13):
        tracker.finish("t", 0, offset)
    assert tracker.statistics().partitions[0].uncommitted == 4  # finished is not committed
    tracker.mark_committed("t", 0, 12)
    assert tracker.statistics().partitions[0].uncommitted == 2
    tracker.mark_committed("t", 0, 14)
    assert tracker.statistics().partitions[0].uncommitted == 0
    tracker.track("t", 0, 20)  # a gap (compacted or transaction markers) counts as consumed
    assert tracker.statistics().partitions[0].uncommitted == 7


def test_memory_stays_bounded_while_one_offset_holds_the_head() -> None:
    tracker = tracker_with(list(range(10_000)))
    for offset in range(1, 10_000):
        assert tracker.finish("t", 0, offset)
    state = tracker._partitions[("t", 0)]
    assert len(state.offsets) < 200  # compacted: the finished tail is not kept
    assert tracker.committable("t", 0) is None
    tracker.finish("t", 0, 0)
    assert tracker.committable("t", 0) == 10_000


# -- properties ------------------------------------------------------------------------------

PARTITIONS = [("t", 0), ("t", 1), ("u", 0)]

# An operation: ("track", partition index, gap) | ("finish", partition index, pick) |
# ("commit", partition index, 0) | ("drop", partition index, 0).
operations = st.lists(
    st.tuples(
        st.sampled_from(["track", "track", "finish", "finish", "commit", "drop"]),
        st.integers(0, len(PARTITIONS) - 1),
        st.integers(0, 1_000),
    ),
    max_size=150,
)


@settings(max_examples=100, deadline=None)
@given(ops=operations, start=st.integers(0, 10**12))
def test_random_interleavings_match_a_simple_model(
    ops: list[tuple[str, int, int]], start: int
) -> None:
    tracker = AckTracker()
    # Model per partition: tracked offsets, finished offsets, first tracked, committed floor.
    tracked: dict[tuple[str, int], list[int]] = {}
    finished: dict[tuple[str, int], set[int]] = {}
    floor: dict[tuple[str, int], int] = {}
    dirty: set[tuple[str, int]] = set()  # finished above an open offset since last pending()
    for op, index, arg in ops:
        tp = topic, partition = PARTITIONS[index]
        offsets = tracked.setdefault(tp, [])
        done = finished.setdefault(tp, set())
        if op == "track":
            offset = (offsets[-1] + 1 + arg % 3) if offsets else start + arg
            tracker.track(topic, partition, offset)
            if not offsets:
                floor[tp] = offset
            offsets.append(offset)
        elif op == "finish":
            offset = offsets[arg % len(offsets)] if offsets and arg % 5 else start + arg
            was_open = offset in offsets and offset not in done
            assert tracker.finish(topic, partition, offset) is was_open
            if was_open:
                done.add(offset)
                if any(o < offset for o in offsets if o not in done):
                    dirty.add(tp)
        elif op == "commit":
            position = tracker.committable(topic, partition)
            if position is not None:
                tracker.mark_committed(topic, partition, position)
                floor[tp] = position
        else:
            tracker.drop(topic, partition)
            tracked.pop(tp)
            finished.pop(tp)
            floor.pop(tp, None)
            dirty.discard(tp)

        pending = tracker.pending()
        for key in PARTITIONS:
            offsets = tracked.get(key, [])
            open_offsets = [o for o in offsets if o not in finished.get(key, set())]
            position = tracker.committable(*key)
            assert tracker.outstanding(*key) == len(open_offsets)
            if not offsets:
                assert position is None
                assert key not in pending
                continue
            expected = open_offsets[0] if open_offsets else offsets[-1] + 1
            # Never past an unfinished offset; last + 1 once all are finished.
            assert position == (expected if expected > floor[key] else None)
            if position is not None:
                assert all(position <= o for o in open_offsets)
            # Pending reports exactly the partitions that advanced past the floor, and the
            # stuck ones where something above the first open offset finished (same place).
            if position is None and key in dirty:
                assert pending.get(key) == expected
            else:
                assert pending.get(key) == position
        dirty.clear()


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(200)))
def test_any_finish_order_commits_exactly_up_to_the_smallest_unfinished(order: list[int]) -> None:
    # Large enough to exercise the deque compaction.
    tracker = tracker_with([2 * i for i in range(200)])  # gaps of one offset
    open_indexes = set(range(200))
    for index in order:
        assert tracker.finish("t", 0, 2 * index)
        open_indexes.remove(index)
        expected = 2 * min(open_indexes) if open_indexes else 399
        assert tracker.committable("t", 0) == (expected if expected > 0 else None)
        assert tracker.outstanding("t", 0) == len(open_indexes)


def test_finished_runs_above_the_first_unfinished_offset() -> None:
    t = AckTracker()
    for o in range(10, 30):
        t.track("t", 0, o)
    for o in (*range(12, 15), *range(16, 30)):
        t.finish("t", 0, o)
    # 10, 11 and 15 unfinished: runs 12..14 and 16..29
    assert t.finished_runs("t", 0) == [(12, 14), (16, 29)]
    assert t.finished_runs("t", 9) == []


def test_finished_runs_survive_compaction() -> None:
    t = AckTracker()
    for o in range(1000):
        t.track("t", 0, o)
    for o in range(1000):
        if o not in (0, 500):
            t.finish("t", 0, o)
    assert len(t._partitions["t", 0].offsets) < 10, "compacted"
    assert t.finished_runs("t", 0) == [(1, 499), (501, 999)]


def test_pending_reports_a_stuck_partition_whose_finished_runs_grew() -> None:
    t = AckTracker()
    for o in range(5, 10):
        t.track("t", 0, o)
    t.finish("t", 0, 7)  # 5 is still unfinished: the position cannot move
    assert t.pending() == {("t", 0): 5}, "committed again, to record 7 in the metadata"
    assert t.pending() == {}, "nothing new since"
    t.finish("t", 0, 8)
    assert t.pending() == {("t", 0): 5}
