"""What the operator tools run with: their Kafka clients and a stop event set by signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from eventgw.config.settings import LaneTuning
from eventgw.kafka.client_config import producer_config, scanner_config
from eventgw.kafka.producer import BatchProducer
from eventgw.kafka.scanner import TopicScanner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from eventgw.config.settings import EventGwSettings
    from eventgw.kafka.producer import Delivery, Record

# Idempotent, acks=all (producer_config); small batches: the tools write at --rate.
_TUNING = LaneTuning(linger_ms=5, batch_size=256 << 10, delivery_timeout_ms=30_000)


@contextlib.asynccontextmanager
async def open_scanner(settings: EventGwSettings, tool: str) -> AsyncIterator[TopicScanner]:
    """A `TopicScanner` on the primary cluster (where the orchestrator writes the DLQ)."""
    async with TopicScanner(scanner_config(settings.kafka.primary, f"eventgw-{tool}")) as scanner:
        yield scanner


@contextlib.asynccontextmanager
async def open_producer(settings: EventGwSettings, tool: str) -> AsyncIterator[BatchProducer]:
    """A started `BatchProducer` on the primary cluster; flushed and closed on exit."""
    producer = BatchProducer(
        f"eventgw-{tool}", producer_config(settings.kafka.primary, _TUNING, f"eventgw-{tool}")
    )
    producer.start()
    try:
        yield producer
    finally:
        await producer.close()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM while the block runs (call it inside the loop).

    The tools check it between batches: Ctrl-C ends a redrive or replay cleanly after the
    batch being written, with its report. A process killed outright (``kill -9``) is safe
    too, only less tidy (see `eventgw.dlq.redriver`).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


class DryRunProducer:
    """The producer of a dry run: writing anything is a bug, and fails loudly."""

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        """Refuse: raises RuntimeError."""
        raise RuntimeError(f"dry run: refusing to write {len(records)} records to {topic}")
