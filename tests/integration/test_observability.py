"""What an operator sees of a running read path: /metrics, ``Stats`` and ``eventgw status``.

A real orchestrator and processor on the local Kafka handle events of known age: P30 events
that are fresh (processed within SLO), P20 events ingested two minutes ago (past their
deadline: missed) and offloaded P10 events. The metrics are read from the components'
``/metrics`` as Prometheus would scrape them; ``eventgw status`` runs as a subprocess.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventgw.cli.local_procs import free_port
from eventgw.cli.orchestrator_client import fetch_stats
from eventgw.core.envelope import Priority
from eventgw.grpc_auth import bearer_metadata
from eventgw.kafka.admin import delete_topics
from eventgw.orchestrator.service import OrchestratorService
from eventgw.processor import ProcessorService
from tests.fixtures.procs import component_env
from tests.fixtures.read_path import (
    Recorder,
    create_topics,
    lane_topics,
    make_event,
    produce,
    read_settings,
    running,
    wait_lag_zero,
    with_processor,
)
from tests.fixtures.stack import unique_topics

if TYPE_CHECKING:
    from collections.abc import Iterator

    from eventgw.config.settings import TopicSettings
    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka

N_P30, N_P20, N_P10 = 30, 20, 10
WORKER = "obs-worker-1"


@pytest.fixture
def topics(kafka_broker: LocalBroker) -> Iterator[TopicSettings]:
    names = unique_topics()
    create_topics(kafka_broker.bootstrap, names)
    yield names
    delete_topics(kafka_broker.bootstrap, names.all_topics())


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with asyncio.timeout(5), httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(got: dict[Any, float], name: str, **labels: str) -> float:
    return got[name, frozenset(labels.items())]


async def test_attainment_latency_queues_and_status_of_a_running_read_path(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    bootstrap = kafka_broker.bootstrap
    now_ms = time.time_ns() // 1_000_000
    p30 = [make_event(f"obs-p30-{i}", Priority.P30) for i in range(N_P30)]
    p20 = [
        make_event(f"obs-p20-{i}", Priority.P20, ingested_at_ms=now_ms - 120_000)
        for i in range(N_P20)
    ]
    p10 = [make_event(f"obs-p10-{i}", Priority.P10) for i in range(N_P10)]
    for e in p10:
        e.offloaded = True
    await asyncio.to_thread(produce, bootstrap, topics, p30 + p20)
    await asyncio.to_thread(produce, bootstrap, topics, p10, lane="offload")
    n = N_P30 + N_P20 + N_P10

    settings = read_settings(bootstrap, topics)
    orchestrator = OrchestratorService(settings)
    recorder = Recorder()
    async with running(orchestrator):
        target = f"127.0.0.1:{orchestrator.grpc_port}"
        processor = ProcessorService(
            with_processor(settings, orchestrators=[target]), recorder, worker_id=WORKER
        )
        async with running(processor):
            await recorder.wait_for(lambda: recorder.distinct >= n, 60, f"{n} events")
            await wait_lag_zero(bootstrap, settings.orchestrator.group_id, lane_topics(topics))
            # Every ACK is applied (the lag is 0 only once all are finished and committed).
            metadata = bearer_metadata(settings.internal_auth.token_for("orchestrator"))
            stats = await asyncio.to_thread(fetch_stats, target, 5, metadata)
            orch = await scrape(orchestrator.status_port or 0)
            proc = await scrape(processor.status_port or 0)
            status = await eventgw_status(bootstrap, topics, target, processor.status_port or 0)

    # Attainment: ACKs against the deadline, per class and tier.
    processed = "eventgw_orchestrator_processed_total"

    def count(cls: str, tier: str, slo: str) -> float:
        return value(orch, processed, **{"class": cls, "tier": tier, "slo": slo})

    assert count("P30", "normal", "met") == N_P30
    assert count("P30", "normal", "missed") == 0
    assert count("P20", "normal", "missed") == N_P20
    assert count("P20", "normal", "met") == 0
    assert count("P10", "offloaded", "met") == N_P10
    assert count("P10", "normal", "met") == 0
    by_class = {c.lane: c for c in stats.lanes}
    assert (by_class["P30"].slo_met, by_class["P30"].slo_missed) == (N_P30, 0)
    assert (by_class["P20"].slo_met, by_class["P20"].slo_missed) == (0, N_P20)
    assert (by_class["P10"].offloaded_slo_met, by_class["P10"].offloaded_slo_missed) == (N_P10, 0)

    # Latency: ingest → ACK (orchestrator) and → handler start (processor).
    ack = "eventgw_orchestrator_ack_latency_seconds"
    p20_labels = {"class": "P20", "tier": "normal"}
    assert value(orch, f"{ack}_count", **p20_labels) == N_P20
    assert value(orch, f"{ack}_bucket", le="60.0", **p20_labels) == 0  # 2 minutes old
    assert value(orch, f"{ack}_bucket", le="300.0", **p20_labels) == N_P20
    assert value(orch, f"{ack}_bucket", le="5.0", **{"class": "P30", "tier": "normal"}) == N_P30
    start = "eventgw_processor_start_latency_seconds"
    assert value(proc, f"{start}_count", **p20_labels) == N_P20
    assert value(proc, f"{start}_sum", **p20_labels) >= 120 * N_P20
    assert value(proc, f"{start}_count", **{"class": "P10", "tier": "offloaded"}) == N_P10
    assert value(proc, f"{start}_bucket", le="5.0", **{"class": "P30", "tier": "normal"}) == N_P30

    # Queues drained; the worker is connected; offsets are committed.
    for cls in ("P30", "P20", "P10"):
        for state in ("ready", "leased", "delayed"):
            assert (
                value(orch, "eventgw_orchestrator_class_tasks", **{"class": cls, "state": state})
                == 0
            )
    assert value(orch, "eventgw_orchestrator_buffer_bytes") == 0
    assert value(orch, "eventgw_orchestrator_worker_sessions") == 1
    assert value(orch, "eventgw_orchestrator_lane_paused", lane="p10") == 0
    assert value(orch, "eventgw_orchestrator_slo_seconds", **{"class": "P30"}) == 5
    lags = {k: v for k, v in orch.items() if k[0] == "eventgw_orchestrator_commit_lag_records"}
    assert lags, "a commit lag series per consumed partition"
    assert set(lags.values()) == {0}
    assert value(orch, "eventgw_orchestrator_commits_total", result="ok") >= 1
    assert value(orch, "eventgw_orchestrator_dispatched_total", lane="offload") == N_P10
    assert [w.worker_id for w in stats.workers] == [WORKER]
    assert stats.workers[0].results >= n

    # eventgw status: the orchestrator (attainment, worker) and the processor are shown;
    # ingest, publisher and failed-writes are not running here, so they are DOWN (exit 1).
    code, out = status
    print(f"\n[eventgw status]\n{out}")
    assert code == 1, out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["orchestrator", "0", "serving"] for line in lines), out
    row = {line.split()[0]: line.split() for line in lines if line.startswith("    P")}
    assert row["P30"][-3:] == ["100.0%", "of", str(N_P30)], out
    assert row["P20"][-3:] == ["0.0%", "of", str(N_P20)], out
    assert f"    within SLO, offloaded events only: P10 100.0% of {N_P10}" in lines, out
    assert "    worker sessions: 1" in lines, out
    assert any(
        line.split()[:3] == [WORKER, "session", "1"] or line.strip().startswith(WORKER)
        for line in lines
    ), out
    assert any(line.startswith("processor") and " ready " in line for line in lines), out
    assert f"connected workers, as the orchestrators see them: {WORKER} (orchestrator 0)" in out
    for down in ("ingest", "publisher", "failed-writes"):
        assert any(line.startswith(down) and " DOWN " in line for line in lines), out


async def eventgw_status(
    bootstrap: str, topics: TopicSettings, orchestrator: str, processor_port: int
) -> tuple[int, str]:
    """Run ``eventgw status`` against these components (nothing else is listening)."""
    env = component_env(
        bootstrap,
        topics,
        EVENTGW_PROCESSOR__ORCHESTRATORS=f'["{orchestrator}"]',
        EVENTGW_ORCHESTRATOR__GRPC_PORT=orchestrator.rsplit(":", 1)[1],
        EVENTGW_PROCESSOR__METRICS_PORT=str(processor_port),
        EVENTGW_INGEST__HTTP_PORT=str(free_port()),
        EVENTGW_PUBLISHER__METRICS_PORT=str(free_port()),
        EVENTGW_RECOVERY__METRICS_PORT=str(free_port()),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventgw.cli.main",
        "status",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()
