"""``eventgw status``: the orchestrator block, attainment and which orchestrators are asked.

What the command prints against a real stack is in tests/integration/test_observability.py
and tests/e2e/test_up.py.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.status import (
    _print_http_component,
    attainment,
    orchestrator_lines,
    orchestrator_targets,
)
from eventgw.config.settings import EventGwSettings, OrchestratorSettings, ProcessorSettings
from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer

if TYPE_CHECKING:
    import pytest


def test_attainment_is_met_over_all_acked() -> None:
    assert attainment(0, 0) == "-"
    assert attainment(199, 1) == "99.5% of 200"
    assert attainment(0, 3) == "0.0% of 3"


def test_orchestrator_block_shows_classes_attainment_and_workers() -> None:
    stats = pb.StatsResponse(
        index=2,
        serving=True,
        buffer_bytes=3_000_000,
        buffer_budget_bytes=256_000_000,
        lanes=[
            pb.ClassStats(lane="P30", processed=10, slo_s=5, slo_met=9, slo_missed=1, late=2),
            pb.ClassStats(
                lane="P20",
                processed=4,
                slo_s=60,
                slo_met=4,
                offloaded_slo_met=1,
                offloaded_slo_missed=1,
                slo_missed=1,
            ),
            pb.ClassStats(lane="offload", buffered=7, paused=True),
        ],
        workers=[
            pb.WorkerSessionStats(
                worker_id="h-1", session=3, credit=5, leased=2, results=9, connected_s=61.4
            )
        ],
    )
    lines = orchestrator_lines("10.0.0.1:50052", stats)
    assert lines[0].split() == ["orchestrator", "2", "serving", "grpc", "10.0.0.1:50052"]
    assert lines[1] == "    buffer 3.0 MB of 256 MB"
    p30 = next(line for line in lines if line.strip().startswith("P30"))
    assert p30.split() == ["P30", "0", "0", "10", "0", "0", "2", "0.0s/5s", "90.0%", "of", "10"]
    offload = next(line for line in lines if line.strip().startswith("offload"))
    assert offload.split() == ["offload", "7", "0", "0", "0", "0", "-", "yes"]
    assert "    within SLO, offloaded events only: P20 50.0% of 2" in lines
    assert "    worker sessions: 1" in lines
    assert lines[-1] == "      h-1  session 3  credit 5  leased 2  results 9  connected 61s"


def test_a_draining_orchestrator_says_so() -> None:
    lines = orchestrator_lines("a:1", pb.StatsResponse(serving=False))
    assert "DRAINING" in lines[0]
    assert lines[-1] == "    worker sessions: 0"


def test_orchestrators_are_the_processors_list_then_this_hosts_own() -> None:
    settings = EventGwSettings(
        orchestrator=OrchestratorSettings(grpc_port=50052),
        processor=ProcessorSettings(orchestrators=["o-0:50052", "o-1:50052"]),
    )
    assert orchestrator_targets(settings) == ["o-0:50052", "o-1:50052", "127.0.0.1:50052"]
    same = EventGwSettings(
        orchestrator=OrchestratorSettings(grpc_port=50052),
        processor=ProcessorSettings(orchestrators=["127.0.0.1:50052"]),
    )
    assert orchestrator_targets(same) == ["127.0.0.1:50052"]


async def test_a_components_block_is_its_readiness_and_counters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = Metrics()
    events = metrics.counter("eventgw_publisher_events_total", "doc", ["priority"])
    events.labels("P30").inc(3)
    events.labels("P10").inc()
    metrics.gauge("eventgw_orchestrator_buffer_bytes", "doc").set(7)  # not a counter
    metrics.histogram("eventgw_publisher_publish_duration_seconds", "doc").observe(0.02)
    server = StatusServer("127.0.0.1", 0, metrics, lambda: True)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        # urllib blocks: in a thread, so this loop keeps serving.
        code = await asyncio.to_thread(_print_http_component, "publisher", base)
    finally:
        await server.close()
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"publisher        ready  {base}",
        '    eventgw_publisher_events_total{priority="P30"} 3',
        '    eventgw_publisher_events_total{priority="P10"} 1',
    ]
