"""The one consumer-group member: rebalance hooks, pause/resume, seek, commit with metadata.

The orchestrator's lane and retry readers and the failed-writes processor's reader are each
a `GroupConsumer` (the assigned, group-less reader is `eventgw.kafka.consumer.PartitionReader`).
Commits carry Kafka's commit metadata (the orchestrator's finished runs, the failed-writes
replay intent); what the group committed is read back with it, on assignment (`on_assign`)
and on request (`GroupConsumer.committed`).

confluent-kafka's Consumer is synchronous. Every call into it runs in a worker thread and
is serialised by one asyncio lock, so the consumer is never used from two threads at once.
Rebalance callbacks run *inside* ``poll()``/``consume()`` on that worker thread; they hand the
work to the event loop with ``run_coroutine_threadsafe`` and wait for it (bounded), so the owner can
drop revoked partitions and return the offsets to commit before the partitions move. The
commit itself then happens synchronously in the callback, as Kafka requires.

Two librdkafka behaviours shape this module:

- A rebalance may run *between* the two reads of one batched poll (``poll()`` then
  ``consume()``): a partition revoked and assigned again there is read again from its
  committed offset, below the record the first read returned. The callbacks report each
  rebalance to a `RebalanceCounter`, whose reads hand on only what was read after a revoke
  of its partition (`eventgw.kafka.stale_reads`).
- ``close()`` can block for good in the rebalance callback's ``assign`` when a rebalance
  hands partitions back while it closes (librdkafka issue #4884), or for minutes in the
  revoke's synchronous commit to a broker that does not answer: see
  `eventgw.kafka.consumer_close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import confluent_kafka

from eventgw.kafka.consumer import ConsumedRecord, ConsumerError, consume_available, to_records
from eventgw.kafka.consumer_close import DEFAULT_CLOSE_TIMEOUT_S, close_within, leave_group
from eventgw.kafka.stale_reads import RebalanceCounter

logger = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
Committed = dict[TopicPartition, tuple[int, str]]
"""Per partition: the offset to commit (next to read) and the commit's metadata."""
AssignHook = Callable[[list[TopicPartition], Committed], Coroutine[Any, Any, None]]
RevokeHook = Callable[[list[TopicPartition]], Coroutine[Any, Any, Committed]]

_CALLBACK_TIMEOUT_S = 30.0


