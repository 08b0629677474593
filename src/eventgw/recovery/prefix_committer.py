"""Commits the settled prefix of a failed-writes batch while the batch is still replaying.

The topic loop used to commit a polled batch (up to 500 records) only once every record of
it was settled, so a kill repeated the whole batch, and during a partial outage (one lane
down, retried with backoff for minutes) it repeated everything of the batch that had long
been confirmed. Now each partition is committed up to its first unsettled record as soon
as the records before it settle (`SettledPrefix`): a kill repeats what was in flight — sent
and not yet committed — and the records confirmed above one that is still pending in the
same partition (docs/delivery-semantics.md, "Duplicates").
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from eventgw.kafka.consumer import ConsumerError
from eventgw.recovery.replay_intent import encode_intent

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from eventgw.core.clock import Clock
    from eventgw.recovery.settled_prefix import SettledPrefix, TopicPartition

__all__ = ["PositionCommitter", "PrefixCommitter"]

logger = logging.getLogger(__name__)


class PositionCommitter(Protocol):
    """What the committer needs from a consumer (`BatchConsumer`)."""

    async def commit_positions(
        self,
        positions: Mapping[TopicPartition, int],
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None: ...


class PrefixCommitter:
    """Commits one batch's `SettledPrefix` as it grows, one commit at a time.

    ``settled(indexes)`` records progress and wakes ``run()``, which commits what advanced
    since the last commit; progress that arrives while a commit is in flight is taken by
    the next one, so commits follow progress without piling up (at most one in flight, and
    no more commits than settled chunks). ``close()`` makes ``run()`` commit once more and
    return: the batch end, or the drain on stop.

    Each commit carries the replay intent of its partitions (`SettledPrefix.sent_from_ms`
    in Kafka's commit metadata), so a restart can find what was replayed after it.

    At-least-once: only positions `SettledPrefix` hands out are committed, and a record is
    settled only once Kafka confirmed its replay or the DLQ write, or the backup store holds
    it. A failed commit is logged and retried with the next progress (or left for the next
    owner of the partition: duplicates, never loss).

    Cancellation: ``run()`` may be cancelled at any await; a commit cut short may or may
    not have reached Kafka (either is safe).
    """

    def __init__(self, consumer: PositionCommitter, prefix: SettledPrefix, clock: Clock) -> None:
        self._consumer = consumer
        self._prefix = prefix
        self._clock = clock
        self._wake = asyncio.Event()
        self._closed = False
        self.commits = 0  # commits Kafka accepted
        self.failures = 0  # commits that failed (retried with the next progress)

    def settled(self, indexes: Iterable[int]) -> None:
        """Record that the records at ``indexes`` of the batch are settled; commit soon."""
        for i in indexes:
            self._prefix.settle(i)
        self._wake.set()

    def replayed_earlier(self, items: Iterable[tuple[int, int]]) -> None:
        """Settle records an earlier run already replayed: ``(index, sent_from_ms)``.

        ``sent_from_ms`` (no later than their copies) is kept as their send time, so a
        commit that leaves one of them past its position still lets the next owner find it.
        """
        for index, sent_from_ms in items:
            self._prefix.sent([index], sent_from_ms)
            self._prefix.settle(index)
        self._wake.set()

    def sending(self, indexes: Iterable[int]) -> None:
        """Record that the records at ``indexes`` are about to be handed to Kafka (now).

        Call before the send: the commit's replay intent must not be later than the
        timestamps Kafka gives them.
        """
        self._prefix.sent(list(indexes), self._clock.wall_ms())

    def close(self) -> None:
        """Commit what is settled once more, then let ``run()`` return."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Commit each advance of the prefix until ``close()`` (then once more)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Read before the commit: a close() during it wakes the loop for one more
            # commit, which takes the progress that arrived meanwhile.
            closing = self._closed
            await self._commit()
            if closing:
                return

    async def _commit(self) -> None:
        positions = self._prefix.advanced()
        if not positions:
            return
        # The intent goes with each position, so the next owner knows from when to read
        # the lanes back (eventgw.recovery.replay_intent).
        now_ms = self._clock.wall_ms()
        intents = {tp: encode_intent(self._prefix.sent_from_ms(tp, now_ms)) for tp in positions}
        try:
            await self._consumer.commit_positions(positions, intents)
        except ConsumerError as exc:
            # Retried with the next progress; if none comes (batch end, stop), the next
            # reader replays from the last commit: duplicates, never loss.
            self.failures += 1
            logger.warning("recovery.commit_failed error=%s", exc)
            return
        self._prefix.mark_committed(positions)
        self.commits += 1
