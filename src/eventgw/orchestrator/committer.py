"""Commits the orchestrator's consumed offsets: up to the first unfinished task, promptly.

Offsets go to Kafka every ``interval_s`` and once more on drain (and, from the consumer's
rebalance callback, before partitions move: `Dispatcher.revoke_partitions`). Only what the
`AckTracker` says is finished is committed, so a crash re-delivers, never loses
(docs/delivery-semantics.md). Each commit's metadata records the runs of offsets finished
above it (`eventgw.orchestrator.commit_metadata`): the next owner does not serve them again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from eventgw.core.lifecycle import sleep_or_stop
from eventgw.kafka.consumer import ConsumerError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

    from eventgw.kafka.group_consumer import GroupConsumer
    from eventgw.orchestrator.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

__all__ = ["Committer"]


class Committer:
    """Commits each partition's offset through the group member it is assigned to (the
    urgent and bulk lane readers, the retry reader)."""

    def __init__(
        self, dispatcher: Dispatcher, consumers: Sequence[GroupConsumer], interval_s: float
    ) -> None:
        self._d = dispatcher
        self._consumers = list(consumers)
        self._interval_s = interval_s
        self.commits = 0
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Commit every ``interval_s`` until ``stop`` (the drain commits once more)."""
        while not stop.is_set():
            await sleep_or_stop(stop, self._interval_s)
            await self.commit()

    async def commit(self) -> None:
        """Commit what advanced since the last commit; a failure is logged and retried later."""
        pending = self._d.committable()
        if not pending:
            return
        for consumer in self._consumers:
            owned = {tp: o for tp, o in pending.items() if tp in consumer.assigned}
            if not owned:
                continue
            with_metadata = {
                tp: (o, self._d.commit_metadata(tp[0], tp[1], o)) for tp, o in owned.items()
            }
            try:
                await consumer.commit(with_metadata)
            except ConsumerError as exc:
                self.failures += 1
                logger.warning("orchestrator.commit_failed error=%s", exc)
                continue
            self._d.mark_committed(owned)
            self.commits += 1
