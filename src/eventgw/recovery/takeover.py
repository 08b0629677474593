"""Skip the failed writes an earlier owner of a partition replayed and did not commit.

The topic loop of the failed-writes processor asks `Takeover.already_replayed` about each
polled batch. The first batch of a partition after it was taken over (assigned at start
or on a rebalance: its first offset is not where this processor's last batch of it ended)
triggers a read-back: the group's committed position and replay intent
(`eventgw.recovery.replay_intent`) of the partition, then the lanes, retry topics and DLQ
read from that intent (`eventgw.recovery.read_back.LaneReadBack`). The offsets found are
skipped in this batch and the following ones. docs/delivery-semantics.md, "Replayed failed
writes".

Never a loss: an offset is skipped only when a copy carrying its ``eventgw-recovery-source``
was read from Kafka. Anything that stops the read-back (no intent, the cap, the deadline, a
cluster down, an ACL missing) leaves the rest to be replayed as before, and is counted in
``eventgw_recovery_read_back_incomplete_total``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Protocol, TypeAlias

from eventgw.kafka.client_config import scanner_config
from eventgw.kafka.consumer import ConsumerError
from eventgw.kafka.scanner import TopicScanner
from eventgw.recovery.read_back import LaneReadBack
from eventgw.recovery.replay_intent import decode_intent, encode_intent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence

    from eventgw.config.settings import KafkaClusterSettings, RecoverySettings, TopicSettings
    from eventgw.core.clock import Clock
    from eventgw.kafka.consumer import ConsumedRecord
    from eventgw.kafka.group_consumer import Committed
    from eventgw.kafka.scanner import Scanner
    from eventgw.metrics.backend import Metrics
    from eventgw.recovery.read_back import ReadBackResult
    from eventgw.recovery.settled_prefix import TopicPartition

    ScannerOpener: TypeAlias = Callable[
        [Collection[str]], contextlib.AbstractAsyncContextManager[Mapping[str, Scanner]]
    ]
    """Opens one scanner per named cluster (``primary``, ``rollout``) for one read-back."""

__all__ = ["CommittedReader", "Takeover", "open_scanners", "written_topics"]

logger = logging.getLogger(__name__)

_COMMITTED_TIMEOUT_S = 10.0


class CommittedReader(Protocol):
    """What the takeover needs from the group consumer (`GroupConsumer`)."""

    async def committed(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> Committed: ...

    async def commit(self, offsets: Committed) -> None: ...


def written_topics(topics: TopicSettings, cluster: str) -> list[str]:
    """Every topic the failed-writes processor writes on ``cluster``.

    The lanes and retry topics (`eventgw.recovery.replayer.Replayer.target`) on each
    cluster, and the DLQ (parked events) on the primary one.
    """
    names = [topics.p30, topics.p20, topics.p10, topics.offload]
    names += [topics.retry_60s, topics.retry_120s, topics.retry_240s, topics.retry_480s]
    if cluster == "primary":
        names.append(topics.dlq)
    return names


@contextlib.asynccontextmanager
async def open_scanners(
    clusters: Mapping[str, KafkaClusterSettings], names: Collection[str], stall_timeout_s: float
) -> AsyncIterator[Mapping[str, Scanner]]:
    """One `TopicScanner` per cluster of ``names`` that is configured, closed after it.

    Opened per read-back, not kept: a read-back happens only when partitions are taken
    over, and an idle client to a cluster that is down would only log.
    """
    async with contextlib.AsyncExitStack() as stack:
        scanners: dict[str, Scanner] = {}
        for name, cluster in clusters.items():
            if name not in names:
                continue
            config = scanner_config(cluster, f"eventgw-recovery-read-back-{name}")
            scanner = TopicScanner(config, stall_timeout_s=stall_timeout_s)
            scanners[name] = await stack.enter_async_context(scanner)
        yield scanners


class Takeover:
    """Per failed-writes partition: the offsets already replayed, found on taking it over.

    State per partition: the offset after the last record this processor polled from it
    (to notice a takeover) and the offsets found by its last read-back that are still ahead.
    Memory: at most ``read_back_max_records`` offsets per read-back.

    Args:
        scanners: opens the readers of the clusters the processor writes, per read-back
            (`open_scanners`).
        topics: topic names.
        settings: ``recovery`` settings (read-back cap and deadline).
        metrics: where ``eventgw_recovery_read_back_*`` go.
        clock: wall time and the deadline.
    """

    def __init__(
        self,
        scanners: ScannerOpener,
        topics: TopicSettings,
        settings: RecoverySettings,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._open_scanners = scanners
        self._topics = topics
        self._settings = settings
        self._clock = clock
        self._next: dict[TopicPartition, int] = {}
        self._found: dict[TopicPartition, set[int]] = {}
        self._intent: dict[TopicPartition, int] = {}  # of the last read-back, per partition
        self._skipped = metrics.counter(
            "eventgw_recovery_read_back_skipped_total",
            "failed writes not replayed: the read-back found them in Kafka",
        )
        self._incomplete = metrics.counter(
            "eventgw_recovery_read_back_incomplete_total",
            "read-backs that did not read everything (the rest is replayed again)",
            ["reason"],
        )

    async def already_replayed(
        self,
        consumer: CommittedReader,
        records: Sequence[ConsumedRecord],
        cluster_of: Callable[[bytes], str],
    ) -> list[tuple[int, int]]:
        """``(index, sent_from_ms)`` of ``records`` whose replay is already in Kafka.

        Do not send those again. ``sent_from_ms`` is the intent they were found from (their
        copies are no older): a commit past them must not carry a later one.

        A partition taken over without an intent (never committed, or committed by an
        earlier version) gets one first — its position committed again, with the intent
        *now* — before anything of it is sent: the write-ahead that lets the next owner read
        back even when this one dies before its first commit.

        Reads back first for every partition of ``records`` that was just taken over: on
        the primary cluster (lanes, DLQ) and on each other cluster that a record of those
        partitions in ``records`` is meant for (``cluster_of(value)``) — so a configured
        cluster nothing goes to, down or not deployed, costs no metadata timeout. Bounded
        by ``recovery.read_back_timeout_s`` plus one scanner step.
        """
        first: dict[TopicPartition, int] = {}
        for r in records:
            first.setdefault((r.topic, r.partition), r.offset)
        taken = [tp for tp, offset in first.items() if self._next.get(tp) != offset]
        if taken:
            for tp in taken:
                self._found.pop(tp, None)
            taken_set = set(taken)
            clusters = {"primary"} | {
                cluster_of(r.value) for r in records if (r.topic, r.partition) in taken_set
            }
            self._found.update(await self._read_back(consumer, taken, clusters, first))
        skip: list[tuple[int, int]] = []
        for i, r in enumerate(records):
            tp = (r.topic, r.partition)
            self._next[tp] = r.offset + 1
            found = self._found.get(tp)
            if found is not None and r.offset in found:
                found.discard(r.offset)
                skip.append((i, self._intent[tp]))
        for tp in first:
            found = self._found.get(tp)
            if found is not None:
                # Offsets behind the batch can no longer come (the consumer moves forward).
                end = self._next[tp]
                found.difference_update([o for o in found if o < end])
                if not found:
                    del self._found[tp]
        if skip:
            self._skipped.inc(len(skip))
        return skip

    async def _read_back(
        self,
        consumer: CommittedReader,
        taken: Sequence[TopicPartition],
        clusters: Collection[str],
        first: Mapping[TopicPartition, int],
    ) -> dict[TopicPartition, set[int]]:
        try:
            committed = await consumer.committed(taken, _COMMITTED_TIMEOUT_S)
        except ConsumerError as exc:
            logger.warning("recovery.read_back_failed step=committed error=%s", exc)
            self._incomplete.labels("error").inc()
            return {}
        positions: dict[int, int] = {}
        intents: list[int] = []
        missing: dict[TopicPartition, int] = {}
        topic = self._topics.failed_writes
        for tp in taken:
            position, metadata = committed.get(tp, (-1, ""))
            intent = decode_intent(metadata)
            if intent is None:
                # no_commit: never committed (a new partition or group, or a run killed
                # before its first commit); no_intent: committed without an intent (an
                # earlier version). Either way nothing says from when to read back.
                reason = "no_commit" if position < 0 else "no_intent"
                logger.info(
                    "recovery.read_back_skipped topic=%s partition=%d committed=%d reason=%s",
                    tp[0],
                    tp[1],
                    position,
                    reason,
                )
                self._incomplete.labels(reason).inc()
                missing[tp] = first[tp]
                continue
            positions[tp[1]] = position
            intents.append(intent)
            self._intent[tp] = intent
        if missing:
            await self._write_ahead(consumer, missing)
        if not positions:
            return {}
        started = self._clock.monotonic()
        result = await self._find(positions, min(intents), clusters)
        found = sum(len(offsets) for offsets in result.found.values())
        logger.info(
            "recovery.read_back partitions=%s found=%d records_read=%d took_s=%.2f incomplete=%s",
            ",".join(str(p) for p in sorted(positions)),
            found,
            result.records_read,
            self._clock.monotonic() - started,
            ",".join(sorted(result.shortfalls)) or "-",
        )
        for reason in result.shortfalls:
            self._incomplete.labels(reason).inc()
        return {(topic, p): offsets for p, offsets in result.found.items()}

    async def _write_ahead(
        self, consumer: CommittedReader, positions: Mapping[TopicPartition, int]
    ) -> None:
        """Commit ``positions`` (where the group is anyway) with the intent now."""
        intent = encode_intent(self._clock.wall_ms())
        try:
            await consumer.commit({tp: (offset, intent) for tp, offset in positions.items()})
        except ConsumerError as exc:
            # Replayed without an intent: if this run dies before its first commit, the
            # next one replays what it sent again (duplicates, never loss).
            logger.warning("recovery.read_back_failed step=write_ahead error=%s", exc)
            self._incomplete.labels("error").inc()

    async def _find(
        self, positions: dict[int, int], sent_from_ms: int, clusters: Collection[str]
    ) -> ReadBackResult:
        s = self._settings
        async with self._open_scanners(clusters) as scanners:
            targets = {name: written_topics(self._topics, name) for name in scanners}
            read_back = LaneReadBack(
                scanners,
                targets,
                self._topics.failed_writes,
                max_records=s.read_back_max_records,
                deadline_s=s.read_back_timeout_s,
                clock=self._clock,
            )
            return await read_back.find(positions, sent_from_ms)