class GroupConsumer:
    """Subscribe; batch polls; explicit commits with metadata; pause/resume/seek.

    Static membership when the config sets ``group.instance.id`` (the orchestrator). What
    every member gets: reads that never mix both sides of a rebalance (`RebalanceCounter`),
    a close bounded by ``close_timeout_s`` that runs the revoke first (`leave_group`), and
    a librdkafka consumer that hits a fatal error replaced by a new one (`_replace`).

    Args:
        config: librdkafka consumer config (group.id, group.instance.id, ...).
        topics: topics to subscribe to.
        on_assign: awaited on the loop when partitions arrive, with what the group has
            committed for them (offset and metadata; partitions without a commit left out).
        on_revoke: awaited on the loop before partitions leave; returns offsets (and
            metadata) to commit.
        close_timeout_s: the most `close` takes (default `DEFAULT_CLOSE_TIMEOUT_S`).

    Raises:
        ValueError: ``close_timeout_s`` is not above 0.

    Rebalance generation: `generation` counts the assign, revoke and lost callbacks run so
    far (`RebalanceCounter`); a batched poll compares it before and after its second read.
    """

    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        on_assign: AssignHook,
        on_revoke: RevokeHook,
        *,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
    ) -> None:
        if not close_timeout_s > 0:
            raise ValueError(f"close_timeout_s must be > 0, got {close_timeout_s}")
        self._close_timeout_s = close_timeout_s
        self._config = dict(config)
        self._topics = list(topics)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._consumer: confluent_kafka.Consumer | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.assigned: set[TopicPartition] = set()
        # Written only by the rebalance callbacks, which run on the thread that polls.
        self._rebalances = RebalanceCounter()

    async def start(self) -> None:
        """Create the consumer and subscribe (partitions arrive with the first polls)."""
        self._loop = asyncio.get_running_loop()
        self._consumer = confluent_kafka.Consumer(self._config)
        await asyncio.to_thread(
            self._consumer.subscribe,
            self._topics,
            on_assign=self._assign_cb,
            on_revoke=self._revoke_cb,
            on_lost=self._lost_cb,
        )

    def _run_on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("consumer is not started")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop closed: a close() that overran its deadline ends late
            coro.close()
            raise
        return future.result(_CALLBACK_TIMEOUT_S)

    def _assign_cb(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._rebalances.assigned()
        if self._closing:
            # A rebalance that ends while close() runs: the partitions leave again at once.
            # Reading their commits would wait for a broker handle being destroyed (seen:
            # tens of seconds of a replica moving fleets, unbound); the owner never sees them.
            logger.info("kafka.assigned_while_closing partitions=%s (ignored)", _fmt(tps))
            return
        self.assigned.update(tps)
        logger.info("kafka.assigned partitions=%s", _fmt(tps))
        committed: Committed = {}
        try:
            committed = _read_committed(consumer, partitions, _CALLBACK_TIMEOUT_S)
        except confluent_kafka.KafkaException as exc:
            # Only the finished runs are missing then: some records are served twice.
            logger.warning("kafka.committed_unreadable error=%s", exc)
        self._run_on_loop(self._on_assign(tps, committed))

    def _revoke_cb(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        logger.info("kafka.revoked partitions=%s", _fmt(tps))
        self._rebalances.left(tps)
        try:
            offsets: Committed = self._run_on_loop(self._on_revoke(tps))
            if offsets:
                try:
                    consumer.commit(offsets=_topic_partitions(offsets), asynchronous=False)
                except confluent_kafka.KafkaException as exc:
                    logger.warning("kafka.revoke_commit_failed error=%s", exc)
        finally:
            # Even if the owner's hook failed: the partitions leave all the same, and what
            # this member reads of them afterwards starts from the committed offset.
            self.assigned.difference_update(tps)

    def _lost_cb(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        logger.warning("kafka.lost partitions=%s", _fmt(tps))
        self._rebalances.left(tps)
        try:
            self._run_on_loop(self._on_revoke(tps))  # nothing may be committed for lost ones
        finally:
            self.assigned.difference_update(tps)

    @property
    def generation(self) -> int:
        """The rebalance callbacks run so far (assign, revoke, lost)."""
        return self._rebalances.generation

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        """Up to ``max_records`` records; rebalance callbacks may run inside this call.

        A fatal error of the librdkafka consumer (it never fetches again) replaces it: see
        `_replace`. The records of that poll are dropped (nothing of them was committed).
        """
        consumer = self._require()
        async with self._lock:
            messages = await asyncio.to_thread(
                consume_available, consumer, max_records, timeout_s, self._rebalances
            )
            fatal = next((m.error() for m in messages if _is_fatal(m.error())), None)
            if fatal is not None:
                await self._replace(consumer, fatal)
                return []
        return to_records(messages)

    async def _replace(self, dead: confluent_kafka.Consumer, error: object) -> None:
        """Give up ``dead``'s partitions as lost and join the group with a new consumer.

        librdkafka makes some errors fatal for a consumer instance, e.g. FENCED_INSTANCE_ID:
        after a broker outage the consumer rejoined under its static ``group.instance.id``
        and a commit still carrying the old member id was refused. Such an instance never
        fetches again; the fault matrix found an orchestrator up and ready that read its
        lanes no more. Nothing is committed for the partitions (they are lost, as in
        ``on_lost``); the new member gets them back with what the group last committed.
        Called with ``_lock`` held.
        """
        lost = sorted(self.assigned)
        logger.warning("kafka.consumer_replaced error=%s partitions=%s", error, _fmt(lost))
        if lost:
            await self._on_revoke(lost)
        self.assigned.clear()
        self._consumer = None
        # A fatal consumer does not rebalance any more: just close it (bounded all the same).
        await close_within(dead.close, self._close_timeout_s)
        await self.start()

    async def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop fetching ``partitions`` (already fetched records still arrive)."""
        if partitions:
            consumer = self._require()
            async with self._lock:
                consumer.pause([confluent_kafka.TopicPartition(t, p) for t, p in partitions])

    async def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch ``partitions`` again."""
        if partitions:
            consumer = self._require()
            async with self._lock:
                consumer.resume([confluent_kafka.TopicPartition(t, p) for t, p in partitions])

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic/partition`` from ``offset`` next (used to hold a record until due)."""
        consumer = self._require()
        async with self._lock:
            await asyncio.to_thread(
                consumer.seek, confluent_kafka.TopicPartition(topic, partition, offset)
            )

    async def commit(self, offsets: Committed) -> None:
        """Commit ``offsets`` synchronously: per partition, the next offset to read (the
        last one done + 1) and the metadata to store with it ("" for none).

        The metadata is read back by `committed` and by the next owner's `on_assign`; keep
        it short (the broker's ``offset.metadata.max.bytes``, 4,096 by default, refuses the
        commit above it).

        Raises:
            ConsumerError: the commit failed (e.g. the partition was revoked meanwhile).
            ValueError: an offset below 0 (nothing is committed).
        """
        if not offsets:
            return
        for (topic, partition), (offset, _) in offsets.items():
            if offset < 0:
                raise ValueError(f"offsets: {topic}[{partition}] offset {offset} is below 0")
        consumer = self._require()
        tps = _topic_partitions(offsets)
        async with self._lock:
            try:
                await asyncio.to_thread(consumer.commit, offsets=tps, asynchronous=False)
            except confluent_kafka.KafkaException as exc:
                raise ConsumerError(f"commit failed: {exc}") from exc

    async def committed(self, partitions: Sequence[TopicPartition], timeout_s: float) -> Committed:
        """What the group has committed for ``partitions``: next offset and metadata each.

        A partition with no committed position is left out. Blocks the consumer's other
        calls (one lock) for up to ``timeout_s``.

        Raises:
            ConsumerError: the request failed or took longer than ``timeout_s``.
            ValueError: ``timeout_s`` is not above 0.
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if not partitions:
            return {}
        consumer = self._require()
        query = [confluent_kafka.TopicPartition(t, p) for t, p in partitions]
        async with self._lock:
            try:
                return await asyncio.to_thread(_read_committed, consumer, query, timeout_s)
            except confluent_kafka.KafkaException as exc:
                raise ConsumerError(f"committed offsets: {exc}") from exc

    async def close(self) -> None:
        """Leave the group and close, within ``close_timeout_s`` (`close_within`).

        The revoke callback runs first (in `leave_group`'s polls, up to half the deadline),
        so the owner drops its partitions and their offsets are committed as on any revoke;
        queued rebalance events are served there, never inside librdkafka's ``close()``
        (librdkafka issue #4884). Past the deadline the consumer is left behind (logged) and
        close returns: what was not committed is read again.
        """
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self._closing = True
        async with self._lock:
            await close_within(
                lambda: leave_group(consumer, self._rebalances, self._close_timeout_s / 2),
                self._close_timeout_s,
            )

    def _require(self) -> confluent_kafka.Consumer:
        if self._consumer is None:
            raise RuntimeError("consumer is not started")
        return self._consumer


def _is_fatal(error: confluent_kafka.KafkaError | None) -> bool:
    """Whether ``error`` ends the consumer instance (the ``_FATAL`` event, or flagged so)."""
    return error is not None and (
        error.code() == confluent_kafka.KafkaError._FATAL or error.fatal()
    )


def _read_committed(consumer: Any, partitions: list[Any], timeout_s: float) -> Committed:
    """The group's committed position and metadata of ``partitions`` (those it has).

    Blocking: on the polling thread (in a rebalance callback) or a worker thread. Raises
    ``KafkaException``: the caller translates it.
    """
    return {
        (tp.topic, tp.partition): (tp.offset, tp.metadata or "")
        for tp in consumer.committed(partitions, timeout=timeout_s)
        if tp.error is None and tp.offset >= 0
    }


def _topic_partitions(offsets: Committed) -> list[confluent_kafka.TopicPartition]:
    return [
        confluent_kafka.TopicPartition(t, p, o, metadata=m)
        if m
        else confluent_kafka.TopicPartition(t, p, o)
        for (t, p), (o, m) in offsets.items()
    ]


def _fmt(tps: list[TopicPartition]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in sorted(tps)) or "-"
