"""The tasks the orchestrator buffers, and the lazy-deletion heaps that order them.

`PriorityBuffer` (`eventgw.orchestrator.priority_buffer`) keeps every ready, leased and
delayed task in heaps of `Entry` tuples. A task that leaves a heap without being popped
bumps its generation instead of being searched for, which keeps every operation O(log n).
Pure and not thread-safe, like the buffer.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from eventgw.core.envelope import BufferLane, Priority

# Lazy-deletion heaps are rebuilt once stale entries outnumber live ones (and this slack), so
# the cost stays O(log n) amortised and memory O(live tasks). Not Final: the property tests
# lower it to exercise compaction.
_COMPACT_SLACK = 64


def make_task_id(topic: str, partition: int, offset: int) -> str:
    """Return the task id of a record: ``"<topic>/<partition>/<offset>"``."""
    return f"{topic}/{partition}/{offset}"


class TaskState(enum.IntEnum):
    """Where a task is; the first three values index the per-state counters."""

    READY = 0  # in a dispatch heap, waiting to be served
    LEASED = 1  # served; waiting for a result or the lease expiry
    DELAYED = 2  # NACKed with a short delay; waiting for its due time
    NEW = 3  # not owned by a buffer yet
    GONE = 4  # completed or dropped: the buffer forgot it


# Module-level aliases: the hot paths would otherwise pay an Enum class attribute lookup each.
_READY, _LEASED, _DELAYED, _NEW, _GONE = TaskState


@dataclass(slots=True, eq=False)
class BufferedTask:
    """One consumed record the orchestrator owns until it is finished or its partition revoked.

    The public fields are set by the caller; the buffer updates ``attempt``,
    ``delivery_count``, ``lease_expires`` and ``rank``.
    Equality is identity. Accounted size: ``len(value) + TASK_OVERHEAD_BYTES``, fixed when
    the task is pushed.
    """

    task_id: str  # "<topic>/<partition>/<offset>", see make_task_id
    topic: str
    partition: int
    offset: int
    lane: BufferLane  # the buffer lane it came from; decides its memory share
    priority: Priority  # original SLO class
    deadline_ms: int  # original SLO deadline, wall-clock ms; never moves
    ingested_at_ms: int
    value: bytes  # the serialized record; opaque here
    attempt: int = 0  # failed attempts; +1 when a delayed (NACKed) task is ready again
    offloaded: bool = False  # ingest sent it to the offload lane (EventData.offloaded)
    delivery_count: int = 0  # times served to a processor (a release takes one back)
    lease_expires: float = 0.0  # monotonic seconds; meaningful only while leased
    rank: int = 0  # dispatch urgency of the last serve (see PriorityBuffer.pop_batch)
    _state: TaskState = field(default=TaskState.NEW, init=False, repr=False)
    _gen: int = field(default=0, init=False, repr=False)  # heap entries with another gen are stale
    _seq: int = field(default=0, init=False, repr=False)  # push order: FIFO among equal deadlines
    _size: int = field(default=0, init=False, repr=False)
    _heap: LazyHeap | None = field(default=None, init=False, repr=False)  # holds the live entry
    _lease: LeaseGroup | None = field(default=None, init=False, repr=False)  # while LEASED
    _lease_i: int = field(default=0, init=False, repr=False)  # its place in _lease.tasks
    # The buffer's [ready, leased, delayed, bytes] counters of this task's (lane, class); set by
    # push (no default: a list per task would be allocated for nothing).
    _counts: list[int] = field(init=False, repr=False)


Entry = tuple[float, int, int, BufferedTask]  # (key, tie-break, gen, task)


class LeaseGroup:
    """The tasks leased together by one ``pop_batch``, to one owner: one timer for all.

    A timer per task cost a heap push when served and a lazy deletion when finished; a
    group costs one push per batch. A task that leaves the lease (finished, released,
    delayed, returned, dropped) clears its slot in ``tasks`` and decrements ``live``; a group
    with no live task frees its list and is skipped when its time comes.
    """

    __slots__ = ("expires", "live", "owner", "tasks")

    def __init__(self, expires: float, tasks: list[BufferedTask | None], owner: object) -> None:
        self.expires = expires
        self.tasks = tasks
        self.live = len(tasks)
        self.owner = owner  # who the tasks were served to (the dispatcher's worker session)

    def leave(self, task: BufferedTask) -> None:
        """``task`` is no longer leased under this group."""
        self.tasks[task._lease_i] = None
        self.live -= 1
        if not self.live:
            self.tasks = []


class LazyHeap:
    """A priority queue of `Entry` with lazy deletion: a sorted run and a binary heap.

    Most tasks reach a heap in key order (a lane's records are read in the order they were
    written, and their deadlines grow with it: 99.9 % of pushes in a full-loop run). Such an
    entry is appended to ``run``, a deque kept sorted, in O(1), and served from its head in
    O(1); only an entry smaller than the run's last goes to ``entries``, the binary heap.
    The top is the smaller of the two heads. (With one heap of some thousand tasks, its
    pops were 9 % of the orchestrator's CPU.)

    An entry is live while ``entry[2] == task._gen``. A task leaving a heap without being
    popped (completed, dropped, released, delayed) bumps its gen, so its entry goes stale and
    ``peek`` skips it; ``discard`` must be called then, keeping ``stale`` exact. Entries are
    unique by ``(key, order, gen)``, so comparisons never reach the task.
    """

    __slots__ = ("entries", "run", "stale")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.run: deque[Entry] = deque()
        self.stale = 0

    def __len__(self) -> int:
        return len(self.entries) + len(self.run) - self.stale

    def push(self, key: float, order: int, task: BufferedTask) -> None:
        task._heap = self
        entry = (key, order, task._gen, task)
        run = self.run
        if not run or run[-1] < entry:
            run.append(entry)
        else:
            heapq.heappush(self.entries, entry)

    def peek(self) -> Entry | None:
        entries, run = self.entries, self.run
        while entries:
            top = entries[0]
            if top[3]._gen == top[2]:
                break
            heapq.heappop(entries)
            self.stale -= 1
        while run:
            head = run[0]
            if head[3]._gen == head[2]:
                return entries[0] if entries and entries[0] < head else head
            run.popleft()
            self.stale -= 1
        return entries[0] if entries else None

    def pop(self) -> BufferedTask:
        """Pop the top entry; call only right after ``peek`` returned it."""
        entries, run = self.entries, self.run
        if run and not (entries and entries[0] < run[0]):
            task = run.popleft()[3]
        else:
            task = heapq.heappop(entries)[3]
        task._heap = None
        return task

    def discard(self) -> None:
        self.stale += 1
        if self.stale > _COMPACT_SLACK and 2 * self.stale > len(self.entries) + len(self.run):
            self.entries = [e for e in self.entries if e[3]._gen == e[2]]
            heapq.heapify(self.entries)
            self.run = deque(e for e in self.run if e[3]._gen == e[2])
            self.stale = 0


def best_and_bound(heaps: Iterable[LazyHeap]) -> tuple[LazyHeap | None, Entry | None]:
    """The heap whose top is smallest, and the smallest top among the others (its bound).

    The caller may pop the best heap while its top stays below the bound without looking at
    the other heaps again: a run of tasks of one class costs one scan, not one per task.
    """
    best: Entry | None = None
    second: Entry | None = None
    best_heap = None
    for heap in heaps:
        top = heap.peek()
        if top is not None:
            if best is None or top < best:
                second, best, best_heap = best, top, heap
            elif second is None or top < second:
                second = top
    return best_heap, second


def pop_earliest(heaps: Iterable[LazyHeap]) -> BufferedTask | None:
    """Pop the task with the smallest (key, seq) across ``heaps``; None if all are empty."""
    best: Entry | None = None
    best_heap = None
    for heap in heaps:
        top = heap.peek()
        if top is not None and (best is None or top < best):
            best, best_heap = top, heap
    return None if best_heap is None else best_heap.pop()
