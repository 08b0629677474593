"""Writes the orchestrator's retry-topic and DLQ records: batched, bounded, never unowned.

The dispatcher decides *what* to write (`eventgw.orchestrator.dispatcher`); this decides how:
records submitted while a write is under way wait for the next one and go to Kafka together,
one ``send`` per topic. Each record has a callback that learns whether Kafka confirmed it;
a task is finished only then (docs/priorities-and-backpressure.md, "Offsets").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from eventgw.core.lifecycle import wait_any
from eventgw.core.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventgw.kafka.producer import Delivery, Record
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

__all__ = ["Producer", "RetryWriter", "RetryWriterStatistics"]


class Producer(Protocol):
    """What the writer needs (`eventgw.kafka.producer.BatchProducer`)."""

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]: ...


@dataclass(slots=True)
class _Pending:
    topic: str
    record: Record
    done: Callable[[bool], None]
    forever: bool  # retried until confirmed: nothing else holds the event
    attempt: int = 0
    not_before: float = 0.0  # monotonic


@dataclass(frozen=True, slots=True)
class RetryWriterStatistics:
    """Counters of a `RetryWriter` since it started."""

    pending: int  # records submitted and not yet confirmed or given up
    written: int  # records Kafka confirmed
    retried: int  # failed writes tried again
    given_up: int  # records whose callback learned False (their task is served again)


class RetryWriter:
    """Background writer of retry and DLQ records; see the module docstring.

    Lifecycle: ``run(stop)`` inside the owner's task group; ``submit`` from the loop at any
    time. A failed record is tried again after a backoff, up to ``attempts`` times, then its
    callback gets False (the dispatcher serves the task again: the record is still in its
    lane, nothing is lost) — except records submitted with ``forever=True`` (an undecodable
    lane record, which nothing else holds), which are tried until Kafka takes them.
    ``run`` returns once ``stop`` is set and nothing is pending; the owner bounds that wait
    (drain) and cancels it after its shutdown timeout (terminate).
    """

    def __init__(
        self,
        producer: Producer,
        metrics: Metrics,
        *,
        attempts: int = 5,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self._producer = producer
        self._attempts = attempts
        self._backoff = backoff or Backoff(0.2, 10.0)
        self._mono = monotonic
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._written = self._retried = self._given_up = 0
        writes = metrics.counter(
            "eventgw_orchestrator_retry_writes_total",
            "retry-topic and DLQ records by outcome",
            ["result"],
        )
        self._m_written = writes.labels("written")
        self._m_retried = writes.labels("retried")
        self._m_given_up = writes.labels("given_up")

    def submit(
        self, topic: str, record: Record, done: Callable[[bool], None], *, forever: bool = False
    ) -> None:
        """Queue ``record`` for ``topic``; ``done(ok)`` is called on the loop once settled."""
        self._queue.append(_Pending(topic, record, done, forever))
        self._wake.set()

    def pending(self) -> int:
        """Records submitted and not settled yet."""
        return len(self._queue) + self._in_flight

    def statistics(self) -> RetryWriterStatistics:
        """A snapshot of the counters."""
        return RetryWriterStatistics(self.pending(), self._written, self._retried, self._given_up)

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set and nothing is pending."""
        while True:
            if not self._queue:
                if stop.is_set():
                    return
                self._wake.clear()
                await wait_any(stop, self._wake)
                continue
            now = self._mono()
            due = [p for p in self._queue if p.not_before <= now]
            if not due:
                # Only backed-off records: sleep until the first is due, or a new one comes.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(p.not_before for p in self._queue) - now):
                        await self._wake.wait()
                continue
            self._queue = [p for p in self._queue if p.not_before > now]
            await self._write(due)

    async def _write(self, due: list[_Pending]) -> None:
        by_topic: dict[str, list[_Pending]] = {}
        for p in due:
            by_topic.setdefault(p.topic, []).append(p)
        self._in_flight += len(due)
        try:
            for topic, group in by_topic.items():
                try:
                    deliveries = await self._producer.send(topic, [p.record for p in group])
                    errors = [d.error for d in deliveries]
                except Exception as exc:  # noqa: BLE001  (task boundary: retried below)
                    logger.warning("orchestrator.retry_write_crashed topic=%s error=%r", topic, exc)
                    errors = [repr(exc)] * len(group)
                errors += ["no delivery report"] * (len(group) - len(errors))
                for p, error in zip(group, errors, strict=False):
                    self._settle(p, error)
        finally:
            self._in_flight -= len(due)

    def _settle(self, p: _Pending, error: str) -> None:
        if not error:
            self._written += 1
            self._m_written.inc()
            p.done(True)
            return
        p.attempt += 1
        if p.forever or p.attempt < self._attempts:
            self._retried += 1
            self._m_retried.inc()
            p.not_before = self._mono() + self._backoff.delay_s(p.attempt - 1)
            self._queue.append(p)
            logger.warning(
                "orchestrator.retry_write_failed topic=%s attempt=%d error=%s (retrying)",
                p.topic,
                p.attempt,
                error,
            )
            return
        self._given_up += 1
        self._m_given_up.inc()
        logger.warning(
            "orchestrator.retry_write_given_up topic=%s attempts=%d error=%s (served again)",
            p.topic,
            p.attempt,
            error,
        )
        p.done(False)
