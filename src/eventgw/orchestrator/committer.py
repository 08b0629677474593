"""Commits the orchestrator's consumed offsets: up to the first unfinished task, promptly.

Offsets go to Kafka every ``interval_s`` and once more on drain (and, from the consumer's
rebalance callback, before partitions move: `Dispatcher.revoke_partitions`). Only what the
`AckTracker` says is finished is committed, so a crash re-delivers, never loses
(docs/delivery-semantics.md). Each commit's metadata records the runs of offsets finished
above it (`eventgw.orchestrator.commit_metadata`): the next owner does not serve them again.
The committing itself (one member per partition, failures retried with the next round) is
the one `eventgw.kafka.offset_committer.OffsetCommitter`, shared with the failed-writes
processor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventgw.kafka.offset_committer import OffsetCommitter

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventgw.kafka.group_consumer import Committed, GroupConsumer, TopicPartition
    from eventgw.orchestrator.dispatcher import Dispatcher

__all__ = ["Committer", "DispatcherCommits"]


class DispatcherCommits:
    """The dispatcher's finished offsets as a `CommitSource`: each position with the runs
    finished above it (`Dispatcher.commit_metadata`)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._d = dispatcher

    def committable(self) -> Committed:
        """Offsets that advanced since the last commit, with their metadata."""
        d = self._d
        return {tp: (o, d.commit_metadata(tp[0], tp[1], o)) for tp, o in d.committable().items()}

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record a successful commit."""
        self._d.mark_committed(dict(positions))


class Committer(OffsetCommitter):
    """Commits each partition's offset through the group member it is assigned to (the
    urgent and bulk lane readers, the retry reader), every ``interval_s``."""

    def __init__(
        self, dispatcher: Dispatcher, consumers: Sequence[GroupConsumer], interval_s: float
    ) -> None:
        super().__init__(
            DispatcherCommits(dispatcher), consumers, name="orchestrator", interval_s=interval_s
        )
