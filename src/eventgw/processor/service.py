"""Composition root of a processor worker: fallback producer, status HTTP, the worker loop."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Final

from eventgw.config.fleets import orchestrator_addresses
from eventgw.config.settings import LaneTuning
from eventgw.core.errors import ConfigError
from eventgw.grpc_auth import bearer_metadata
from eventgw.kafka.client_config import producer_config
from eventgw.kafka.producer import BatchProducer
from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer
from eventgw.processor.handlers import check_handler, load_handler
from eventgw.processor.worker import Worker

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Sequence

    from eventgw.config.settings import EventGwSettings
    from eventgw.core.retry import Backoff
    from eventgw.kafka.producer import Delivery, Record
    from eventgw.processor.handlers import Handler
    from eventgw.processor.worker import WorkerStatistics

logger = logging.getLogger(__name__)

RESULTS_TUNING: Final = LaneTuning(linger_ms=2, batch_size=256 << 10, delivery_timeout_ms=10_000)
"""Fallback results are small and the orchestrator waits on them to finish leases."""

PRODUCER_CLOSE_S: Final = 10.0


def default_worker_id() -> str:
    """``<hostname>-<pid>``: unique per process, readable in the orchestrator's logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


def write_line(line: str) -> None:
    """Print a dry-run line on stdout: it is the command's output, not a log record."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class OnDemandProducer:
    """A `BatchProducer` created on its first ``send``: the rollout cluster's fallback results.

    A worker may never serve an orchestrator of the rollout fleet; then it never connects to
    that cluster (which may not exist outside a migration).
    """

    def __init__(self, name: str, config: dict[str, object]) -> None:
        self._name = name
        self._config = config
        self._producer: BatchProducer | None = None

    async def send(
        self, topic: str, records: Sequence[Record], partition: int | None = None
    ) -> list[Delivery]:
        """`BatchProducer.send`, starting the producer first if needed."""
        if self._producer is None:
            self._producer = BatchProducer(self._name, self._config)
            self._producer.start()
        return await self._producer.send(topic, records, partition)

    async def close(self, timeout_s: float) -> None:
        """Flush and stop the producer, if it was ever started."""
        if self._producer is not None:
            await self._producer.close(timeout_s)
            self._producer = None


class ProcessorService:
    """Runs one processor worker as a `eventgw.core.lifecycle.Service`.

    Owns, in start order (downstream first): the producer of fallback results (executing
    only: results a ``Work`` stream could not take go to the response topic), the status
    server on ``metrics_port`` (/healthz, /readyz, /metrics), then the `Worker`, which opens
    one stream per orchestrator. ``ready`` is set once the worker starts. On ``stop`` the
    worker drains (see `Worker`), then the producer is flushed and everything is closed.
    ``run`` also returns by itself once ``max_tasks`` tasks are handled.

    Fleets: the worker serves every orchestrator of ``processor.orchestrators`` (or of
    ``processor.orchestrator_address_template``: both fleets), whatever cluster each reads;
    fallback results of a rollout-fleet orchestrator go to the rollout cluster's response
    topic (its producer is made on first use).

    Args:
        settings: ``processor`` section, plus ``kafka.primary`` (and ``kafka.rollout``),
            ``topics.response`` and ``orchestrator.number_of_replicas`` (the template).
        handler: the async handler, or ``"module:function"``; None loads
            ``settings.processor.handler``.
        metrics: where metrics go (a fresh registry by default).
        show: receives the one-line summary of each task in a dry run (stdout by default).
        worker_id: how the orchestrators know this worker (``<hostname>-<pid>``).
        backoff: the delays between reconnects to an orchestrator.

    Raises:
        ConfigError: no orchestrator is configured, the handler cannot be loaded or is
            not an async callable, or ``internal_auth.orchestrator_token`` is not set.
    """

    name = "processor"

    def __init__(
        self,
        settings: EventGwSettings,
        handler: Handler | str | None = None,
        *,
        metrics: Metrics | None = None,
        show: Callable[[str], None] = write_line,
        worker_id: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if settings.processor.orchestrator_address_template is not None:
            addresses = orchestrator_addresses(settings)
            settings = settings.model_copy(
                update={
                    "processor": settings.processor.model_copy(update={"orchestrators": addresses})
                }
            )
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.worker_id = worker_id or default_worker_id()
        self.status_port: int | None = None
        self.tasks_handled = 0
        if not settings.processor.orchestrators:
            raise ConfigError("processor.orchestrators", "at least one host:port is needed")
        spec = settings.processor.handler if handler is None else handler
        try:
            self.handler = load_handler(spec) if isinstance(spec, str) else check_handler(spec)
        except ValueError as exc:
            raise ConfigError("processor.handler", str(exc)) from exc
        self._show = show
        self._backoff = backoff
        # The orchestrators' token, resolved here: a missing one stops the start.
        self._metadata = bearer_metadata(settings.internal_auth.token_for("orchestrator"))
        self._worker: Worker | None = None
        self._ready = False

    def statistics(self) -> WorkerStatistics | None:
        """The worker's counters, once it has started."""
        return self._worker.statistics() if self._worker is not None else None

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """See `eventgw.core.lifecycle.Service`."""
        s = self.settings
        p = s.processor
        status = StatusServer(p.status_host, p.metrics_port, self.metrics, lambda: self._ready)
        producer: BatchProducer | None = None
        rollout: OnDemandProducer | None = None
        try:
            if p.execute:
                producer = BatchProducer(
                    "processor-results",
                    producer_config(
                        s.kafka.primary, RESULTS_TUNING, f"eventgw-processor-{self.worker_id}"
                    ),
                )
                producer.start()
                if s.kafka.rollout is not None:
                    rollout = OnDemandProducer(
                        "processor-results-rollout",
                        producer_config(
                            s.kafka.rollout, RESULTS_TUNING, f"eventgw-processor-{self.worker_id}"
                        ),
                    )
            await status.start()
            self.status_port = status.port
            self._worker = Worker(
                settings=p,
                worker_id=self.worker_id,
                handler=self.handler,
                metrics=self.metrics,
                show=self._show,
                producer=producer,
                results_topic=s.topics.response,
                backoff=self._backoff,
                call_metadata=self._metadata,
                rollout_producer=rollout,
            )
            self._ready = True
            ready.set()
            logger.info(
                "processor.serving worker_id=%s orchestrators=%s execute=%s concurrency=%d "
                "status_port=%d",
                self.worker_id,
                ",".join(p.orchestrators),
                p.execute,
                p.concurrency,
                status.port,
            )
            self.tasks_handled = await self._worker.run(stop)
            logger.info("processor.stopped tasks_handled=%d", self.tasks_handled)
        finally:
            self._ready = False
            # The worker has reported every result it will report; now flush and close.
            if producer is not None:
                await producer.close(PRODUCER_CLOSE_S)
            if rollout is not None:
                await rollout.close(PRODUCER_CLOSE_S)
            await status.close()
