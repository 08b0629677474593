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

from typing import TYPE_CHECKING

from eventgw.kafka.offset_committer import OffsetCommitter
from eventgw.recovery.replay_intent import encode_intent

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from eventgw.core.clock import Clock
    from eventgw.kafka.group_consumer import Committed
    from eventgw.kafka.offset_committer import CommitTarget
    from eventgw.recovery.settled_prefix import SettledPrefix, TopicPartition

__all__ = ["PrefixCommitter"]


class PrefixCommitter:
    """Commits one batch's `SettledPrefix` as it grows, one commit at a time.

    ``settled(indexes)`` records progress and wakes ``run()``, which commits what advanced
    since the last commit; progress that arrives while a commit is in flight is taken by
    the next one, so commits follow progress without piling up (at most one in flight, and
    no more commits than settled chunks). ``close()`` makes ``run()`` commit once more and
    return: the batch end, or the drain on stop. The committing is the one
    `eventgw.kafka.offset_committer.OffsetCommitter` (as the orchestrator's), woken by
    progress instead of a timer; this class is the `CommitSource` it commits.

    Each commit carries the replay intent of its partitions (`SettledPrefix.sent_from_ms`
    in Kafka's commit metadata), so a restart can find what was replayed after it.

    At-least-once: only positions `SettledPrefix` hands out are committed, and a record is
    settled only once Kafka confirmed its replay or the DLQ write, or the backup store holds
    it. A failed commit is logged (``recovery.commit_failed``) and retried with the next
    progress (or left for the next owner of the partition: duplicates, never loss). A
    partition the consumer no longer owns (revoked while the batch replays) is not
    committed from here: its next owner reads it back from the last commit.

    Cancellation: ``run()`` may be cancelled at any await; a commit cut short may or may
    not have reached Kafka (either is safe).
    """

    def __init__(self, consumer: CommitTarget, prefix: SettledPrefix, clock: Clock) -> None:
        self._prefix = prefix
        self._clock = clock
        self._committer = OffsetCommitter(self, [consumer], name="recovery")

    @property
    def commits(self) -> int:
        """Commits Kafka accepted."""
        return self._committer.commits

    @property
    def failures(self) -> int:
        """Commits that failed (retried with the next progress)."""
        return self._committer.failures

    def settled(self, indexes: Iterable[int]) -> None:
        """Record that the records at ``indexes`` of the batch are settled; commit soon."""
        for i in indexes:
            self._prefix.settle(i)
        self._committer.wake()

    def replayed_earlier(self, items: Iterable[tuple[int, int]]) -> None:
        """Settle records an earlier run already replayed: ``(index, sent_from_ms)``.

        ``sent_from_ms`` (no later than their copies) is kept as their send time, so a
        commit that leaves one of them past its position still lets the next owner find it.
        """
        for index, sent_from_ms in items:
            self._prefix.sent([index], sent_from_ms)
            self._prefix.settle(index)
        self._committer.wake()

    def sending(self, indexes: Iterable[int]) -> None:
        """Record that the records at ``indexes`` are about to be handed to Kafka (now).

        Call before the send: the commit's replay intent must not be later than the
        timestamps Kafka gives them.
        """
        self._prefix.sent(list(indexes), self._clock.wall_ms())

    def close(self) -> None:
        """Commit what is settled once more, then let ``run()`` return."""
        self._committer.close()

    async def run(self) -> None:
        """Commit each advance of the prefix until ``close()`` (then once more)."""
        # A close() during a commit lets that commit end; the last one then takes the
        # progress that arrived meanwhile.
        await self._committer.run()
        await self._committer.commit()

    # -- CommitSource -----------------------------------------------------------------

    def committable(self) -> Committed:
        """The positions that advanced, each with its replay intent (now)."""
        positions = self._prefix.advanced()
        # The intent goes with each position, so the next owner knows from when to read
        # the lanes back (eventgw.recovery.replay_intent).
        now_ms = self._clock.wall_ms()
        return {
            tp: (offset, encode_intent(self._prefix.sent_from_ms(tp, now_ms)))
            for tp, offset in positions.items()
        }

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record that Kafka accepted ``positions``."""
        self._prefix.mark_committed(positions)
