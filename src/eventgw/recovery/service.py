"""Composition root of the failed-writes processor: topic consumer + backup scanner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from eventgw.backup.factory import open_backup_store
from eventgw.backup.store import BackupFull, BackupNotFound, BackupUnavailable
from eventgw.config.settings import LaneTuning
from eventgw.core.backup_codec import AUTHENTICATION_KINDS, CorruptBackup
from eventgw.core.clock import Clock, SystemClock
from eventgw.core.lifecycle import sleep_or_stop
from eventgw.core.retry import Backoff
from eventgw.kafka.client_config import consumer_config, producer_config
from eventgw.kafka.group_consumer import GroupConsumer
from eventgw.kafka.producer import BatchProducer
from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer
from eventgw.recovery.prefix_committer import PrefixCommitter
from eventgw.recovery.replay_intent import source_of
from eventgw.recovery.replayer import Captured, Replayer
from eventgw.recovery.settled_prefix import SettledPrefix
from eventgw.recovery.takeover import Takeover, open_scanners

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from eventgw.backup.store import BackupStore
    from eventgw.config.settings import EventGwSettings
    from eventgw.kafka.group_consumer import Committed, TopicPartition
    from eventgw.recovery.replayer import ReplayReport

logger = logging.getLogger(__name__)


class CapturedReplayer(Protocol):
    """What the two loops need of a `Replayer` (the unit tests script it)."""

    def cluster_of(self, value: bytes) -> str:
        """The cluster a captured record's replay would be written to."""
        ...

    async def replay(self, captured: Sequence[Captured], *, give_up: bool = False) -> ReplayReport:
        """Republish ``captured``; park what cannot be replayed; report each outcome."""
        ...


_REWRITE_MAX_BYTES = 16 << 20
"""The pending records of a backup object kept in memory to rewrite them as a new object;
past this the whole object is retried instead (duplicates of what was confirmed)."""

_POLL_RECORDS = 500
"""Records of the failed-writes topic polled, replayed and retried together (a batch)."""

REPLAY_CHUNK = 100
"""Records of a batch handed to Kafka at a time while every one is confirmed. Each chunk's
settled prefix is committed while the next one is sent, so a kill repeats about two chunks
(sent and not yet committed), not the batch. After a transient failure the rest of the
batch goes at once: a dead cluster costs one delivery timeout per round, not one per chunk."""


