"""StatsD export: every ``statsd_interval_s``, read a process's registry and send it over UDP.

The event hot path does not change: services keep recording into their Prometheus
`Metrics` and this exporter reads the registry (``registry.collect()``) on its own timer, in
the event loop, as a Prometheus scrape would. What it sends, and under which keys, is in
`eventgw.metrics.statsd_lines`: counter deltas (``|c``), gauges (``|g``), and for histograms
``<name>.count`` and ``<name>.sum`` as counter deltas, in datagrams of at most 1432 bytes.
A single line longer than a datagram is dropped with a warning.

Delivery: best effort, like StatsD itself. Counter deltas carry over to the next flush while
the agent's address cannot be resolved or the transport has paused writing (its buffer of
unsent datagrams is above the high-water mark, 64 KiB by default); a datagram lost in flight
is lost. Send errors never reach the service: they are logged as a warning at most once a
minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw.core.clock import Clock, SystemClock
from eventgw.core.lifecycle import sleep_or_stop
from eventgw.metrics.statsd_lines import (
    MAX_DATAGRAM_BYTES,
    pack_datagrams,
    read_registry,
    render_lines,
    root_prefix,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eventgw.config.settings import ObservabilitySettings
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

_OPEN_TIMEOUT_S = 5.0  # resolving statsd_host is the only network wait
_WARN_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class StatsdStatistics:
    """Counts since the exporter was built."""

    flushes: int
    datagrams_sent: int
    lines_dropped: int
    send_errors: int


class StatsdExporter:
    """Sends one `Metrics` registry to a StatsD agent every ``interval_s``, and once on stop.

    The UDP socket is connected to ``host:port`` when `run` starts (or by `open`); if that
    fails (the name does not resolve), each later tick tries again and counter deltas wait
    for it. `flush` may also be called directly between `open` and `close`. Errors
    reported for sent datagrams (ICMP port unreachable: no agent listening) are counted and
    logged at most once a minute; they never propagate.

    Args:
        metrics: the registry to read; the exporter only reads it.
        host, port: the StatsD agent.
        root: key prefix (``observability.statsd_root``).
        interval_s: seconds between flushes.
        clock: for rate-limiting warnings.
        max_datagram_bytes: largest datagram sent.

    Raises:
        ValueError: ``interval_s`` is not positive or ``max_datagram_bytes`` below 64.
    """

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        root: str,
        interval_s: float,
        clock: Clock | None = None,
        max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if max_datagram_bytes < 64:
            raise ValueError(f"max_datagram_bytes must be >= 64, got {max_datagram_bytes}")
        self._metrics = metrics
        self._address = (host, port)
        self._prefix = root_prefix(root)
        self._interval_s = interval_s
        self._clock = clock or SystemClock()
        self._max_datagram_bytes = max_datagram_bytes
        self._transport: asyncio.DatagramTransport | None = None
        self._paused = False  # the transport's flow control: its send buffer is full
        self._sent: dict[str, float] = {}
        self._last_warning_at: float | None = None
        self._suppressed = 0
        self._flushes = self._datagrams = self._dropped = self._errors = 0

    def statistics(self) -> StatsdStatistics:
        """What the exporter has done so far."""
        return StatsdStatistics(self._flushes, self._datagrams, self._dropped, self._errors)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``interval_s`` until ``stop``, then flush once more and close.

        The last flush also runs if the task is cancelled (it is synchronous). Never raises
        except `asyncio.CancelledError`: a failure of the exporter itself is logged at ERROR
        and ends the export, not the service it observes.
        """
        try:
            await self._flush_until(stop)
        except Exception:  # task boundary: losing telemetry must not stop the service
            logger.exception("statsd.exporter_failed host=%s port=%d", *self._address)
        finally:
            self.close()

    async def _flush_until(self, stop: asyncio.Event) -> None:
        try:
            await self.open()
            while not stop.is_set():
                await sleep_or_stop(stop, self._interval_s)
                if stop.is_set():
                    break  # the final flush below; no reconnect that would delay shutdown
                if self._transport is None:
                    await self.open()
                self.flush()
        finally:
            # Also on cancellation: flush() does not await, so it is short and bounded.
            self.flush()

    def flush(self) -> None:
        """Read the registry and send what changed. Synchronous and non-blocking.

        Send errors are counted and logged (rate-limited), never raised.
        Skipped (deltas carry over) while the socket is not open or the transport has
        paused writing: its buffer of unsent datagrams stays bounded.
        """
        transport = self._transport
        if transport is None:
            return
        if self._paused:
            self._warn("statsd.backlogged host=%s port=%d action=flush_skipped", *self._address)
            return
        readings = read_registry(self._metrics.registry.collect())
        lines, sent = render_lines(self._prefix, readings, self._sent)
        fitting = [line for line in lines if len(line) <= self._max_datagram_bytes]
        if len(fitting) < len(lines):
            self._dropped += len(lines) - len(fitting)
            self._warn("statsd.line_too_long dropped=%d", len(lines) - len(fitting))
        for datagram in pack_datagrams(fitting, self._max_datagram_bytes):
            try:
                transport.sendto(datagram)
            except OSError as exc:
                self._on_error(exc)
            else:
                self._datagrams += 1
        self._sent = sent
        self._flushes += 1

    async def open(self) -> bool:
        """Connect the UDP socket to the agent, if not yet; returns whether it is connected.

        Waits at most ``_OPEN_TIMEOUT_S`` (name resolution); a failure is logged, not raised.
        """
        if self._transport is not None:
            return True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _AgentProtocol(self),
                    remote_addr=self._address,
                )
        except OSError as exc:  # includes name resolution failures and the timeout
            self._warn("statsd.unreachable host=%s port=%d error=%s", *self._address, exc)
            return False
        self._transport = transport
        return True

    def close(self) -> None:
        """Close the socket (datagrams the transport still buffers are sent first)."""
        if self._transport is not None:
            self._transport.close()
            self._transport, self._paused = None, False

    def _on_error(self, exc: Exception) -> None:
        self._errors += 1
        self._warn("statsd.send_failed host=%s port=%d error=%s", *self._address, exc)

    def _on_connection_lost(self, transport: asyncio.BaseTransport | None) -> None:
        # Only the current socket's loss matters: one closed by `close` reports it later.
        if transport is not None and transport is self._transport:
            self._transport, self._paused = None, False  # reopened on the next tick

    def _on_pause(self, transport: asyncio.BaseTransport | None, paused: bool) -> None:
        if transport is not None and transport is self._transport:
            self._paused = paused

    def _warn(self, msg: str, *args: object) -> None:
        now = self._clock.monotonic()
        if self._last_warning_at is not None and now - self._last_warning_at < _WARN_EVERY_S:
            self._suppressed += 1
            return
        if self._suppressed:
            logger.warning("statsd.warnings_suppressed count=%d", self._suppressed)
        logger.warning(msg, *args)
        self._last_warning_at, self._suppressed = now, 0


