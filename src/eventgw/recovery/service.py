"""Composition root of the failed-writes processor: topic consumer + backup scanner."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from eventgw.backup.factory import open_backup_store
from eventgw.backup.store import BackupNotFound, BackupUnavailable
from eventgw.config.settings import LaneTuning
from eventgw.core.backup_codec import CorruptBackup
from eventgw.core.lifecycle import sleep_or_stop
from eventgw.kafka.client_config import consumer_config, producer_config
from eventgw.kafka.consumer import BatchConsumer, ConsumerError
from eventgw.kafka.producer import BatchProducer
from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer
from eventgw.recovery.replayer import Replayer

if TYPE_CHECKING:
    from eventgw.backup.store import BackupStore
    from eventgw.config.settings import EventGwSettings

logger = logging.getLogger(__name__)


class RecoveryService:
    """Replays failed writes until stopped.

    Topic loop: poll a batch from the failed-writes topic, republish it, and commit only
    after every record of the batch is confirmed in its intended topic; on failure, back
    off (exponential, capped) and retry the same batch. Backup loop: every
    ``backup_scan_interval_s`` list the backup store oldest first, republish each object's
    events, and delete the object only after all of them are in Kafka.
    """

    name = "failed-writes"

    def __init__(self, settings: EventGwSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.status_port: int | None = None
        self._ready = False
        m = self.metrics
        replayed = m.counter("eventgw_recovery_replayed_total", "events republished", ["source"])
        self._replayed_topic = replayed.labels("topic")
        self._replayed_backup = replayed.labels("backup")
        self._errors = m.counter("eventgw_recovery_errors_total", "failed replay attempts")
        self._backup_objects = m.gauge("eventgw_recovery_backup_objects", "backup objects left")

    def _backoff(self, attempt: int) -> float:
        r = self.settings.recovery
        return float(min(r.backoff_max_s, r.backoff_initial_s * (2 ** min(attempt, 20))))

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """See `eventgw.core.lifecycle.Service`."""
        s = self.settings
        r = s.recovery
        tuning = LaneTuning(
            linger_ms=5, batch_size=512 << 10, delivery_timeout_ms=r.delivery_timeout_ms
        )
        producers: dict[str, BatchProducer] = {}
        for name, cluster in (("primary", s.kafka.primary), ("rollout", s.kafka.rollout)):
            if cluster is not None:
                producers[name] = BatchProducer(
                    f"recovery-{name}", producer_config(cluster, tuning, f"eventgw-recovery-{name}")
                )
                producers[name].start()
        replayer = Replayer(producers, s.topics, s.ingest.classifier())
        fw_cluster = s.kafka.fallback or s.kafka.primary
        consumer = BatchConsumer(
            consumer_config(fw_cluster, r.group_id, "eventgw-recovery"), [s.topics.failed_writes]
        )
        status = StatusServer(
            r.status_host, r.metrics_port, self.metrics.render, lambda: self._ready
        )
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
                tg.create_task(self._topic_loop(consumer, replayer, stop))
                tg.create_task(self._backup_loop(backup, replayer, stop))
        finally:
            self._ready = False
            await consumer.close()
            await asyncio.gather(*(p.close(10) for p in producers.values()))
            if backup is not None:
                await backup.close()
            await status.close()

    async def _topic_loop(
        self, consumer: BatchConsumer, replayer: Replayer, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            records = await consumer.poll_batch(500, 0.5)
            if not records:
                continue
            attempt = 0
            while not stop.is_set():
                failed = await replayer.replay([rec.value for rec in records])
                if failed == 0:
                    break
                self._errors.inc()
                await sleep_or_stop(stop, self._backoff(attempt))
                attempt += 1
            else:
                return  # stopping: this batch stays uncommitted and is read again later
            try:
                await consumer.commit(records)
            except ConsumerError as exc:
                # Not committed: the batch is replayed again after a restart (duplicates only).
                logger.warning("recovery.commit_failed error=%s", exc)
            self._replayed_topic.inc(len(records))
            logger.info("recovery.replayed source=topic events=%d", len(records))

    async def _backup_loop(
        self, backup: BackupStore, replayer: Replayer, stop: asyncio.Event
    ) -> None:
        interval = self.settings.recovery.backup_scan_interval_s
        attempt = 0
        while not stop.is_set():
            try:
                keys = await backup.list_keys()
                self._backup_objects.set(len(keys))
                for key in keys:
                    if stop.is_set():
                        return
                    try:
                        values = await backup.get(key)
                    except BackupNotFound:
                        continue  # another replayer finished it first
                    except CorruptBackup as exc:
                        self._errors.inc()
                        logger.error("recovery.corrupt_backup key=%s error=%s", key, exc)
                        continue
                    failed = await replayer.replay(values)
                    if failed:
                        raise _ReplayIncomplete(key, failed)
                    await backup.delete(key)
                    self._replayed_backup.inc(len(values))
                    logger.info(
                        "recovery.replayed source=backup key=%s events=%d", key, len(values)
                    )
                attempt = 0
                await sleep_or_stop(stop, interval)
            except (BackupUnavailable, OSError, _ReplayIncomplete) as exc:
                self._errors.inc()
                logger.warning("recovery.backup_retry error=%s", exc)
                await sleep_or_stop(stop, self._backoff(attempt))
                attempt += 1


class _ReplayIncomplete(Exception):
    def __init__(self, key: str, failed: int) -> None:
        super().__init__(f"backup object {key}: {failed} events not republished yet")
