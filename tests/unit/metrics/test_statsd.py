"""Tests for eventgw.metrics.statsd: the exporter against a real UDP socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

import pytest

from eventgw.config.settings import ObservabilitySettings
from eventgw.core.clock import FakeClock
from eventgw.metrics.backend import Metrics
from eventgw.metrics.statsd import StatsdExporter, export_statsd
from eventgw.metrics.statsd_lines import pack_datagrams
from tests.unit.metrics.test_statsd_lines import sample_metrics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# --- the exporter over a real UDP socket ------------------------------------------------


class Agent(asyncio.DatagramProtocol):
    """A StatsD agent stand-in: a UDP socket on 127.0.0.1 that queues what it receives."""

    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self.port = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.datagrams.put_nowait(data)

    async def lines(self, count: int) -> list[str]:
        """The next ``count`` lines, waiting at most 5 s for them."""
        lines: list[str] = []
        async with asyncio.timeout(5):
            while len(lines) < count:
                lines.extend((await self.datagrams.get()).decode("ascii").split("\n"))
        return lines

    async def wait_line_with(self, prefix: str) -> str:
        """The next line starting with ``prefix``, waiting at most 5 s for it."""
        async with asyncio.timeout(5):
            while True:
                for line in (await self.datagrams.get()).decode("ascii").split("\n"):
                    if line.startswith(prefix):
                        return line


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Agent, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    protocol.port = transport.get_extra_info("sockname")[1]
    yield protocol
    transport.close()


def settings_for(port: int, interval_s: float = 3600) -> ObservabilitySettings:
    return ObservabilitySettings(
        statsd_host="127.0.0.1",
        statsd_port=port,
        statsd_root="eventgw.ingest",
        statsd_interval_s=interval_s,
    )


EXPECTED_FIRST_FLUSH = [
    "eventgw.ingest.eventgw_ingest_events_total.accepted:3|c",
    "eventgw.ingest.eventgw_publisher_in_flight_events.p_10:0|g",
    "eventgw.ingest.eventgw_publisher_in_flight_events.p_10:-2|g",
    "eventgw.ingest.eventgw_recovery_backup_objects:7|g",
    "eventgw.ingest.eventgw_ingest_request_duration_seconds.count:2|c",
    "eventgw.ingest.eventgw_ingest_request_duration_seconds.sum:0.75|c",
]


async def test_the_last_flush_on_exit_reaches_the_agent(agent: Agent) -> None:
    async with export_statsd(settings_for(agent.port), sample_metrics()) as exporter:
        pass  # the interval is an hour: only the flush on stop sends
    assert await agent.lines(len(EXPECTED_FIRST_FLUSH)) == EXPECTED_FIRST_FLUSH
    assert exporter is not None
    assert exporter.statistics().flushes == 1
    assert exporter.statistics().datagrams_sent == 1


async def test_periodic_flushes_send_deltas_over_udp(agent: Agent) -> None:
    m = sample_metrics()
    events = m.counter("eventgw_ingest_events_total", "events", ["status"]).labels("accepted")
    key = "eventgw.ingest.eventgw_ingest_events_total.accepted:"
    async with export_statsd(settings_for(agent.port, interval_s=0.01), m):
        assert await agent.wait_line_with(key) == key + "3|c"
        events.inc(2)
        assert await agent.wait_line_with(key) == key + "2|c"
        m.gauge("eventgw_recovery_backup_objects", "objects").set(1)
        assert await agent.wait_line_with("eventgw.ingest.eventgw_recovery_backup_objects:") == (
            "eventgw.ingest.eventgw_recovery_backup_objects:1|g"
        )


async def test_many_series_are_split_into_datagrams_within_the_limit(agent: Agent) -> None:
    m = Metrics()
    tasks = m.counter("eventgw_processor_tasks_total", "tasks", ["result"])
    for i in range(200):
        tasks.labels(f"result-{i:03d}").inc(i + 1)
    exporter = StatsdExporter(m, "127.0.0.1", agent.port, "eventgw", interval_s=3600)
    assert await exporter.open()
    exporter.flush()
    exporter.close()
    lines = await agent.lines(200)
    assert lines == [
        f"eventgw.eventgw_processor_tasks_total.result-{i:03d}:{i + 1}|c" for i in range(200)
    ]
    stats = exporter.statistics()
    assert stats.datagrams_sent > 1
    # every datagram was full enough: no two consecutive ones could have been merged
    assert stats.datagrams_sent == len(pack_datagrams(lines))


async def test_the_body_error_propagates_unwrapped_after_the_last_flush(agent: Agent) -> None:
    with pytest.raises(OSError, match="port in use"):
        async with export_statsd(settings_for(agent.port), sample_metrics()):
            raise OSError("port in use")
    assert await agent.lines(len(EXPECTED_FIRST_FLUSH)) == EXPECTED_FIRST_FLUSH


async def test_no_listening_agent_never_raises_into_the_caller() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` any more: the kernel answers with ICMP port unreachable.
    m = sample_metrics()
    exporter = StatsdExporter(m, "127.0.0.1", port, "eventgw", interval_s=3600)
    assert await exporter.open()
    for _ in range(3):
        exporter.flush()
        await asyncio.sleep(0)  # let the transport report errors, if any
    exporter.close()
    assert exporter.statistics().flushes == 3


async def test_without_statsd_host_nothing_is_exported() -> None:
    async with export_statsd(ObservabilitySettings(), Metrics()) as exporter:
        assert exporter is None


def test_flush_before_open_sends_nothing_and_keeps_the_deltas() -> None:
    exporter = StatsdExporter(sample_metrics(), "127.0.0.1", 9, "eventgw", interval_s=1)
    exporter.flush()
    assert exporter.statistics().flushes == 0


async def test_oversized_lines_are_dropped_with_a_rate_limited_warning(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    m = Metrics()
    long_series = m.counter("eventgw_processor_tasks_total", "tasks", ["result"]).labels("x" * 100)
    m.gauge("eventgw_recovery_backup_objects", "objects").set(1)
    clock = FakeClock()
    exporter = StatsdExporter(
        m, "127.0.0.1", agent.port, "eventgw", interval_s=1, clock=clock, max_datagram_bytes=64
    )
    assert await exporter.open()
    with caplog.at_level(logging.WARNING, logger="eventgw.metrics.statsd"):
        for _ in range(3):
            long_series.inc()
            exporter.flush()
        clock.advance(61)
        long_series.inc()
        exporter.flush()
    exporter.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "statsd.line_too_long dropped=1",
        "statsd.warnings_suppressed count=2",
        "statsd.line_too_long dropped=1",
    ]
    assert exporter.statistics().lines_dropped == 4
    assert await agent.lines(4) == ["eventgw.eventgw_recovery_backup_objects:1|g"] * 4


@pytest.mark.parametrize("interval_s", [0, -1])
def test_the_interval_must_be_positive(interval_s: float) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        StatsdExporter(Metrics(), "127.0.0.1", 8125, "eventgw", interval_s=interval_s)
