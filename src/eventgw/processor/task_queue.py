"""The tasks a worker holds but has not started, in the orchestrator's order (smallest rank).

A worker holds at most its prefetch here (docs/dispatch-protocol.md). Ordering by the rank
the orchestrator gave each task keeps priority inside the worker too: a P30 task that
arrives behind prefetched P10 work starts at the next free slot, not after them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["TaskQueue"]

T = TypeVar("T")

_ARRIVAL_BITS: Final = 64


class TaskQueue(Generic[T]):
    """A priority queue of items by ``(rank, arrival)`` with direct hand-off to waiters.

    ``get`` waits while the queue is empty; ``put`` gives the item straight to the oldest
    waiter when there is one (no heap work: an idle runner starts it at once), else queues
    it. After ``close`` every waiter, and every later ``get``, gets None. Not thread-safe:
    one event loop owns it.

    Items are held by an int key, rank x 2**64 + arrival number (keys order by rank, then
    arrival, for any int64 rank and the first 2**64 puts), in two places: most tasks come
    in rank order (the orchestrator sends them in the order it serves them), and such a key
    is appended to ``_run``, a deque kept sorted, and taken from its head, both O(1); only a
    key below the run's last goes to ``_heap``. The most urgent item is the smaller of the
    two heads. (With one heap of tuples, its pops were 7 % of the processor's CPU.)
    """

    def __init__(self) -> None:
        self._run: deque[int] = deque()  # sorted keys
        self._heap: list[int] = []  # a binary heap of the keys that came out of order
        self._items: dict[int, T] = {}  # by key
        self._order = itertools.count()
        self._waiters: list[asyncio.Future[T | None]] = []
        self._closed = False

    def __len__(self) -> int:
        """Items waiting (not handed out)."""
        return len(self._items)

    @property
    def waiting(self) -> int:
        """``get`` calls waiting for an item."""
        return len(self._waiters)

    def put(self, rank: int, item: T) -> None:
        """Add ``item``; never blocks. Raises RuntimeError once closed."""
        if self._closed:
            raise RuntimeError("TaskQueue is closed")
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(item)
                return
        self._push(rank, item)

    def _push(self, rank: int, item: T) -> None:
        key = (rank << _ARRIVAL_BITS) + next(self._order)
        self._items[key] = item
        run = self._run
        if not run or run[-1] < key:
            run.append(key)
        else:
            heapq.heappush(self._heap, key)

    def get_nowait(self) -> T | None:
        """The most urgent item, or None when none waits; never blocks.

        The runner's common case (work queued behind the task it just finished) without
        the coroutine a `get` call costs; on None the caller awaits `get`.
        """
        run, heap = self._run, self._heap
        if run:
            key = heapq.heappop(heap) if heap and heap[0] < run[0] else run.popleft()
        elif heap:
            key = heapq.heappop(heap)
        else:
            return None
        return self._items.pop(key)

    async def get(self) -> T | None:
        """The most urgent item, waiting for one; None once the queue is closed."""
        if self._items:
            return self.get_nowait()
        if self._closed:
            return None
        waiter: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed an item just before the cancellation arrived: keep it, never lose it.
            if waiter.done() and not waiter.cancelled():
                item = waiter.result()
                if item is not None:
                    self._push(-1, item)
            else:
                waiter.cancel()
            raise

    def take_all(self) -> list[T]:
        """Remove and return every waiting item, most urgent first."""
        items = self._items
        taken = [items[key] for key in sorted((*self._run, *self._heap))]
        self._run.clear()
        self._heap.clear()
        items.clear()
        return taken

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the waiting items for which ``predicate(item)`` is true."""
        items = self._items
        removed = [key for key in (*self._run, *self._heap) if predicate(items[key])]
        if removed:
            gone = set(removed)
            self._run = deque(key for key in self._run if key not in gone)
            self._heap = [key for key in self._heap if key not in gone]
            heapq.heapify(self._heap)
        return [items.pop(key) for key in sorted(removed)]

    def close(self) -> None:
        """Wake every waiter with None; later puts raise, later gets return None."""
        self._closed = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
