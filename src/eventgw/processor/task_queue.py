"""The tasks a worker holds but has not started, in the orchestrator's order (smallest rank).

A worker holds at most its prefetch here (docs/dispatch-protocol.md). Ordering by the rank
the orchestrator gave each task keeps priority inside the worker too: a P30 task that
arrives behind prefetched P10 work starts at the next free slot, not after them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["TaskQueue"]

T = TypeVar("T")


class TaskQueue(Generic[T]):
    """A priority queue of items by ``(rank, arrival)`` with direct hand-off to waiters.

    ``get`` waits while the queue is empty; ``put`` gives the item straight to the oldest
    waiter when there is one (no heap work: an idle runner starts it at once), else pushes
    it. After ``close`` every waiter, and every later ``get``, gets None. Not thread-safe:
    one event loop owns it.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._waiters: list[asyncio.Future[T | None]] = []
        self._order = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        """Items waiting (not handed out)."""
        return len(self._heap)

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
        heapq.heappush(self._heap, (rank, next(self._order), item))

    def get_nowait(self) -> T | None:
        """The most urgent item, or None when none waits; never blocks.

        The runner's common case (work queued behind the task it just finished) without
        the coroutine a `get` call costs; on None the caller awaits `get`.
        """
        if self._heap:
            return heapq.heappop(self._heap)[2]
        return None

    async def get(self) -> T | None:
        """The most urgent item, waiting for one; None once the queue is closed."""
        if self._heap:
            return heapq.heappop(self._heap)[2]
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
                    heapq.heappush(self._heap, (-1, next(self._order), item))
            else:
                waiter.cancel()
            raise

    def take_all(self) -> list[T]:
        """Remove and return every waiting item, most urgent first."""
        items = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return items

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the waiting items for which ``predicate(item)`` is true."""
        kept: list[tuple[int, int, T]] = []
        removed: list[tuple[int, int, T]] = []
        for entry in self._heap:
            (removed if predicate(entry[2]) else kept).append(entry)
        if removed:
            heapq.heapify(kept)
            self._heap = kept
        return [entry[2] for entry in sorted(removed)]

    def close(self) -> None:
        """Wake every waiter with None; later puts raise, later gets return None."""
        self._closed = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