class _AgentProtocol(asyncio.DatagramProtocol):
    """Routes the transport's errors, flow control and closing back to the exporter."""

    def __init__(self, exporter: StatsdExporter) -> None:
        self._exporter = exporter
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def error_received(self, exc: Exception) -> None:
        self._exporter._on_error(exc)

    def pause_writing(self) -> None:
        self._exporter._on_pause(self._transport, True)

    def resume_writing(self) -> None:
        self._exporter._on_pause(self._transport, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._exporter._on_connection_lost(self._transport)


@contextlib.asynccontextmanager
async def export_statsd(
    settings: ObservabilitySettings, metrics: Metrics
) -> AsyncIterator[StatsdExporter | None]:
    """Export ``metrics`` to StatsD while the ``async with`` body runs.

    Does nothing (yields None) unless ``settings.statsd_host`` is set. On exit, normal or
    not, the exporter makes its last flush before the body's exception, if any, propagates
    unchanged (not wrapped in an ExceptionGroup, so callers catch what they caught before).
    """
    if settings.statsd_host is None:
        yield None
        return
    exporter = StatsdExporter(
        metrics,
        settings.statsd_host,
        settings.statsd_port,
        settings.statsd_root,
        settings.statsd_interval_s,
    )
    stop = asyncio.Event()
    body_error: BaseException | None = None
    async with asyncio.TaskGroup() as tg:
        tg.create_task(exporter.run(stop), name="statsd-exporter")
        try:
            yield exporter
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the last flush
            body_error = exc
        finally:
            stop.set()
    if body_error is not None:
        raise body_error
