"""The worker's local queue: rank order, hand-off to waiters, close, never losing an item."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventgw.processor.task_queue import TaskQueue


async def test_items_come_out_by_rank_then_arrival() -> None:
    q: TaskQueue[str] = TaskQueue()
    for rank, item in [(5, "p10-a"), (1, "p30"), (5, "p10-b"), (3, "p20")]:
        q.put(rank, item)
    assert len(q) == 4
    assert [await q.get() for _ in range(4)] == ["p30", "p20", "p10-a", "p10-b"]


async def test_a_waiting_getter_gets_the_item_directly() -> None:
    q: TaskQueue[str] = TaskQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert q.waiting == 1
    q.put(9, "x")
    assert len(q) == 0, "handed over, never queued"
    assert await getter == "x"


async def test_close_wakes_waiters_and_later_gets_with_none() -> None:
    q: TaskQueue[str] = TaskQueue()
    getters = [asyncio.ensure_future(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.close()
    assert await asyncio.gather(*getters) == [None, None, None]
    assert await q.get() is None
    with pytest.raises(RuntimeError, match="closed"):
        q.put(1, "late")


async def test_an_item_handed_to_a_cancelled_getter_is_kept() -> None:
    q: TaskQueue[str] = TaskQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put(1, "precious")  # handed to the getter ...
    getter.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert len(q) == 1
    assert await q.get() == "precious"


async def test_take_all_and_remove_if() -> None:
    q: TaskQueue[tuple[str, int]] = TaskQueue()
    for i in range(6):
        q.put(i, ("a" if i % 2 else "b", i))
    removed = q.remove_if(lambda item: item[0] == "a")
    assert removed == [("a", 1), ("a", 3), ("a", 5)]
    assert q.take_all() == [("b", 0), ("b", 2), ("b", 4)]
    assert len(q) == 0


async def test_get_nowait_takes_by_rank_and_gives_none_when_empty() -> None:
    q: TaskQueue[str] = TaskQueue()
    assert q.get_nowait() is None
    for rank, item in [(5, "p10"), (1, "p30"), (3, "p20")]:
        q.put(rank, item)
    assert [q.get_nowait() for _ in range(4)] == ["p30", "p20", "p10", None]
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put(2, "handed")
    assert q.get_nowait() is None, "handed to the waiting getter, never queued"
    assert await getter == "handed"


async def test_order_holds_across_the_whole_int64_rank_range() -> None:
    q: TaskQueue[str] = TaskQueue()
    ranks = [2**63 - 1, 0, -(2**63), 1_733_390_060_000, 1_733_390_060_000, -1, 2**63 - 1]
    for i, rank in enumerate(ranks):
        q.put(rank, f"{rank}#{i}")
    expected = [f"{r}#{i}" for i, r in sorted(enumerate(ranks), key=lambda p: (p[1], p[0]))]
    assert q.take_all() == expected
    assert len(q) == 0
    assert q.get_nowait() is None


@given(
    st.lists(st.tuples(st.integers(-3, 40), st.booleans(), st.booleans()), min_size=1, max_size=60)
)
def test_items_come_out_by_rank_then_arrival_whatever_the_put_order(
    steps: list[tuple[int, bool, bool]],
) -> None:
    # Ranks mostly grow (the orchestrator's order) with some out of order; gets and removals
    # interleave with puts: the queue always hands out its smallest (rank, arrival).
    q: TaskQueue[tuple[int, int]] = TaskQueue()
    model: list[tuple[int, int]] = []
    rank = 0
    for n, (step, take, remove) in enumerate(steps):
        rank = rank + step if step >= 0 else step
        q.put(rank, (rank, n))
        model.append((rank, n))
        if take:
            model.sort()
            assert q.get_nowait() == model.pop(0)
        if remove and n % 7 == 0:
            assert q.remove_if(lambda item: item[1] % 3 == 0) == sorted(
                x for x in model if x[1] % 3 == 0
            )
            model = [x for x in model if x[1] % 3]
        assert len(q) == len(model)
    half = len(model) // 2
    model.sort()
    assert [q.get_nowait() for _ in range(half)] == model[:half]
    assert q.take_all() == model[half:]
    assert q.get_nowait() is None
