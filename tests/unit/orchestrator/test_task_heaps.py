"""`LazyHeap`: a sorted run for in-order pushes and a binary heap for the rest, one order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventgw.core.envelope import Priority
from eventgw.orchestrator import task_heaps
from eventgw.orchestrator.task_heaps import BufferedTask, LazyHeap, pop_earliest


def task(offset: int) -> BufferedTask:
    return BufferedTask(f"t/0/{offset}", "t", 0, offset, "p20", Priority.P20, 0, 0, b"")


def drain(heap: LazyHeap) -> list[tuple[float, int]]:
    out = []
    while (top := heap.peek()) is not None:
        out.append((top[0], top[1]))
        heap.pop()
    return out


def test_in_order_pushes_go_to_the_run_and_the_rest_to_the_heap() -> None:
    heap = LazyHeap()
    for order, key in enumerate([10, 20, 20, 30, 15, 40, 5]):
        heap.push(key, order, task(order))
    assert [e[0] for e in heap.run] == [10, 20, 20, 30, 40]
    assert sorted(e[0] for e in heap.entries) == [5, 15]
    assert len(heap) == 7
    assert drain(heap) == [(5, 6), (10, 0), (15, 4), (20, 1), (20, 2), (30, 3), (40, 5)]
    assert len(heap) == 0


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.booleans()),  # (key, removed before the drain)
        max_size=200,
    ),
    st.integers(1, 8),
)
def test_pops_every_live_entry_in_key_then_push_order(
    pushes: list[tuple[int, bool]], slack: int
) -> None:
    """Whatever the mix of in-order and out-of-order pushes and removals (stale entries,
    compaction), the live entries come out by (key, order) and ``len`` counts them."""
    saved, task_heaps._COMPACT_SLACK = task_heaps._COMPACT_SLACK, slack
    try:
        heap = LazyHeap()
        tasks = [task(i) for i in range(len(pushes))]
        for order, (key, _) in enumerate(pushes):
            heap.push(key, order, tasks[order])
        for order, (_, removed) in enumerate(pushes):
            if removed:  # what the buffer does when a ready task leaves without a pop
                tasks[order]._gen += 1
                heap.discard()
        live = sorted((key, order) for order, (key, removed) in enumerate(pushes) if not removed)
        assert len(heap) == len(live)
        assert drain(heap) == live
        assert len(heap.entries) == len(heap.run) == 0
    finally:
        task_heaps._COMPACT_SLACK = saved


def test_pop_earliest_takes_the_smallest_top_across_heaps() -> None:
    a, b = LazyHeap(), LazyHeap()
    a.push(30, 0, task(0))
    b.push(20, 1, task(1))
    a.push(10, 2, task(2))  # out of order in a: its heap, not its run
    popped = [pop_earliest([a, b]) for _ in range(4)]
    assert [t.offset if t else None for t in popped] == [2, 1, 0, None]
