"""Redrive DLQ records back to their lane, at most once per record, losing none.

Per batch (at most ``batch_size`` records, spaced by the `RateLimiter`):

1. ``intent`` entries to the redrive log, confirmed by Kafka (else the run stops: nothing
   of the batch was written to a lane);
2. the lane records (``attempt`` 0, ``eventgw-redriven`` = the DLQ coordinates), confirmed;
3. ``done`` entries for the confirmed lane records.

The DLQ record itself is never touched: until step 2 is confirmed the event is still there,
so no crash can lose it. Crash points, and what the next run does:

- before 1 is confirmed: nothing was written to the lane; the records are redriven.
- between 1 and 3 (lane record maybe written, log says ``intent``): the next run first
  reads the target topic from the watermarks the intent recorded, looking for a record whose
  ``eventgw-redriven`` header names the DLQ record. Found: it logs ``done`` (no duplicate).
  Not found: the record is redriven again when it is selected.
- after 3: the record is skipped (``already_redriven``).

So a duplicate in a lane needs a crash between 1 and 3 *and* the lane record out of sight
of the next run: deleted by retention before it, or not yet replicated (below the high
watermark) when it looked. Duplicates are bounded by one batch per crash. Two redrives of
the same DLQ at once can duplicate each other's records: run one at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import Counter
from typing import TYPE_CHECKING

from eventgw.core.envelope import H_REDRIVEN, header_value
from eventgw.dlq.lanes import NotRedrivable, redrive_record, redrive_target
from eventgw.dlq.reader import TopicReader
from eventgw.dlq.redrive_log import LogEntry, log_key
from eventgw.dlq.report import Progress, RedriveReport

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from eventgw.config.settings import TopicSettings
    from eventgw.core.clock import Clock
    from eventgw.dlq.rate import RateLimiter
    from eventgw.dlq.record import DlqRecord
    from eventgw.dlq.redrive_log import Producer, RedriveLog
    from eventgw.dlq.selection import Selection
    from eventgw.kafka.scanner import Scanner

logger = logging.getLogger(__name__)

_STOPPED = "stopped before the end of the selection (run again to continue)"


@dataclasses.dataclass
class _Counts:
    scanned: int = 0
    selected: int = 0
    redriven: int = 0
    already_redriven: int = 0
    recovered: int = 0
    undecodable: int = 0
    failed: int = 0
    by_target: Counter[str] = dataclasses.field(default_factory=Counter)


class Redriver:
    """Runs redrives (see the module docstring for the protocol and its crash points).

    Args:
        topics: topic names (the lanes a record may go to).
        scanner: reads the DLQ, the log and the lanes by offset; owned by the caller.
        log: the redrive log.
        producer: writes lane records; owned by the caller (idempotent, ``acks=all``).
        limiter: spaces the batches (``--rate``).
        clock: wall time for log entries.
        batch_size: records per batch (the most a crash can duplicate).
    """

    def __init__(
        self,
        *,
        topics: TopicSettings,
        scanner: Scanner,
        log: RedriveLog,
        producer: Producer,
        limiter: RateLimiter,
        clock: Clock,
        batch_size: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._topics = topics
        self._scanner = scanner
        self._reader = TopicReader(scanner)
        self._log = log
        self._producer = producer
        self._limiter = limiter
        self._clock = clock
        self._batch_size = batch_size

    async def run(
        self,
        topic: str,
        selection: Selection,
        *,
        dry_run: bool = False,
        stop: asyncio.Event | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_record: Callable[[DlqRecord, str], None] | None = None,
    ) -> RedriveReport:
        """Redrive the records of ``topic`` that ``selection`` picks; return what happened.

        A dry run reads everything a real run reads (the log included) and writes nothing.
        ``stop`` ends the run between batches. ``on_record`` is called with each record and
        its target once written (in a dry run: once it would be).

        Raises:
            eventgw.kafka.scanner.ScanError: a topic cannot be read.
        """
        entries = await self._log.load(topic)
        counts = _Counts()
        counts.recovered = await self._recover(entries, dry_run=dry_run)
        plan = await self._reader.plan(topic, selection)
        batch: list[tuple[DlqRecord, str]] = []
        error: str | None = None

        def progress() -> None:
            if on_progress is not None:
                skipped = counts.already_redriven + counts.undecodable
                on_progress(Progress(counts.scanned, plan.total, counts.redriven, skipped))

        try:
            async for step in self._reader.scan(plan, selection):
                for record in step.matches:
                    counts.selected += 1
                    entry = entries.get(log_key(record.topic, record.partition, record.offset))
                    if entry is not None and entry.state == "done":
                        counts.already_redriven += 1
                        continue
                    try:
                        target = redrive_target(record, self._topics)
                    except NotRedrivable:
                        counts.undecodable += 1
                        continue
                    batch.append((record, target))
                    if len(batch) >= self._batch_size:
                        await self._redrive(batch, entries, counts, dry_run, stop, on_record)
                        batch = []
                        progress()
                counts.scanned = step.scanned
                progress()
                if stop is not None and stop.is_set():  # also while a narrow filter scans on
                    raise _Abort(_STOPPED)
            if batch:
                await self._redrive(batch, entries, counts, dry_run, stop, on_record)
                progress()
        except _Abort as exc:
            error = str(exc)
        return RedriveReport(
            topic=topic,
            dry_run=dry_run,
            scanned=counts.scanned,
            selected=counts.selected,
            redriven=counts.redriven,
            already_redriven=counts.already_redriven,
            recovered=counts.recovered,
            undecodable=counts.undecodable,
            failed=counts.failed,
            by_target=dict(counts.by_target),
            error=error,
        )

    async def _redrive(
        self,
        batch: list[tuple[DlqRecord, str]],
        entries: dict[str, LogEntry],
        counts: _Counts,
        dry_run: bool,
        stop: asyncio.Event | None,
        on_record: Callable[[DlqRecord, str], None] | None,
    ) -> None:
        await self._limiter.wait_turn(len(batch))
        if stop is not None and stop.is_set():
            raise _Abort(_STOPPED)
        if dry_run:
            for record, target in batch:
                counts.redriven += 1
                counts.by_target[target] += 1
                if on_record is not None:
                    on_record(record, target)
            return
        now_ms = self._clock.wall_ms()
        targets = sorted({target for _, target in batch})
        marks: dict[str, dict[int, int]] = {}
        for target in targets:
            found = await self._scanner.watermarks(target)
            marks[target] = {partition: high for partition, (_, high) in found.items()}
        intents = {
            log_key(r.topic, r.partition, r.offset): LogEntry(
                "intent", r.event_id or "", target, now_ms, target_from=marks[target]
            )
            for r, target in batch
        }
        refused = [key for key, ok in (await self._log.append(intents)).items() if not ok]
        if refused:
            # Nothing of this batch reached a lane: stopping here loses and duplicates nothing.
            raise _Abort(
                f"the redrive log {self._log.topic} did not confirm {len(refused)} entries "
                f"(first {refused[0]}); nothing of this batch was redriven"
            )
        done: dict[str, LogEntry] = {}
        failed = 0
        for target in targets:
            items = [r for r, t in batch if t == target]
            deliveries = await self._producer.send(target, [redrive_record(r) for r in items])
            for i, record in enumerate(items):
                key = log_key(record.topic, record.partition, record.offset)
                delivery = deliveries[i] if i < len(deliveries) else None
                if delivery is None or not delivery.ok:
                    failed += 1
                    logger.error(
                        "dlq.redrive.lane_write_failed record=%s target=%s event_id=%s error=%s",
                        key,
                        target,
                        record.event_id,
                        delivery.error if delivery is not None else "no delivery report",
                    )
                    continue
                done[key] = LogEntry(
                    "done",
                    record.event_id or "",
                    target,
                    now_ms,
                    target_partition=delivery.partition,
                    target_offset=delivery.offset,
                )
                counts.redriven += 1
                counts.by_target[target] += 1
                if on_record is not None:
                    on_record(record, target)
        unconfirmed = [key for key, ok in (await self._log.append(done)).items() if not ok]
        if unconfirmed:
            # The lane has them; their intent stays, and the next run finds them by header.
            logger.warning(
                "dlq.redrive.log_unconfirmed entries=%d first=%s", len(unconfirmed), unconfirmed[0]
            )
        entries.update(done)
        logger.info(
            "dlq.redrive.batch redriven=%d failed=%d total_redriven=%d",
            len(done),
            failed,
            counts.redriven,
        )
        if failed:
            counts.failed += failed
            raise _Abort(
                f"{failed} lane writes were not confirmed (those records are still in the DLQ; "
                "run again once the cluster is healthy)"
            )

    async def _recover(self, entries: dict[str, LogEntry], *, dry_run: bool) -> int:
        """Look for the lane records of unfinished redrives; log ``done`` for those found.

        Reads each target topic from the lowest watermark its intents recorded up to its
        high watermark, and stops early once every intent is found. Returns how many were
        found; the others stay ``intent`` (redriven again if selected).
        """
        pending = {key: e for key, e in entries.items() if e.state == "intent"}
        if not pending:
            return 0
        logger.warning("dlq.redrive.unfinished entries=%d (looking in their lanes)", len(pending))
        found: dict[str, LogEntry] = {}
        now_ms = self._clock.wall_ms()
        for target in sorted({e.target for e in pending.values()}):
            wanted = {key for key, e in pending.items() if e.target == target}
            marks = await self._scanner.watermarks(target)
            for partition, (low, high) in sorted(marks.items()):
                starts = [pending[key].target_from.get(partition, low) for key in wanted]
                start = max(low, min(starts)) if starts else high
                reads = self._scanner.read(target, partition, start, high)
                async with contextlib.aclosing(reads):
                    async for batch in reads:
                        for record in batch:
                            marker = header_value(record.headers, H_REDRIVEN)
                            key = marker.decode(errors="replace") if marker else ""
                            if key in wanted:
                                wanted.discard(key)
                                found[key] = LogEntry(
                                    "done",
                                    pending[key].event_id,
                                    target,
                                    now_ms,
                                    target_partition=partition,
                                    target_offset=record.offset,
                                )
                        if not wanted:
                            break
                if not wanted:
                    break
        if found and not dry_run:
            unconfirmed = [key for key, ok in (await self._log.append(found)).items() if not ok]
            if unconfirmed:
                logger.warning("dlq.redrive.log_unconfirmed entries=%d", len(unconfirmed))
        entries.update(found)
        return len(found)


class _Abort(Exception):
    """End the run between batches (stop event, lane writes not confirmed, log refused).

    Raised only where the log agrees with the lanes (every confirmed lane write has its
    ``done`` written or its ``intent`` standing): the message says why.
    """
