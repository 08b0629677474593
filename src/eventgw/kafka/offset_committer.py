"""Commits what a service says is done, through the group members that own it, one at a time.

The orchestrator (`eventgw.orchestrator.committer`) and the failed-writes processor
(`eventgw.recovery.prefix_committer`) commit the same way: each asks its own bookkeeping
which positions advanced and with what commit metadata (finished runs above the offset; the
replay intent), commits them, and records what Kafka accepted, so a failed commit is
retried with the next progress. Only *when* differs — on a timer (the orchestrator's
``commit_interval_s``), or as soon as progress is reported (each settled chunk of a
failed-writes batch) — and that is a parameter here: `OffsetCommitter.wake` and
``interval_s``. docs/delivery-semantics.md, "At-least-once".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from eventgw.kafka.consumer import ConsumerError

if TYPE_CHECKING:
    from collections.abc import Container, Mapping, Sequence

    from eventgw.kafka.group_consumer import Committed, TopicPartition

__all__ = ["CommitSource", "CommitTarget", "OffsetCommitter"]

logger = logging.getLogger(__name__)


class CommitSource(Protocol):
    """The bookkeeping that knows how far each partition may be committed."""

    def committable(self) -> Committed:
        """Positions (next offset to read) that advanced since the last `mark_committed`,
        each with the metadata to store with it."""
        ...

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record that Kafka accepted a commit of ``positions``."""
        ...


class CommitTarget(Protocol):
    """A group member that commits (`eventgw.kafka.group_consumer.GroupConsumer`)."""

    @property
    def assigned(self) -> Container[TopicPartition]:
        """The partitions the member owns now."""
        ...

    async def commit(self, offsets: Committed) -> None:
        """Commit ``offsets`` synchronously; raises `ConsumerError` on failure."""
        ...


class OffsetCommitter:
    """Commits a `CommitSource` through the `CommitTarget` that owns each partition.

    Each commit takes what advanced (`CommitSource.committable`), sends each member the
    partitions it owns now, and marks committed what that member's commit Kafka accepted.
    A partition no member owns (revoked, lost, the member replaced) is not committed: its
    next owner reads it from the last commit (duplicates, never loss), and a late commit
    from here cannot overwrite that owner's position. A failed commit is logged
    (``<name>.commit_failed``), counted in ``failures`` and retried with the next one.

    When: `run` commits after each `wake` and, with ``interval_s``, at least that often,
    until `close`; at most one commit is in flight, and progress reported during one is
    taken by the next. The drain calls `commit` once more after `run` returned (never in a
    ``finally`` after cancellation).

    Args:
        source: what to commit.
        targets: the group members that commit (one per partition at a time).
        name: the log event prefix (``orchestrator``, ``recovery``).
        interval_s: commit at least this often while `run` runs; None: only on `wake`.

    Raises:
        ValueError: ``interval_s`` is not above 0, or ``targets`` is empty.

    Cancellation: `run` and `commit` may be cancelled at any await; a commit cut short may
    or may not have reached Kafka (either is safe: it is not marked committed).
    """

    def __init__(
        self,
        source: CommitSource,
        targets: Sequence[CommitTarget],
        *,
        name: str,
        interval_s: float | None = None,
    ) -> None:
        if interval_s is not None and not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 or None, got {interval_s}")
        if not targets:
            raise ValueError("targets: at least one group member is needed to commit")
        self._source = source
        self._targets = list(targets)
        self._name = name
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self._closing = False
        self.commits = 0  # commits Kafka accepted (one per member per round)
        self.failures = 0  # commits that failed (retried with the next round)

    def wake(self) -> None:
        """Progress was made: let `run` commit soon (non-blocking)."""
        self._wake.set()

    def close(self) -> None:
        """Let `run` return (after the commit in flight, if any); it commits no more."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        """Commit after each `wake` (and every ``interval_s``) until `close`; then return."""
        while True:
            # One event for progress and close alike: a wait_any() on two events took a
            # few more loop turns to wake, and commits of quick progress were merged.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            if self._closing:
                return
            # Cleared before the commit: progress reported during it wakes the next one.
            self._wake.clear()
            await self.commit()

    async def commit(self) -> None:
        """Commit what advanced since the last commit; a failure is logged and retried later."""
        pending = self._source.committable()
        if not pending:
            return
        for target in self._targets:
            assigned = target.assigned
            owned = {tp: om for tp, om in pending.items() if tp in assigned}
            if not owned:
                continue
            try:
                await target.commit(owned)
            except ConsumerError as exc:
                self.failures += 1
                logger.warning("%s.commit_failed error=%s", self._name, exc)
                continue
            self._source.mark_committed({tp: offset for tp, (offset, _) in owned.items()})
            self.commits += 1
