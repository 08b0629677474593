"""The orchestrator's in-memory task buffer: dispatch order, leases, delays and memory shares.

Pure: no I/O, no asyncio, no Kafka. Time comes from the injected ``now_ms`` (wall clock, for
deadlines and ages) and ``monotonic`` (for leases and delays) callables. Not thread-safe: one
event loop owns a :class:`PriorityBuffer`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from eventgw.core.envelope import BUFFER_LANES, SLO_SECONDS, Priority
from eventgw.core.envelope import DEFAULT_LANE_SHARES as _LANE_SHARES
from eventgw.orchestrator.task_heaps import (
    _DELAYED,
    _GONE,
    _LEASED,
    _NEW,
    _READY,
    BufferedTask,
    Entry,
    LazyHeap,
    LeaseGroup,
    TaskState,
    best_and_bound,
    make_task_id,
    pop_earliest,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from eventgw.core.envelope import BufferLane

__all__ = [
    "BUFFER_LANES",
    "DEFAULT_LANE_SHARES",
    "TASK_OVERHEAD_BYTES",
    "BufferStatistics",
    "BufferedTask",
    "ClassStatistics",
    "LaneStatistics",
    "PriorityBuffer",
    "make_task_id",
]

TASK_OVERHEAD_BYTES: Final = 200
"""Bytes charged per task on top of ``len(value)``: the object, its heap entries, its id."""

DEFAULT_LANE_SHARES: Final[Mapping[BufferLane, float]] = MappingProxyType(_LANE_SHARES)
"""Share of the budget at which each lane's consumption pauses (docs/design.md, "Memory
thresholds"): `eventgw.core.envelope.DEFAULT_LANE_SHARES`, read-only."""

_OFFLOAD: Final = "offload"
_CLASSES: Final = (Priority.P30, Priority.P20, Priority.P10)  # second-tier order
# An offloaded task competes in EDF as if its promise were twice as long: deadline + SLO.
_OFFLOAD_GRACE_MS: Final = {p: int(s * 1000) for p, s in SLO_SECONDS.items()}


@dataclass(frozen=True, slots=True)
class LaneStatistics:
    """Tasks and bytes of one consumption lane."""

    ready: int
    leased: int
    delayed: int
    bytes: int
    paused: bool  # consumption of this lane should be paused (memory share reached)


@dataclass(frozen=True, slots=True)
class ClassStatistics:
    """Tasks and bytes of one SLO class (original class, whatever the lane)."""

    ready: int
    leased: int
    delayed: int
    bytes: int
    late_ready: int  # ready, not offloaded, past its deadline (the second tier)
    oldest_ready_age_s: float | None  # oldest ready task not offloaded: now - ingested_at


@dataclass(frozen=True, slots=True)
class BufferStatistics:
    """Point-in-time view of a :class:`PriorityBuffer`."""

    tasks: int  # ready + leased + delayed
    ready: int
    leased: int
    delayed: int
    total_bytes: int  # accounted bytes of every owned task
    budget_bytes: int
    paused_lanes: frozenset[BufferLane]
    lanes: Mapping[BufferLane, LaneStatistics]  # read-only, every configured lane
    classes: Mapping[Priority, ClassStatistics]  # read-only, every class
    served_slots: int  # tasks served since creation
    late_share_slots: int  # of which given to the second tier by the anti-starvation rule


