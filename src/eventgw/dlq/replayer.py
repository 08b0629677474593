"""Replay a range of a retry topic: copy its records to the end of the same retry topic.

Why the retry topic and not the lane: the point is to serve again records the orchestrator's
retry consumer lost or skipped (its group offset was reset past them, or a bug committed
them unserved). A copy at the end of the same topic goes back through the retry flow
exactly as the original would have: the orchestrator holds it until its
``eventgw-retry-at-ms`` (long past, for a lost record: served at once), keeps its attempt
count and its ``eventgw-original-topic``, and sends it to the next retry topic or the DLQ
if it fails again. Written to a lane instead, it would skip the hold and be buffered
against the lane's memory share rather than the retry share.

The copy is the record as it was (key, value, headers) plus ``eventgw-replayed`` naming the
source record. Replay is not idempotent: running it twice over a range copies the range
twice (at-least-once, like every path here); ``--dry-run`` shows the range first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from eventgw.core.envelope import H_REPLAYED
from eventgw.dlq.lanes import source_marker
from eventgw.dlq.reader import TopicReader
from eventgw.dlq.report import Progress, ReplayReport

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from eventgw.dlq.rate import RateLimiter
    from eventgw.dlq.record import DlqRecord
    from eventgw.dlq.redrive_log import Producer
    from eventgw.dlq.selection import Selection
    from eventgw.kafka.producer import Record
    from eventgw.kafka.scanner import Scanner

logger = logging.getLogger(__name__)


def replay_record(record: DlqRecord) -> Record:
    """The copy of ``record``: same key, value and headers, ``eventgw-replayed`` set."""
    headers = [(name, value) for name, value in record.headers if name != H_REPLAYED]
    headers.append((H_REPLAYED, source_marker(record.topic, record.partition, record.offset)))
    return record.key or b"", record.value, headers


class RetryReplayer:
    """Copies selected records of a retry topic to its end (see the module docstring).

    Args:
        scanner: reads the topic by offset; owned by the caller.
        producer: writes the copies; owned by the caller (idempotent, ``acks=all``).
        limiter: spaces the batches (``--rate``).
        batch_size: records per batch.
    """

    def __init__(
        self, *, scanner: Scanner, producer: Producer, limiter: RateLimiter, batch_size: int
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._reader = TopicReader(scanner)
        self._producer = producer
        self._limiter = limiter
        self._batch_size = batch_size

    async def run(
        self,
        topic: str,
        selection: Selection,
        *,
        dry_run: bool = False,
        stop: asyncio.Event | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_record: Callable[[DlqRecord], None] | None = None,
    ) -> ReplayReport:
        """Replay the records of ``topic`` that ``selection`` picks; return what happened.

        Only records present when the run starts are read (up to the high watermarks),
        so the copies it writes are never replayed again by the same run.

        Raises:
            eventgw.kafka.scanner.ScanError: the topic cannot be read.
        """
        plan = await self._reader.plan(topic, selection)
        scanned = selected = replayed = undecodable = failed = 0
        error: str | None = None
        batch: list[DlqRecord] = []

        async def flush() -> None:
            nonlocal replayed, failed
            await self._limiter.wait_turn(len(batch))
            if stop is not None and stop.is_set():
                raise _Stopped
            if dry_run:
                deliveries_ok = [True] * len(batch)
            else:
                deliveries = await self._producer.send(topic, [replay_record(r) for r in batch])
                deliveries_ok = [
                    i < len(deliveries) and deliveries[i].ok for i in range(len(batch))
                ]
            for record, ok in zip(batch, deliveries_ok, strict=True):
                if ok:
                    replayed += 1
                    if on_record is not None:
                        on_record(record)
                else:
                    failed += 1
                    logger.error(
                        "replay.write_failed record=%s:%s event_id=%s",
                        topic,
                        record.coordinate,
                        record.event_id,
                    )
            logger.info("replay.batch records=%d total_replayed=%d", len(batch), replayed)
            batch.clear()
            if on_progress is not None:
                on_progress(Progress(scanned, plan.total, replayed, undecodable))

        try:
            async for step in self._reader.scan(plan, selection):
                for record in step.matches:
                    selected += 1
                    if not record.decodable:
                        undecodable += 1
                        continue
                    batch.append(record)
                    if len(batch) >= self._batch_size:
                        await flush()
                        if failed:
                            raise _Failed
                scanned = step.scanned
                if on_progress is not None:
                    on_progress(Progress(scanned, plan.total, replayed, undecodable))
                if stop is not None and stop.is_set():
                    raise _Stopped
            if batch:
                await flush()
        except _Stopped:
            error = "stopped before the end of the range (the rest was not replayed)"
        except _Failed:
            error = f"{failed} copies were not confirmed; stopped"
        if failed and error is None:
            error = f"{failed} copies were not confirmed"
        return ReplayReport(
            topic=topic,
            dry_run=dry_run,
            scanned=scanned,
            selected=selected,
            replayed=replayed,
            undecodable=undecodable,
            failed=failed,
            error=error,
        )


class _Stopped(Exception):
    """The stop event was set: end the run between batches."""


class _Failed(Exception):
    """Copies were not confirmed: end the run."""
