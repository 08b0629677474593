"""Run services under asyncio with SIGTERM/SIGINT turned into the ``stop`` event.

Every process that serves runs through here, so this is also where StatsD export starts
(`eventgw.metrics.statsd`, when ``observability.statsd_host`` is set): one exporter per
distinct `Metrics` registry, started before the services and stopped after they drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING, Protocol

import uvloop

from eventgw.core.errors import ConfigError
from eventgw.core.lifecycle import Service, run_services
from eventgw.metrics.statsd import export_statsd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.config.settings import EventGwSettings
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

# Generation-0 collection threshold for serving processes. The default (700 net container
# allocations) ran a collection every ~25-130 events on the hot path although per-request
# garbage is acyclic and freed by reference counting: cyclic GC cost 12 % of the publisher's
# CPU and 5.5 % of ingest's (docs/benchmarks.md). 50k keeps memory bounded (a collection
# still runs every few batches if containers do pile up) at ~1 % of the CPU.
GC_THRESHOLDS = (50_000, 20, 100)


class MeteredService(Service, Protocol):
    """A `Service` with its settings and metrics, as every eventgw service has."""

    settings: EventGwSettings
    metrics: Metrics


def run(services: Sequence[MeteredService]) -> int:
    """Run ``services`` (downstream first) until a signal; returns a process exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        freezer = asyncio.create_task(_freeze_when_ready(ready), name="gc-freeze")
        try:
            async with contextlib.AsyncExitStack() as exports:
                # Services built on one shared registry must not export it twice: the
                # agent would count every counter delta twice.
                by_registry = {id(s.metrics): s for s in services}
                for s in by_registry.values():
                    await exports.enter_async_context(
                        export_statsd(s.settings.observability, s.metrics)
                    )
                await run_services(services, stop, ready)
        finally:
            freezer.cancel()

    code = 0
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        uvloop.run(main())
    except* ConfigError as config_errors:
        # Found only once a service runs (e.g. the orchestrator's topic check): as at start.
        for config_error in config_errors.exceptions:
            print(f"eventgw: invalid configuration: {config_error}", file=sys.stderr)
        code = 2
    except* OSError as os_errors:
        # Start-up failures such as a port in use: one clear line, not a traceback.
        for exc in os_errors.exceptions:
            logger.error("service.failed error=%s", exc)
        code = 1
    return code


async def _freeze_when_ready(ready: asyncio.Event) -> None:
    """Once every service serves, move the start-up objects out of the collector's scans.

    Modules, settings, producers and servers live as long as the process; every full
    collection would otherwise walk them again. Start-up garbage is collected first so
    that freezing does not keep it alive.
    """
    await ready.wait()
    gc.collect()
    gc.freeze()
    logger.debug("gc.frozen objects=%d", gc.get_freeze_count())