class RecoveryService:
    """Replays failed writes until stopped; parks what cannot be replayed; never stalls.

    Topic loop: poll a batch from the failed-writes topic and replay it, `REPLAY_CHUNK`
    records at a time. Events Kafka confirmed (in their lane, or parked in the DLQ) are
    settled, and so is one the DLQ refuses for good (too large for it as well) once the
    backup store holds it; the rest are replayed again after a backoff (``Backoff``:
    ``recovery.backoff_initial_s`` doubling to ``backoff_max_s``), up to
    ``recovery.max_attempts`` times, after which transient failures are parked too. Each
    partition is committed up to its first unsettled record as the chunks settle
    (`PrefixCommitter`), and the next batch is polled once every record of this one is
    settled. Only a cluster that stays unreachable holds the topic back.

    Backup loop: every ``backup_scan_interval_s`` list the backup store oldest first and
    replay each object the same way. An object is deleted only when every event in it is
    replayed or parked. An object with events left is rewritten with only those events
    (put, then delete: a crash in between duplicates, never loses) and retried after its
    own backoff, while newer objects are replayed meanwhile.
    """

    name = "failed-writes"

    def __init__(
        self,
        settings: EventGwSettings,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.status_port: int | None = None
        self._clock = clock or SystemClock()
        r = settings.recovery
        self._backoff = backoff or Backoff(r.backoff_initial_s, r.backoff_max_s)
        self._ready = False
        m = self.metrics
        replayed = m.counter("eventgw_recovery_replayed_total", "events republished", ["source"])
        self._replayed = {s: replayed.labels(s) for s in ("topic", "backup")}
        self._parked = m.counter(
            "eventgw_recovery_parked_total", "events parked in the DLQ", ["source", "reason"]
        )
        self._moved = m.counter(
            "eventgw_recovery_moved_to_backup_total", "failed-writes events the DLQ refused"
        )
        self._errors = m.counter("eventgw_recovery_errors_total", "failed replay attempts")
        self._backup_objects = m.gauge("eventgw_recovery_backup_objects", "backup objects left")
        self._deferred_objects = m.gauge(
            "eventgw_recovery_backup_objects_deferred", "backup objects waiting for a retry"
        )
        self._rejected = m.counter(
            "eventgw_recovery_backup_rejected_total",
            "backup objects not replayed: damaged, unsigned or forged",
            ["reason"],
        )

    def _count(self, source: str, report: ReplayReport) -> None:
        self._replayed[source].inc(report.replayed)
        for reason, n in report.parked.items():
            self._parked.labels(source, reason).inc(n)

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """See `eventgw.core.lifecycle.Service`."""
        s = self.settings
        r = s.recovery
        # linger 1 ms, not 5: chunks go one after another, and a chunk's records are produced
        # together (they batch anyway), so a longer linger only delays each chunk (5 ms took
        # the topic replay from ~14,000 to ~9,000 events/s on loopback).
        tuning = LaneTuning(
            linger_ms=1, batch_size=512 << 10, delivery_timeout_ms=r.delivery_timeout_ms
        )
        producers: dict[str, BatchProducer] = {}
        for name, cluster in (("primary", s.kafka.primary), ("rollout", s.kafka.rollout)):
            if cluster is not None:
                producers[name] = BatchProducer(
                    f"recovery-{name}", producer_config(cluster, tuning, f"eventgw-recovery-{name}")
                )
                producers[name].start()
        replayer = Replayer(producers, s.topics, s.ingest.classifier())
        clusters = {"primary": s.kafka.primary}
        if s.kafka.rollout is not None:
            clusters["rollout"] = s.kafka.rollout
        stall_s = min(10.0, r.read_back_timeout_s)  # one scanner step; the deadline is apart
        takeover = Takeover(
            lambda names: open_scanners(clusters, names, stall_s),
            s.topics,
            r,
            self.metrics,
            self._clock,
        )
        fw_cluster = s.kafka.fallback or s.kafka.primary
        consumer = GroupConsumer(
            consumer_config(fw_cluster, r.group_id, "eventgw-recovery"),
            [s.topics.failed_writes],
            _on_assign,
            _on_revoke,
        )
        status = StatusServer(r.status_host, r.metrics_port, self.metrics, lambda: self._ready)
        backup: BackupStore | None = None
        try:
            await consumer.start()
            backup = await open_backup_store(s.backup)
            await status.start()
            self.status_port = status.port
            self._ready = True
            ready.set()
            logger.info(
                "recovery.serving topic=%s backup=%s status_port=%d",
                s.topics.failed_writes,
                backup.name,
                status.port,
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._topic_loop(consumer, replayer, backup, takeover, stop))
                tg.create_task(self._backup_loop(backup, replayer, stop))
        finally:
            self._ready = False
            await consumer.close()
            await asyncio.gather(*(p.close(10) for p in producers.values()))
            if backup is not None:
                await backup.close()
            await status.close()

    # -- failed-writes topic ------------------------------------------------------------

    async def _topic_loop(
        self,
        consumer: GroupConsumer,
        replayer: CapturedReplayer,
        backup: BackupStore,
        takeover: Takeover,
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            records = await consumer.poll_batch(_POLL_RECORDS, 0.5)
            if not records:
                continue
            batch = [Captured(r.value, source_of(r.topic, r.partition, r.offset)) for r in records]
            # Replayed by an earlier owner of the partition, after its last commit: settled.
            done = await takeover.already_replayed(consumer, records, replayer.cluster_of)
            committer = PrefixCommitter(
                consumer,
                SettledPrefix([(r.topic, r.partition, r.offset) for r in records]),
                self._clock,
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(committer.run())
                committer.replayed_earlier(done)
                settled = await self._settle(
                    batch,
                    replayer,
                    backup,
                    stop,
                    committer.settled,
                    committer.sending,
                    [i for i, _ in done],
                )
                # Batch end, or the drain on stop: what settled is committed once more;
                # the rest is read again later (duplicates of nothing settled before it).
                committer.close()
            if not settled:
                return
            logger.info("recovery.settled source=topic events=%d", len(records))

    async def _settle(
        self,
        batch: Sequence[Captured],
        replayer: CapturedReplayer,
        backup: BackupStore,
        stop: asyncio.Event,
        on_settled: Callable[[list[int]], None] | None = None,
        on_sending: Callable[[list[int]], None] | None = None,
        done: Collection[int] = (),
    ) -> bool:
        """Replay ``batch`` until every event is in Kafka or the backup store; False if stopped.

        Sends `REPLAY_CHUNK` events at a time (all but the indexes in ``done``), reports the
        indexes of each chunk to ``on_sending`` before handing them to Kafka, and those each
        chunk settled to ``on_settled`` as soon as Kafka confirmed them. After the first
        transient failure the rest of the batch goes in one call (bounded time per round:
        one delivery timeout). Each round replays only what is still pending, so a retry
        repeats no event that Kafka already confirmed.
        """
        skip = set(done)
        pending = [i for i in range(len(batch)) if i not in skip]
        chunk = REPLAY_CHUNK
        attempt = 0
        while True:
            give_up = attempt + 1 >= self.settings.recovery.max_attempts
            left: list[int] = []
            sent = 0
            while sent < len(pending):
                part = pending[sent : sent + chunk]
                sent += len(part)
                if on_sending is not None:
                    on_sending(part)
                still = await self._replay_part(batch, part, replayer, backup, give_up)
                if on_settled is not None:
                    unsettled = set(still)
                    on_settled([i for i in part if i not in unsettled])
                if still:
                    left += still
                    chunk = len(batch)
                if stop.is_set() and sent < len(pending):
                    return False  # drain: what settled is committed, the rest read again
            pending = left
            if not pending:
                return True
            self._errors.inc()
            await sleep_or_stop(stop, self._backoff.delay_s(attempt))
            if stop.is_set():
                return False
            attempt += 1

    async def _replay_part(
        self,
        batch: Sequence[Captured],
        part: list[int],
        replayer: CapturedReplayer,
        backup: BackupStore,
        give_up: bool,
    ) -> list[int]:
        """Replay the events ``part`` (indexes into ``batch``); return those still pending."""
        report = await replayer.replay([batch[i] for i in part], give_up=give_up)
        self._count("topic", report)
        moved: set[int] = set()
        if report.dlq_refused and await self._move_to_backup(
            [batch[part[j]] for j in report.dlq_refused], backup
        ):
            # No topic will ever take these. The backup store is the one durable place
            # left: they are settled, and the backup loop retries them with backoff.
            moved = set(report.dlq_refused)
        return [part[j] for j in report.pending if j not in moved]

    async def _move_to_backup(self, captured: Sequence[Captured], backup: BackupStore) -> bool:
        try:
            key = await backup.put([c.value for c in captured])
        except (BackupFull, BackupUnavailable, OSError) as exc:
            logger.error(
                "recovery.move_to_backup_failed events=%d first_source=%s error=%s",
                len(captured),
                captured[0].source,
                exc,
            )
            return False
        self._moved.inc(len(captured))
        logger.error(
            "recovery.moved_to_backup events=%d key=%s first_source=%s (neither their topic "
            "nor the DLQ will take them)",
            len(captured),
            key,
            captured[0].source,
        )
        return True

    # -- backup store -------------------------------------------------------------------

    async def _backup_loop(
        self, backup: BackupStore, replayer: CapturedReplayer, stop: asyncio.Event
    ) -> None:
        interval = self.settings.recovery.backup_scan_interval_s
        deferred: dict[str, _Deferral] = {}  # objects whose last replay left events behind
        attempt = 0
        while not stop.is_set():
            try:
                keys = await backup.list_keys()
            except (BackupUnavailable, OSError) as exc:
                self._errors.inc()
                logger.warning("recovery.backup_retry error=%s", exc)
                await sleep_or_stop(stop, self._backoff.delay_s(attempt))
                attempt += 1
                continue
            attempt = 0
            self._backup_objects.set(len(keys))
            for gone in deferred.keys() - set(keys):
                del deferred[gone]  # another replayer finished it, or an operator removed it
            for key in keys:
                if stop.is_set():
                    return
                due = deferred.get(key)
                if due is not None and due.retry_at > self._clock.monotonic():
                    continue  # backing off; newer objects go on meanwhile
                try:
                    await self._replay_object(key, backup, replayer, deferred)
                except (BackupUnavailable, OSError) as exc:
                    self._errors.inc()
                    self._defer(deferred, key, f"store: {exc}")
            self._deferred_objects.set(len(deferred))
            await sleep_or_stop(stop, interval)

    async def _replay_object(
        self,
        key: str,
        backup: BackupStore,
        replayer: CapturedReplayer,
        deferred: dict[str, _Deferral],
    ) -> None:
        """Replay one object; delete it when done, else keep only what is left, deferred.

        The store verifies the whole object (CRCs, and its HMAC when a key is configured)
        before it hands out the first record, then hands them out in batches: memory is one
        batch plus what is left to rewrite (at most `_REWRITE_MAX_BYTES`), whatever the
        object's size. A damaged, unsigned or forged object is never replayed: it is kept
        for an operator, logged at ERROR, counted, and re-read only after its backoff.
        """
        attempts = deferred[key].attempts if key in deferred else 0
        give_up = attempts + 1 >= self.settings.recovery.max_attempts
        source = f"{backup.name}:{key}"
        total = pending = 0
        left: list[bytes] = []  # the pending records, while they fit in _REWRITE_MAX_BYTES
        left_bytes = 0
        try:
            async with contextlib.aclosing(backup.read(key)) as batches:
                async for values in batches:
                    report = await replayer.replay(
                        [Captured(v, source) for v in values], give_up=give_up
                    )
                    self._count("backup", report)
                    total += len(values)
                    for i in report.pending:
                        pending += 1
                        left_bytes += len(values[i])
                        if left_bytes <= _REWRITE_MAX_BYTES:
                            left.append(values[i])
        except BackupNotFound:
            deferred.pop(key, None)  # another replayer finished it first
            return
        except CorruptBackup as exc:
            self._reject(key, exc)
            self._defer(deferred, key, exc.kind)  # kept for an operator; not re-read each scan
            return
        if not pending:
            await backup.delete(key)
            deferred.pop(key, None)
            logger.info("recovery.settled source=backup key=%s events=%d", key, total)
            return
        self._errors.inc()
        why = f"{pending} of {total} events left"
        if pending < total and len(left) == pending:
            # Keep only what is left, so the retry repeats none of what Kafka confirmed.
            # Put before delete: a crash in between leaves both (duplicates, never loss).
            try:
                new_key = await backup.put(left)
            except (BackupFull, BackupUnavailable, OSError) as exc:
                logger.warning("recovery.backup_rewrite_failed key=%s error=%s", key, exc)
            else:
                # The new object inherits the old one's attempts (and so its backoff).
                deferred[new_key] = deferred.pop(key, _Deferral())
                self._defer(deferred, new_key, why)
                await backup.delete(key)  # may raise: then the old one is deferred as well
                return
        # Too much left to hold for a rewrite (or the rewrite failed): the whole object is
        # retried; what Kafka already confirmed is replayed again (duplicates, never loss).
        self._defer(deferred, key, why)

    def _reject(self, key: str, exc: CorruptBackup) -> None:
        self._errors.inc()
        self._rejected.labels(exc.kind).inc()
        if exc.kind in AUTHENTICATION_KINDS:
            logger.error(
                "recovery.untrusted_backup key=%s reason=%s error=%s (not replayed; kept)",
                key,
                exc.kind,
                exc,
            )
        else:
            logger.error("recovery.corrupt_backup key=%s reason=%s error=%s", key, exc.kind, exc)

    def _defer(self, deferred: dict[str, _Deferral], key: str, why: str) -> None:
        state = deferred.setdefault(key, _Deferral())
        delay_s = self._backoff.delay_s(state.attempts)
        state.attempts += 1
        state.retry_at = self._clock.monotonic() + delay_s
        logger.warning(
            "recovery.backup_deferred key=%s attempts=%d retry_in_s=%.1f reason=%s",
            key,
            state.attempts,
            delay_s,
            why,
        )


async def _on_assign(partitions: list[TopicPartition], committed: Committed) -> None:
    """Nothing to do on assignment: `Takeover` reads the commits (and their replay intent)
    when the first batch of a partition shows it was taken over."""


async def _on_revoke(partitions: list[TopicPartition]) -> Committed:
    """Nothing extra to commit on a revoke: each batch commits as it settles
    (`PrefixCommitter`), and stops committing a partition once it is revoked; the next
    owner reads back what was replayed after the last commit (`Takeover`)."""
    return {}


@dataclass(slots=True)
class _Deferral:
    """A backup object waiting for its next attempt (mutable: one per deferred key)."""

    attempts: int = 0  # failed rounds so far (replays that left events out of Kafka)
    retry_at: float = 0.0  # monotonic time of the next attempt
