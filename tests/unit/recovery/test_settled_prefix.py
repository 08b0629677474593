"""How far a failed-writes batch may be committed: per partition, up to its first unsettled
record, never past it (at-least-once), and as soon as the records before it settle.

docs/delivery-semantics.md, "Duplicates"; the committer that uses it is
tests/unit/recovery/test_prefix_committer.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventgw.recovery.settled_prefix import SettledPrefix

FW = "failed-writes"


def batch(*offsets: tuple[int, int]) -> SettledPrefix:
    """A batch of (partition, offset) records of the failed-writes topic, in poll order."""
    return SettledPrefix([(FW, p, o) for p, o in offsets])


def test_a_partition_commits_up_to_its_first_unsettled_record() -> None:
    prefix = batch((0, 10), (0, 11), (0, 12), (0, 13))
    assert prefix.advanced() == {}, "nothing settled: nothing to commit"
    prefix.settle(0)
    prefix.settle(2)  # above the unsettled 11: held back
    assert prefix.advanced() == {(FW, 0): 11}
    prefix.settle(1)
    assert prefix.advanced() == {(FW, 0): 13}, "11 settled: the prefix runs through 12"
    prefix.settle(3)
    assert prefix.advanced() == {(FW, 0): 14}, "all settled: the next offset to read"
    assert prefix.unsettled == 0


def test_partitions_advance_independently() -> None:
    """One pending record holds back only its own partition (the old batch commit held all)."""
    prefix = batch((0, 5), (1, 7), (0, 6), (1, 8), (2, 0))
    for i in (1, 3, 4):  # partition 1 and 2 done; partition 0's first record pending
        prefix.settle(i)
    assert prefix.advanced() == {(FW, 1): 9, (FW, 2): 1}
    assert prefix.position((FW, 0)) == 5
    assert prefix.unsettled == 2


def test_offsets_with_gaps_commit_past_the_gap() -> None:
    """Transaction markers and compaction leave gaps: the prefix is over records read."""
    prefix = batch((0, 3), (0, 9), (0, 20))
    prefix.settle(0)
    assert prefix.advanced() == {(FW, 0): 9}
    prefix.settle(1)
    prefix.settle(2)
    assert prefix.advanced() == {(FW, 0): 21}


def test_only_what_moved_since_the_last_commit_is_handed_out() -> None:
    prefix = batch((0, 0), (0, 1), (1, 0))
    prefix.settle(0)
    prefix.settle(2)
    first = prefix.advanced()
    assert first == {(FW, 0): 1, (FW, 1): 1}
    prefix.mark_committed(first)
    assert prefix.advanced() == {}
    prefix.settle(1)
    assert prefix.advanced() == {(FW, 0): 2}


def test_a_failed_commit_is_handed_out_again() -> None:
    prefix = batch((0, 0), (0, 1))
    prefix.settle(0)
    assert prefix.advanced() == {(FW, 0): 1}
    # The commit failed: mark_committed is not called; the next advance includes it.
    prefix.settle(1)
    assert prefix.advanced() == {(FW, 0): 2}


def test_settling_twice_changes_nothing() -> None:
    prefix = batch((0, 0), (0, 1))
    prefix.settle(0)
    prefix.settle(0)
    assert prefix.unsettled == 1
    assert prefix.advanced() == {(FW, 0): 1}


def test_bad_input_is_refused_with_what_was_wrong() -> None:
    with pytest.raises(ValueError, match=r"offset 4 of failed-writes\[0\] \(index 1\)"):
        batch((0, 5), (0, 4))
    prefix = batch((0, 5))
    with pytest.raises(ValueError, match="index 1 is not in the batch of 1"):
        prefix.settle(1)
    with pytest.raises(ValueError, match="index -1"):
        prefix.settle(-1)
    with pytest.raises(ValueError, match=r"failed-writes\[3\] has no record in this batch"):
        prefix.mark_committed({(FW, 3): 1})
    assert prefix.unsettled == 1, "a refused call changes nothing"
    assert prefix.advanced() == {}


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[tuple[str, int, int]], list[int]]:
    """A batch over up to 3 partitions (increasing offsets with gaps) and a settle order."""
    n = draw(st.integers(1, 40))
    partitions = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    next_offset = {p: draw(st.integers(0, 1000)) for p in range(3)}
    positions = []
    for p in partitions:
        positions.append((FW, p, next_offset[p]))
        next_offset[p] += draw(st.integers(1, 3))
    order = draw(st.permutations(range(n)))
    settled = draw(st.integers(0, n))
    return positions, list(order[:settled])


@given(batches())
def test_a_position_never_passes_an_unsettled_record_and_stops_only_at_one(
    drawn: tuple[list[tuple[str, int, int]], list[int]],
) -> None:
    positions, settle_order = drawn
    prefix = SettledPrefix(positions)
    committed: dict[tuple[str, int], int] = {}
    for i in settle_order:
        prefix.settle(i)
        moved = prefix.advanced()
        for tp, offset in moved.items():
            assert offset > committed.get(tp, -1), "a commit never moves backwards"
        prefix.mark_committed(moved)
        committed.update(moved)
    done = set(settle_order)
    for tp in {(t, p) for t, p, _ in positions}:
        records = [(i, o) for i, (t, p, o) in enumerate(positions) if (t, p) == tp]
        unsettled = [o for i, o in records if i not in done]
        want = unsettled[0] if unsettled else records[-1][1] + 1
        # At-least-once: never past an unsettled record. Prompt: up to the first one.
        assert prefix.position(tp) == want
        if want > records[0][1]:
            assert committed[tp] == want, "every advance was handed out"
        else:
            assert tp not in committed, "nothing settled at the head: nothing committed"
    assert prefix.unsettled == len(positions) - len(done)


def test_the_intent_is_the_first_send_of_a_record_past_the_position() -> None:
    prefix = SettledPrefix([("fw", 0, 0), ("fw", 0, 1), ("fw", 0, 2), ("fw", 1, 7)])
    assert prefix.sent_from_ms(("fw", 0), now_ms=50) == 50, "nothing sent: now"
    prefix.sent([0, 1], at_ms=10)
    prefix.sent([1, 2], at_ms=20)  # 1 again (a retry): its first send counts
    prefix.settle(0)
    assert prefix.sent_from_ms(("fw", 0), now_ms=50) == 10, "offset 1, sent at 10, is past"
    prefix.settle(2)  # confirmed above the pending offset 1: still past the position
    assert prefix.sent_from_ms(("fw", 0), now_ms=50) == 10
    prefix.settle(1)
    assert prefix.sent_from_ms(("fw", 0), now_ms=50) == 50, "all settled: now"
    assert prefix.sent_from_ms(("fw", 1), now_ms=60) == 60
    with pytest.raises(ValueError, match="index 4"):
        prefix.sent([4], at_ms=1)
