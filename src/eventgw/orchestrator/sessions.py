"""A worker's ``Work`` stream as the dispatcher sees it: credit, leases, outgoing messages.

Pure bookkeeping plus one asyncio wake-up: the dispatcher pushes serialized ``TaskBatch``
messages (`eventgw.orchestrator.wire`) synchronously, and the stream's writer coroutine
(`eventgw.orchestrator.work_api`) takes them. Protocol: docs/dispatch-protocol.md.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

from eventgw.orchestrator.wire import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from eventgw.orchestrator.task_heaps import BufferedTask, LeaseGroup

__all__ = ["WorkerSession"]

_numbers = itertools.count(1)
_PRUNE_AT = 64  # lease groups kept before the finished ones are dropped from the list


class WorkerSession:
    """One open ``Work`` stream: the worker's unused credit, its leases, what to send it.

    Invariants (kept by `eventgw.orchestrator.dispatcher.Dispatcher`):

    - ``credit`` >= 0 is how many more tasks the worker asked for and has not been sent;
      the dispatcher never sends more.
    - ``groups`` holds the lease groups served to this worker (`LeaseGroup`, one per
      dispatch, owner = this session); a task leaves its group when its lease ends (result,
      expiry, end of the stream), so `held` is exactly what the worker holds now.
    - Once ``closed``, nothing is pushed any more; ``wait_outgoing`` returns what is left and
      then an empty list.

    Backpressure: the outbox is bounded by the credit the worker gave (tasks) plus at most
    one hint per credit grant, so a worker that stops reading holds at most what it asked for.
    """

    __slots__ = (
        "_outbox",
        "_wake",
        "closed",
        "credit",
        "groups",
        "hinted",
        "number",
        "opened_at",
        "results",
        "worker_id",
    )

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.number = next(_numbers)  # unique per process: names the session in logs
        self.opened_at = time.monotonic()  # for Stats (how long it has been connected)
        self.results = 0  # results received on this stream, counted per message
        self.credit = 0
        self.groups: list[LeaseGroup] = []
        self.hinted = False  # told of a backlog since its credit last ran out
        self.closed = False
        self._outbox: list[tuple[bytes, bool]] = []
        self._wake = asyncio.Event()

    def add_group(self, group: LeaseGroup) -> None:
        """Remember a dispatch's lease group; forget groups with nothing leased any more."""
        groups = self.groups
        groups.append(group)
        if len(groups) > _PRUNE_AT:
            self.groups = [g for g in groups if g.live]

    def held(self) -> list[BufferedTask]:
        """The tasks leased to this worker now."""
        return [t for g in self.groups if g.live for t in g.tasks if t is not None]

    def leased(self) -> int:
        """How many tasks are leased to this worker now (for stats: walks its groups)."""
        return sum(g.live for g in self.groups)

    def push(self, message: bytes, *, alone: bool = False) -> None:
        """Queue a serialized ``TaskBatch`` for the stream's writer (never blocks).

        Queued messages may be sent joined into one (repeated fields append, scalars keep
        the last value); ``alone`` keeps a message apart, for a scalar that must not be
        overwritten (``credit_returned``).
        """
        if self.closed:
            raise RuntimeError(f"session {self.number} is closed")
        self._outbox.append((message, alone))
        self._wake.set()

    async def wait_outgoing(self) -> list[bytes]:
        """Wait until there is something to send; take it, joined where allowed.

        Returns an empty list once the session is closed and the outbox is empty.
        """
        while not self._outbox:
            if self.closed:
                return []
            self._wake.clear()
            await self._wake.wait()
        queued, self._outbox = self._outbox, []
        out: list[bytes] = []
        run: list[bytes] = []
        size = 0
        for message, alone in queued:
            if run and (alone or size + len(message) > MAX_MESSAGE_BYTES):
                out.append(b"".join(run))
                run, size = [], 0
            if alone:
                out.append(message)
            else:
                run.append(message)
                size += len(message)
        if run:
            out.append(b"".join(run))
        return out

    def close(self) -> None:
        """Stop taking messages; wake the writer so it can finish."""
        self.closed = True
        self._wake.set()

    def __repr__(self) -> str:
        return (
            f"WorkerSession(#{self.number} {self.worker_id!r} credit={self.credit} "
            f"leased={self.leased()})"
        )