class PriorityBuffer:
    """Every task the orchestrator owns — ready, leased or delayed — and the order to serve them.

    Dispatch policy ("P30 keeps its SLO while P10 waits; P10 never starves forever"):

    1. **On time first, earliest deadline first.** Ready tasks whose deadline is still ahead
       (``deadline_ms > now_ms()``), excluding the offload lane, are served EDF across
       classes: for similar arrival times P30 (5 s) goes before P20 (1 min) before P10
       (20 min).
    2. **Late tasks do not pre-empt on-time ones.** Plain EDF would serve a 20-minute-old P10
       backlog before fresh P30 under overload and make every class late in turn (the domino
       effect). A task whose deadline has passed moves to a second tier, ordered by class
       (P30, P20, P10) and then deadline, served only when no on-time task is ready.
    3. **Offload with a grace.** An offload-lane task competes in the on-time EDF as if its
       promise were twice as long (``deadline + SLO``): after on-time work of comparable
       urgency, but before bulk work with a far deadline (an offloaded P20 must not wait
       behind a 20-minute P10 backlog). Once past even that grace it is second-tier work,
       after the late tasks.
    4. **Anti-starvation.** Every ``late_share_every``-th slot served goes to the second tier
       (late tasks first, then offload) when it holds anything, so P10 and offload get about
       ``1/late_share_every`` of capacity even while P30 alone saturates the processors.
       The slot counter runs across ``pop_batch`` calls.
    5. Equal deadlines are served in push order (FIFO). Retry-lane tasks are ordered by their
       original class and deadline like the rest (they are usually late). A task returned by
       release or expiry keeps its place.

    Task states (``BufferedTask`` moves between them; a task is in exactly one)::

        push --> READY --pop_batch--> LEASED --complete--> (gone)
                   ^  <--release / return_lease / lease expiry--  |
                   |                      --delay--> DELAYED --due (attempt+1)--> READY
        drop_partition removes a task in any state; complete accepts any state too (a late
        ACK for a task whose lease expired still finishes it).

    Results are matched by ``task_id`` only: a stale result for a task served again after its
    lease expired applies to the current delivery (at-least-once tolerates the duplicate).

    Memory (docs/priorities-and-backpressure.md, "Memory thresholds"): the bytes of every
    owned task count against ``budget_bytes`` until it leaves. A lane pauses when the total
    reaches ``shares[lane] * budget_bytes`` and resumes below ``shares[lane] * budget_bytes *
    hysteresis``. ``push`` never refuses a task: records already fetched must be kept, and the
    largest share leaves headroom for them; the caller pauses consumption per
    ``paused_lanes()``.

    Timers are explicit: nothing moves by itself. Call ``expire()`` (at ``next_timer()``) to
    return expired leases and due delayed tasks to ready.

    Cost: O(log n) per operation amortised (heaps with lazy deletion and lazy tier
    migration at pop time; a run of tasks from one heap is popped without re-scanning the
    others; one lease timer per ``pop_batch``); ``drop_partition`` scans every task.
    """

    def __init__(
        self,
        budget_bytes: int,
        shares: Mapping[BufferLane, float] = DEFAULT_LANE_SHARES,
        hysteresis: float = 0.9,
        late_share_every: int = 20,
        *,
        now_ms: Callable[[], int],
        monotonic: Callable[[], float],
    ) -> None:
        """Create an empty buffer.

        Args:
            budget_bytes: Memory budget of the buffer, in accounted bytes.
            shares: Lane -> fraction of the budget at which the lane pauses; its keys are the
                lanes tasks may come from.
            hysteresis: A paused lane resumes below ``share * budget * hysteresis``.
            late_share_every: Every n-th slot served goes to the second tier if it is not empty.
            now_ms: Wall clock in Unix ms, compared with deadlines.
            monotonic: Monotonic seconds, for leases and delays.

        Raises:
            ValueError: a non-positive budget, an empty ``shares`` or a share that is not a
                positive number, ``hysteresis`` outside (0, 1], ``late_share_every`` < 1.
        """
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be > 0, got {budget_bytes}")
        if not shares:
            raise ValueError("shares must name at least one lane")
        for lane, share in shares.items():
            if not (share > 0 and math.isfinite(share)):
                raise ValueError(f"share of lane {lane!r} must be a positive number, got {share}")
        if not 0 < hysteresis <= 1:
            raise ValueError(f"hysteresis must be in (0, 1], got {hysteresis}")
        if late_share_every < 1:
            raise ValueError(f"late_share_every must be >= 1, got {late_share_every}")
        self._budget = budget_bytes
        self._now_ms = now_ms
        self._monotonic = monotonic
        self._late_share_every = late_share_every
        self._pause_at = {lane: share * budget_bytes for lane, share in shares.items()}
        self._resume_below = {lane: t * hysteresis for lane, t in self._pause_at.items()}
        self._paused: set[BufferLane] = set()
        self._paused_since_read: set[BufferLane] = set()  # see `pressure_statistics`
        self._next_pause = min(self._pause_at.values())  # bytes >= this: some lane pauses
        self._next_resume = -math.inf  # bytes < this: some paused lane resumes

        self._tasks: dict[str, BufferedTask] = {}
        self._bytes = 0
        self._ontime = {p: LazyHeap() for p in _CLASSES}  # may hold late tasks until popped
        self._late = {p: LazyHeap() for p in _CLASSES}
        self._offload = {p: LazyHeap() for p in _CLASSES}
        # Offloaded tasks past even their grace (key <= now): second-tier work. Kept apart
        # so that an on-time offloaded task is never hidden behind a late one at the top of
        # the same heap (it would then wait in the second tier behind on-time work).
        self._offload_late = {p: LazyHeap() for p in _CLASSES}
        # The first tier, once _migrate_late ran: on-time tasks and offloaded ones within
        # their grace, by key. The second tier's offload part: past the grace, then within.
        self._first_tier = (*self._ontime.values(), *self._offload.values())
        self._offload_tier = (*self._offload_late.values(), *self._offload.values())
        # One timer per pop_batch: (expires, seq, group), a group skipped once nothing is live.
        self._leases: list[tuple[float, int, LeaseGroup]] = []
        self._delays = LazyHeap()
        self._seqs = itertools.count()
        self._served = 0
        self._late_share_served = 0
        # [ready, leased, delayed, bytes] per (lane, class); the first three indexed by TaskState.
        self._counts = {(lane, p): [0, 0, 0, 0] for lane in shares for p in _CLASSES}

    # -- intake and results -------------------------------------------------------------------

    def push(self, task: BufferedTask) -> None:
        """Take ownership of ``task`` as ready; its bytes count until it leaves.

        Raises:
            ValueError: a task with the same ``task_id`` is owned already, ``task.lane`` has
                no configured share, or ``task.priority`` is not a ``Priority``.
        """
        if task.task_id in self._tasks:
            raise ValueError(f"task {task.task_id!r} is already in the buffer")
        counts = self._counts.get((task.lane, task.priority))
        if counts is None:
            if task.lane not in self._pause_at:
                raise ValueError(f"task {task.task_id!r} has unknown lane {task.lane!r}")
            raise ValueError(f"task {task.task_id!r} has unknown class {task.priority!r}")
        task._state = _NEW
        task._heap = None
        task._seq = next(self._seqs)
        task._size = size = len(task.value) + TASK_OVERHEAD_BYTES
        task._counts = counts
        counts[3] += size
        self._tasks[task.task_id] = task
        self._account(size)
        self._make_ready(task)

    def complete(self, task_id: str) -> BufferedTask | None:
        """Finish a task (ACK, or handed to a retry topic / the DLQ): forget it, free its bytes.

        Accepts a task in any state: a late result for a task whose lease expired still
        finishes it.

        Returns:
            The removed task, or None if ``task_id`` is unknown (a stale or duplicate result).
        """
        task = self._tasks.get(task_id)
        if task is None:
            return None
        self._remove(task)
        return task

    def release(self, task_id: str) -> bool:
        """Return a leased task unprocessed (dry run, shutdown): ready again, no attempt counted.

        ``delivery_count`` goes back down by one. Returns False if the task is unknown or not
        leased.
        """
        task = self._tasks.get(task_id)
        if task is None or task._state is not _LEASED:
            return False
        task.delivery_count = max(0, task.delivery_count - 1)
        self._make_ready(task)
        return True

    def return_lease(self, task_id: str) -> bool:
        """End a lease early, as if it expired now: ready again, ``delivery_count`` kept.

        For a worker that went away (its stream ended): the task may have started, so the
        delivery counts. Returns False if the task is unknown or not leased.
        """
        task = self._tasks.get(task_id)
        if task is None or task._state is not _LEASED:
            return False
        self._make_ready(task)
        return True

    def delay(self, task_id: str, delay_s: float) -> bool:
        """Hold a leased task NACKed with a short delay until ``monotonic() + delay_s``.

        The task becomes ready, with ``attempt += 1``, at the first ``expire()`` at or after
        its due time; ``complete`` or ``drop_partition`` may remove it before (so a task held
        while it is written to a retry topic never counts an attempt here). Returns False if
        the task is unknown or not leased (a delayed task cannot be delayed again).

        Raises:
            ValueError: ``delay_s`` is negative or not finite.
        """
        if not (delay_s >= 0 and math.isfinite(delay_s)):
            raise ValueError(f"delay_s must be a finite number >= 0, got {delay_s}")
        task = self._tasks.get(task_id)
        if task is None or task._state is not _LEASED:
            return False
        self._set_state(task, _DELAYED)
        self._delays.push(self._monotonic() + delay_s, task._seq, task)
        return True

    def drop_partition(self, topic: str, partition: int) -> list[BufferedTask]:
        """Remove every task of a revoked partition, in any state; return them by offset.

        Their records will be re-delivered to the partition's next owner from its committed
        offset, so nothing is lost; results arriving for them later are unknown.
        """
        # A scan of every task: revokes are rare, and an index per partition cost two dict
        # operations per task on the hot path.
        dropped = sorted(
            (t for t in self._tasks.values() if t.partition == partition and t.topic == topic),
            key=lambda t: t.offset,
        )
        for task in dropped:
            self._remove(task)
        return dropped

    # -- serving and timers -------------------------------------------------------------------

    def pop_batch(self, max_tasks: int, lease_s: float, owner: object = None) -> list[BufferedTask]:
        """Serve up to ``max_tasks`` ready tasks in policy order, each leased for ``lease_s``.

        The tasks are leased together to ``owner`` (`owner_of` tells it while a task stays
        leased; `LeaseGroup`).

        Each served task gets ``lease_expires = monotonic() + lease_s``,
        ``delivery_count += 1`` and its ``rank``: the key it was served by when it came from
        the first tier (its deadline; an offloaded task's deadline + grace), ``now_ms()`` when
        it came from the second tier (late or past-grace work, due now). So ranks order a
        served task before every on-time task served after it that is less urgent, and a
        worker that holds several tasks starts them in the buffer's order (smaller rank
        first) even when a more urgent one arrives later. Never blocks; returns fewer (or
        none) when fewer are ready.

        Raises:
            ValueError: ``max_tasks`` < 0, or ``lease_s`` not a positive finite number.
        """
        if max_tasks < 0:
            raise ValueError(f"max_tasks must be >= 0, got {max_tasks}")
        if not (lease_s > 0 and math.isfinite(lease_s)):
            raise ValueError(f"lease_s must be a positive finite number, got {lease_s}")
        if max_tasks == 0 or not self._tasks:
            return []
        now_ms = self._now_ms()
        self._migrate_late(now_ms)
        expires = self._monotonic() + lease_s
        every = self._late_share_every
        first_tier = self._first_tier
        served = self._served
        batch: list[BufferedTask] = []
        heap: LazyHeap | None = None  # the first-tier heap of the current run, if any
        bound: Entry | None = None  # ... served from while its top stays below this
        while len(batch) < max_tasks:
            task = None
            if (served + 1) % every == 0:
                task = self._pop_second_tier()
                if task is not None:
                    self._late_share_served += 1
                    task.rank = now_ms
            if task is None:
                if heap is not None:  # continue the run if its top is still the earliest
                    top = heap.peek()
                    if top is None or (bound is not None and bound < top):
                        heap = None
                if heap is None:
                    heap, bound = best_and_bound(first_tier)
                if heap is not None:
                    task = heap.pop()
                    if task.lane == _OFFLOAD:
                        task.rank = task.deadline_ms + _OFFLOAD_GRACE_MS[task.priority]
                    else:
                        task.rank = task.deadline_ms
                else:
                    task = self._pop_second_tier()
                    if task is None:
                        break
                    task.rank = now_ms
            served += 1
            task.delivery_count += 1
            task.lease_expires = expires
            # READY -> LEASED inline (the hot path): the pop above already took its entry.
            counts = task._counts
            counts[_READY] -= 1
            counts[_LEASED] += 1
            task._state = _LEASED
            task._lease_i = len(batch)
            batch.append(task)
        self._served = served
        if batch:
            group = LeaseGroup(expires, list(batch), owner)
            for task in batch:
                task._lease = group
            heapq.heappush(self._leases, (expires, next(self._seqs), group))
        return batch

    def expire(self, now: float | None = None) -> list[BufferedTask]:
        """Return expired leases and due delayed tasks to ready.

        Args:
            now: Monotonic seconds to compare with; ``monotonic()`` if None.

        Returns:
            The tasks whose lease expired (for metrics and logs), in expiry order. Their
            ``delivery_count`` is kept; it grows on the next serve. Due delayed tasks become
            ready too, with ``attempt += 1``, but are not returned.
        """
        if now is None:
            now = self._monotonic()
        expired: list[BufferedTask] = []
        leases = self._leases
        while leases and leases[0][0] <= now:
            group = heapq.heappop(leases)[2]
            for task in group.tasks:  # a slot clears as its task becomes ready
                if task is not None:
                    self._make_ready(task)
                    expired.append(task)
        delays = self._delays
        while (top := delays.peek()) is not None and top[0] <= now:
            task = delays.pop()
            task.attempt += 1
            self._make_ready(task)
        return expired

    def next_timer(self) -> float | None:
        """Return the earliest lease expiry or delay due time (monotonic s), None if none."""
        leases = self._leases
        while leases and not leases[0][2].live:  # nothing left to expire in that group
            heapq.heappop(leases)
        times = [top[0] for top in (leases[0] if leases else None, self._delays.peek()) if top]
        return min(times, default=None)

    # -- memory shares ------------------------------------------------------------------------

    def paused_lanes(self) -> set[BufferLane]:
        """Return the lanes whose consumption should be paused now (a new set)."""
        return set(self._paused)

    def pressure_statistics(self) -> BufferStatistics:
        """`statistics`, with every lane that paused since the last call counted as paused.

        For flow control, which samples on an interval: a lane that fills its share and drains
        again between two samples was still over its memory share. A point-in-time view would
        miss it, and a steady flood that pauses its lane for a few milliseconds at a time would
        never be reported.
        """
        st = self.statistics()
        paused = frozenset(self._paused | self._paused_since_read)
        self._paused_since_read.clear()
        return replace(st, paused_lanes=paused)

    def should_pause(self, lane: BufferLane) -> bool:
        """Return whether consumption of ``lane`` should be paused now.

        Raises:
            ValueError: ``lane`` has no configured share.
        """
        if lane not in self._pause_at:
            raise ValueError(f"unknown lane {lane!r}")
        return lane in self._paused

    # -- introspection ------------------------------------------------------------------------

    def __len__(self) -> int:
        """Return the number of owned tasks (ready, leased and delayed)."""
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        """Return whether a task with this id is owned."""
        return task_id in self._tasks

    @property
    def bytes(self) -> int:
        """Accounted bytes of every owned task."""
        return self._bytes

    def get(self, task_id: str) -> BufferedTask | None:
        """Return the owned task with this id, or None."""
        return self._tasks.get(task_id)

    def lease_of(self, task_id: str) -> BufferedTask | None:
        """Return the task if it is leased now (its expiry is ``lease_expires``), else None."""
        task = self._tasks.get(task_id)
        if task is None or task._state is not _LEASED:
            return None
        return task

    @staticmethod
    def owner_of(task: BufferedTask) -> object:
        """Who ``task`` is leased to (the ``owner`` of its `pop_batch`); None if not leased."""
        group = task._lease
        return None if group is None else group.owner

    def has_ready(self) -> bool:
        """Return whether any task is ready to be served; O(1)."""
        return any(counts[_READY] for counts in self._counts.values())

    def ready_count(self) -> int:
        """Return the number of tasks ready to be served; O(lanes x classes)."""
        return sum(counts[_READY] for counts in self._counts.values())

    def lane_ready(self, lane: BufferLane) -> int:
        """Return the number of ready tasks of ``lane``; O(classes)."""
        counts = self._counts
        return sum(counts[lane, p][_READY] for p in _CLASSES)

    @property
    def served(self) -> int:
        """Tasks served (leased) since creation."""
        return self._served

    def statistics(self) -> BufferStatistics:
        """Return a point-in-time view: counts and bytes per lane and per class, ages, pauses.

        The oldest ready age of a class is read from the tops of its heaps, which are ordered
        by deadline; since ``deadline = ingested_at + SLO(class)`` (docs/design.md, "SLO
        classes and deadlines") the earliest deadline of a class is its oldest task.
        O(lanes + classes).
        """
        now_ms = self._now_ms()
        self._migrate_late(now_ms)
        by_lane = {lane: [0, 0, 0, 0] for lane in self._pause_at}
        by_class = {p: [0, 0, 0, 0] for p in _CLASSES}
        for (lane, p), counts in self._counts.items():
            for i, n in enumerate(counts):
                by_lane[lane][i] += n
                by_class[p][i] += n
        lanes = {
            lane: LaneStatistics(c[0], c[1], c[2], c[3], lane in self._paused)
            for lane, c in by_lane.items()
        }
        classes: dict[Priority, ClassStatistics] = {}
        for p, c in by_class.items():
            # The class's own queue only: offloaded tasks wait behind everything by design, and
            # counting them would make flow control cut the class that was already shed.
            tops = (h.peek() for h in (self._ontime[p], self._late[p]))
            oldest = min((top[3].ingested_at_ms for top in tops if top is not None), default=None)
            age = None if oldest is None else max(0.0, (now_ms - oldest) / 1000)
            classes[p] = ClassStatistics(c[0], c[1], c[2], c[3], len(self._late[p]), age)
        ready, leased, delayed = (sum(c[i] for c in by_class.values()) for i in range(3))
        return BufferStatistics(
            tasks=len(self._tasks),
            ready=ready,
            leased=leased,
            delayed=delayed,
            total_bytes=self._bytes,
            budget_bytes=self._budget,
            paused_lanes=frozenset(self._paused),
            lanes=MappingProxyType(lanes),
            classes=MappingProxyType(classes),
            served_slots=self._served,
            late_share_slots=self._late_share_served,
        )

    # -- internals ----------------------------------------------------------------------------

    def _set_state(self, task: BufferedTask, state: TaskState) -> None:
        """Move ``task`` to ``state``: stale its live heap entry, if any; update the counters."""
        heap = task._heap
        if heap is not None:
            task._gen += 1  # before discard(): a compaction there must see the entry stale
            task._heap = None
            heap.discard()
        counts = task._counts
        old = task._state
        if old is _LEASED:
            group = task._lease
            if group is not None:
                group.leave(task)
                task._lease = None
        if old <= _DELAYED:
            counts[old] -= 1
        if state <= _DELAYED:
            counts[state] += 1
        task._state = state

    def _make_ready(self, task: BufferedTask) -> None:
        # Every non-offload task enters the on-time heap; _migrate_late moves it out once its
        # deadline has passed, so lateness is decided at serve time, not at push time.
        self._set_state(task, _READY)
        if task.lane == _OFFLOAD:
            key = task.deadline_ms + _OFFLOAD_GRACE_MS[task.priority]
            self._offload[task.priority].push(key, task._seq, task)
        else:
            self._ontime[task.priority].push(task.deadline_ms, task._seq, task)

    def _remove(self, task: BufferedTask) -> None:
        self._set_state(task, _GONE)
        del self._tasks[task.task_id]
        task._counts[3] -= task._size
        self._account(-task._size)

    def _migrate_late(self, now_ms: int) -> None:
        # A heap's top has its earliest deadline: once the top is on time, all of it is.
        for p in _CLASSES:
            ontime, late = self._ontime[p], self._late[p]
            while (top := ontime.peek()) is not None and top[0] <= now_ms:
                late.push(top[0], top[1], ontime.pop())
            offload, offload_late = self._offload[p], self._offload_late[p]
            while (top := offload.peek()) is not None and top[0] <= now_ms:
                offload_late.push(top[0], top[1], offload.pop())

    def _pop_second_tier(self) -> BufferedTask | None:
        for p in _CLASSES:
            late = self._late[p]
            if late.peek() is not None:
                return late.pop()
        # Then offloaded work by key: past its grace first (smaller keys), then on time.
        return pop_earliest(self._offload_tier)

    def _account(self, delta: int) -> None:
        self._bytes += delta
        total = self._bytes
        if total < self._next_pause and total >= self._next_resume:
            return  # no lane crosses a threshold: the common case costs two comparisons
        for lane, pause_at in self._pause_at.items():
            if lane in self._paused:
                if total < self._resume_below[lane]:
                    self._paused.remove(lane)
            elif total >= pause_at:
                self._paused.add(lane)
                self._paused_since_read.add(lane)
        self._next_pause = min(
            (t for lane, t in self._pause_at.items() if lane not in self._paused),
            default=math.inf,
        )
        self._next_resume = max(
            (self._resume_below[lane] for lane in self._paused), default=-math.inf
        )
