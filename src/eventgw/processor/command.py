"""``Command``: run a processor worker from Python code, synchronously, until it is done."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

import uvloop
from pydantic import ValidationError

from eventgw.config.local_credentials import with_local_credentials
from eventgw.config.settings import KafkaClusterSettings, ProcessorSettings, load_settings
from eventgw.core.errors import ConfigError
from eventgw.kafka.jar_cache import default_home
from eventgw.metrics.statsd import export_statsd
from eventgw.processor.service import ProcessorService

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventgw.config.settings import EventGwSettings
    from eventgw.processor.handlers import Handler

logger = logging.getLogger(__name__)


def with_processor_overrides(settings: EventGwSettings, **overrides: Any) -> EventGwSettings:
    """Return ``settings`` with ``processor.<field>`` replaced by ``overrides`` (validated).

    ``model_copy(update=...)`` alone does not validate, so the processor section is
    rebuilt through its model: ``concurrency=0`` fails here, not deep in the worker.

    Raises:
        ConfigError: naming ``processor.<field>`` and what is wrong with it.
    """
    try:
        processor = ProcessorSettings.model_validate(
            {**settings.processor.model_dump(), **overrides}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"processor.{field}", str(err["msg"])) from exc
    return settings.model_copy(update={"processor": processor})


def run_until_done(service: ProcessorService) -> int:
    """Run ``service`` on a fresh uvloop loop until it returns or SIGTERM/SIGINT stops it.

    Unlike `eventgw.cli.runner.run`, which serves until a signal, this also returns when
    the service finishes by itself (``max_tasks`` reached). Signal handlers are only
    installed from the main thread (Python allows no others) and removed on return.
    Metrics go to StatsD while it runs when ``observability.statsd_host`` is set, as under
    `eventgw.cli.runner.run`.

    Returns:
        The number of tasks the worker handled.
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (
            (signal.SIGTERM, signal.SIGINT)
            if threading.current_thread() is threading.main_thread()
            else ()
        )
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            async with export_statsd(service.settings.observability, service.metrics):
                await service.run(asyncio.Event(), stop)
        finally:
            # A library call must give the signals back: uvloop leaves its handlers
            # installed after the loop closes, and Ctrl-C would then do nothing.
            for sig in signals:
                loop.remove_signal_handler(sig)

    uvloop.run(main())
    return service.tasks_handled


class Command:
    """Run a processor worker with keyword arguments, as the reference system's workers do.

    ``Command().run(execute=False, max_tasks=10, kafka_bootstrap_servers=...,
    orchestrator_host=..., statsd_root=...)`` takes ten tasks, shows each and releases it
    untouched.

    Args:
        settings: the base settings; by default `eventgw.config.settings.load_settings`
            (environment and ``EVENTGW_SETTINGS_FILE``; in development, the local stack's
            internal tokens, `eventgw.config.local_credentials`). ``run`` arguments that are given
            override them; arguments left out leave them as they are.
    """

    def __init__(self, settings: EventGwSettings | None = None) -> None:
        self._settings = settings
        self.statsd_root: str | None = None
        self.service: ProcessorService | None = None

    def run(
        self,
        *,
        execute: bool | None = None,
        max_tasks: int | None = None,
        kafka_bootstrap_servers: str | None = None,
        orchestrator_host: str | None = None,
        statsd_root: str | None = None,
        handler: str | Handler | None = None,
        concurrency: int | None = None,
        show: Callable[[str], None] | None = None,
    ) -> int:
        """Run a worker in this thread until ``max_tasks`` are done or SIGTERM/SIGINT.

        Blocks; it runs its own event loop (uvloop), so it must not be called from a
        running loop. Shutdown on a signal follows `eventgw.processor.worker.Worker`
        (release unstarted tasks, drain, report). Each argument left as None keeps the
        setting it names.

        Args:
            execute: False is a dry run: tasks are shown and released, no handler runs
                (``processor.execute``).
            max_tasks: stop after handling (dry run: showing) this many tasks; 0 runs until
                a signal (``processor.max_tasks``).
            kafka_bootstrap_servers: the cluster of the response topic, for results a
                stream could not take (``kafka.primary.bootstrap_servers``; its security
                settings are kept).
            orchestrator_host: ``host:port`` of the orchestrator; comma-separate several
                (``processor.orchestrators``).
            statsd_root: stored in ``observability.statsd_root``, the prefix of the StatsD
                keys; metrics go to StatsD only when ``observability.statsd_host`` is set
                (they are always served in Prometheus text on ``processor.metrics_port``).
            handler: ``"module:function"`` or the async callable; None uses
                ``processor.handler``.
            concurrency: handler calls at most running at once (``processor.concurrency``).
            show: receives each task's summary line in a dry run (default: stdout).

        Returns:
            The number of tasks handled (dry run: shown and released).

        Raises:
            ConfigError: an argument or setting is invalid, or the handler cannot be loaded.
        """
        if self._settings is not None:
            settings = self._settings
        else:  # as the CLI: in development, the local stack's tokens when none is set
            settings = with_local_credentials(load_settings(), default_home())
        overrides: dict[str, Any] = {
            k: v
            for k, v in (
                ("execute", execute),
                ("max_tasks", max_tasks),
                ("concurrency", concurrency),
            )
            if v is not None
        }
        if orchestrator_host is not None:
            orchestrators = [h.strip() for h in orchestrator_host.split(",") if h.strip()]
            if not orchestrators:
                raise ConfigError("orchestrator_host", "at least one host:port is needed")
            overrides["orchestrators"] = orchestrators
        settings = with_processor_overrides(settings, **overrides)
        if kafka_bootstrap_servers is not None:
            try:
                primary = KafkaClusterSettings.model_validate(
                    {
                        **settings.kafka.primary.model_dump(),
                        "bootstrap_servers": kafka_bootstrap_servers,
                    }
                )
            except ValidationError as exc:
                msg = str(exc.errors()[0]["msg"])
                raise ConfigError("kafka_bootstrap_servers", msg) from exc
            kafka = settings.kafka.model_copy(update={"primary": primary})
            settings = settings.model_copy(update={"kafka": kafka})
        if statsd_root is not None:
            self.statsd_root = statsd_root
            observability = settings.observability.model_copy(update={"statsd_root": statsd_root})
            settings = settings.model_copy(update={"observability": observability})
        if show is None:
            self.service = ProcessorService(settings, handler)
        else:
            self.service = ProcessorService(settings, handler, show=show)
        return run_until_done(self.service)
