"""Admission control against the real broker: AIMD capacity, offload, hot tenants, config, alert.

The full loop runs in-process: publisher + ingest (the `write_stack` fixture), an orchestrator
publishing flow-control signals, and a processor whose handler has a fixed cost per event, so
the processors' capacity is small and known. Ingest's dynamic config file carries small AIMD
and hot-tenant numbers so the loop moves within seconds; the SLO constants are the real ones.

P10 falls behind through its memory share: with a 64 KiB orchestrator buffer the P10 lane
pauses as soon as the processors cannot keep up, and a paused lane means DECREASE. The
P10 SLO (20 min) is too long for queueing age to matter within a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import confluent_kafka
import httpx
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.admission import DEFAULT_AIMD_PARAMS
from eventgw.core.envelope import SLO_SECONDS, Priority
from eventgw.orchestrator.flow_control import Signal, encode
from eventgw.orchestrator.service import OrchestratorService
from eventgw.processor import ProcessorService
from tests.fixtures.read_path import (
    Recorder,
    get_stats,
    read_settings,
    running,
    with_processor,
)
from tests.fixtures.stack import unique_topics

if TYPE_CHECKING:
    from pathlib import Path

    from eventgw.config.settings import EventGwSettings
    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.stack import RunningStack, StackFactory

pytestmark = pytest.mark.kafka

DURABLE = {"PUBLISHED", "FAILED_WRITES", "BACKED_UP"}

# Small P10 numbers so AIMD moves visibly within seconds.
P10_PARAMS = {
    "initial": 400,
    "floor": 20,
    "ceiling": 2000,
    "increase_step": 50,
    "decrease_factor": 0.5,
    "cooldown_s": 1,
    "burst_s": 1,
}

# Processor capacity: 5 handlers x 20 ms = 250 events/s at most.
HANDLER_COST_S = 0.02
CONCURRENCY = 5


# -- helpers ----------------------------------------------------------------------------------


def write_config(path: Path, doc: dict[str, Any] | str) -> None:
    """Replace the dynamic config file atomically (as an operator's `mv` would)."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def p20_params(**overrides: float) -> dict[str, float]:
    """Valid P20 AIMD parameters with ``overrides``."""
    params: dict[str, float] = {
        "initial": 123,
        "floor": 10,
        "ceiling": 123,
        "increase_step": 10,
        "decrease_factor": 0.5,
        "cooldown_s": 1,
        "burst_s": 1,
    }
    params.update(overrides)
    return params


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    """``GET /status`` of ingest."""
    resp = await client.get("/status")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def post_events(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> list[Any]:
    """POST a batch; returns its per-event answers (each must be durable)."""
    resp = await client.post("/v1/events", json={"events": events})
    assert resp.status_code == 202, resp.text
    answers = resp.json()["events"]
    assert all(a["status"] in DURABLE for a in answers), answers
    return list(answers)


async def wait_until(predicate: Any, timeout_s: float, what: str, *, every_s: float = 0.1) -> None:
    """Await ``predicate()`` (an async callable returning bool) until true, bounded."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if await predicate():
                    return
                await asyncio.sleep(every_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


def orchestrator_settings(stack: RunningStack, **orchestrator: Any) -> EventGwSettings:
    """Settings of an in-process orchestrator/processor on the write stack's topics."""
    s = stack.settings
    return read_settings(s.kafka.primary.bootstrap_servers, s.topics, orchestrator=orchestrator)


def processor(
    settings: EventGwSettings, orchestrator: OrchestratorService, handler: Recorder
) -> ProcessorService:
    """An in-process processor of ``orchestrator``: CONCURRENCY handlers."""
    return ProcessorService(
        with_processor(
            settings,
            orchestrators=[f"127.0.0.1:{orchestrator.grpc_port}"],
            concurrency=CONCURRENCY,
        ),
        handler,
    )


@contextlib.asynccontextmanager
async def sampling(
    client: httpx.AsyncClient, out: list[tuple[float, dict[str, Any]]], every_s: float = 0.2
) -> Any:
    """Record ``(t, /status)`` every ``every_s`` while the block runs."""
    started = time.monotonic()

    async def sample() -> None:
        while True:
            out.append((time.monotonic() - started, await status(client)))
            await asyncio.sleep(every_s)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- 1. burst -> capacity falls -> offload -> capacity climbs -> nothing lost -------------------


async def test_burst_lowers_capacity_offloads_excess_then_recovers_and_loses_nothing(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    """3,000 P10 events at ~1,000/s against ~250/s of processors, AIMD start 400/s."""
    config = tmp_path / "dyn" / "dynamic.json"
    config.parent.mkdir()
    write_config(
        config,
        {"aimd": {"classes": {"P10": P10_PARAMS}}, "hot_tenants": {"enabled": False}},
    )
    stack = await write_stack(
        topics=unique_topics(),
        ingest={
            "class_rules": [{"priority": 10, "source_name": "bulk"}],
            "dynamic_config_path": config,
        },
    )
    settings = orchestrator_settings(
        stack, buffer_budget_bytes=1 << 16, flow_control_interval_s=0.5
    )
    orchestrator = OrchestratorService(settings)
    recorder = Recorder(sleep_s=HANDLER_COST_S)
    trajectory: list[tuple[float, dict[str, Any]]] = []
    answers: list[Any] = []
    n_requests, per_request = 60, 50

    async with asyncio.timeout(150):
        async with (
            running(orchestrator),
            running(processor(settings, orchestrator, recorder)),
            httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client,
            sampling(client, trajectory),
        ):
            initial = (await status(client))["classes"]["P10"]
            assert initial["capacity"] == 400
            burst_started = time.monotonic()
            for r in range(n_requests):
                events = [
                    {
                        "company_id": f"co-{(r * per_request + i) % 20}",
                        "source_name": "bulk",
                        "payload": {"r": r, "i": i},
                    }
                    for i in range(per_request)
                ]
                answers.extend(await post_events(client, events))
                await asyncio.sleep(max(0.0, burst_started + (r + 1) * 0.05 - time.monotonic()))
            burst_s = time.monotonic() - burst_started

            accepted = {a["event_id"] for a in answers}
            offloaded = {a["event_id"] for a in answers if a["lane"] == "offload"}
            assert all(a["priority"] == "P10" for a in answers)
            assert {a["lane"] for a in answers} <= {"p10", "offload"}

            await recorder.wait_for(
                lambda: accepted <= recorder.counts.keys(), 90, "every accepted event"
            )
            drained_s = time.monotonic() - burst_started
            low = min(doc["classes"]["P10"]["capacity"] for _, doc in trajectory)

            async def climbed() -> bool:
                return bool((await status(client))["classes"]["P10"]["capacity"] >= low + 100)

            await wait_until(climbed, 30, "P10 capacity to climb by two increase steps")
            final = await status(client)
            stats = await get_stats(orchestrator.status_port or 0)

    # Capacity trajectory (about 30 points) for the report.
    points = [
        (round(t, 1), doc["classes"]["P10"]["capacity"])
        for t, doc in trajectory[:: max(1, len(trajectory) // 30)]
    ]
    p10_final = final["classes"]["P10"]
    max_decrements = max(doc["classes"]["P10"]["decrements_last_minute"] for _, doc in trajectory)
    print(
        f"\n[aimd] {len(accepted)} events in {burst_s:.1f}s; offloaded {len(offloaded)}; "
        f"all processed {drained_s:.1f}s after the burst started; duplicates "
        f"{recorder.duplicates()}; P10 capacity 400 -> low {low} -> {p10_final['capacity']}; "
        f"decrements_last_minute max {max_decrements}; flow-control signals applied "
        f"{final['flow_control_signals']}; orchestrator offload processed "
        f"{stats['by_lane']['offload']['processed']}\n[aimd] trajectory (s, capacity): {points}"
    )
    assert len(accepted) == n_requests * per_request
    assert low < 400, "P10 capacity never fell"
    assert max_decrements > 0
    assert offloaded, "no event went to the offload lane"
    assert len(offloaded) < len(accepted), "some events must keep their P10 lane"
    assert p10_final["offloaded"] == len(offloaded)
    assert p10_final["admitted"] == len(accepted) - len(offloaded)
    assert p10_final["capacity"] >= low + 100, "capacity did not climb back"
    # Nothing lost, offloaded events included; each keeps its class and original deadline.
    assert set(recorder.counts) == accepted
    slo_ms = int(SLO_SECONDS[Priority.P10] * 1000)
    for event_id, event in recorder.events.items():
        assert event.priority == pb.P10, event_id
        assert event.slo_deadline_ms == event.ingested_at_ms + slo_ms, event_id
        assert event.offloaded == (event_id in offloaded), event_id
    assert stats["by_lane"]["offload"]["processed"] >= len(offloaded)


# -- 2. hot tenant isolation -------------------------------------------------------------------


async def test_hot_tenant_is_offloaded_and_other_companies_keep_their_slo(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    """One company floods P20 with 3,000 events; the others' trickle stays far inside 60 s."""
    config = tmp_path / "dyn" / "dynamic.json"
    config.parent.mkdir()
    write_config(
        config,
        {"hot_tenants": {"max_rate_per_company": 50, "window_s": 2, "action": "offload"}},
    )
    stack = await write_stack(topics=unique_topics(), ingest={"dynamic_config_path": config})
    settings = orchestrator_settings(stack, flow_control_interval_s=0.5)
    orchestrator = OrchestratorService(settings)
    recorder = Recorder(sleep_s=HANDLER_COST_S)
    flood_answers: list[Any] = []
    trickle_answers: list[Any] = []
    hot_seen: list[list[dict[str, Any]]] = []
    n_flood_requests, per_request = 30, 100

    async with asyncio.timeout(120):
        async with (
            running(orchestrator),
            running(processor(settings, orchestrator, recorder)),
            httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client,
            httpx.AsyncClient(base_url=stack.admin_url, timeout=30) as admin,  # company ids
        ):
            # Warm up: the orchestrator is ready before its group owns the partitions; the
            # latencies measured below are those of the flood, not of the start-up.
            warm = await post_events(client, [{"company_id": "warm-up", "source_name": "api"}])
            await recorder.wait_for(
                lambda: warm[0]["event_id"] in recorder.counts, 30, "the warm-up event"
            )

            async def flood() -> None:
                started = time.monotonic()
                for r in range(n_flood_requests):
                    events = [
                        {"company_id": "flooder", "source_name": "api", "payload": {"r": r}}
                        for _ in range(per_request)
                    ]
                    flood_answers.extend(await post_events(client, events))
                    hot_seen.append((await status(admin))["hot_companies"])
                    await asyncio.sleep(max(0.0, started + (r + 1) * 0.1 - time.monotonic()))

            async def trickle() -> None:
                started = time.monotonic()
                for i in range(80):  # 20 events/s over 6 companies for 4 s
                    event = {"company_id": f"steady-{i % 6}", "source_name": "api", "payload": i}
                    trickle_answers.extend(await post_events(client, [event]))
                    await asyncio.sleep(max(0.0, started + (i + 1) * 0.05 - time.monotonic()))

            async with asyncio.TaskGroup() as tg:
                tg.create_task(flood())
                tg.create_task(trickle())
            trickle_ids = {a["event_id"] for a in trickle_answers}
            await recorder.wait_for(
                lambda: trickle_ids <= recorder.counts.keys(), 60, "every trickle event"
            )
            flood_ids = {a["event_id"] for a in flood_answers}
            await recorder.wait_for(
                lambda: flood_ids <= recorder.counts.keys(), 60, "every flood event"
            )
            final = await status(client)

    first_call: dict[str, int] = {}
    for event_id, _, _, wall_ms in recorder.calls:
        first_call.setdefault(event_id, wall_ms)
    latencies = sorted(first_call[e] - recorder.events[e].ingested_at_ms for e in trickle_ids)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    flood_offloaded = sum(1 for a in flood_answers if a["lane"] == "offload")
    hot_ids = {c["company_id"] for seen in hot_seen for c in seen}
    print(
        f"\n[hot] flood {len(flood_answers)} events, offloaded {flood_offloaded}; trickle "
        f"{len(trickle_ids)} events over 6 companies, latency ms p50="
        f"{latencies[len(latencies) // 2]} p99={p99} max={latencies[-1]}; hot seen: {hot_ids}"
    )
    assert all(a["lane"] == "p20" and a["priority"] == "P20" for a in trickle_answers)
    assert latencies[-1] < SLO_SECONDS[Priority.P20] * 1000
    # Without isolation they would queue behind ~3,000 events at <= 250/s: ~12 s.
    assert p99 < 5000, f"other companies waited behind the flood: {latencies[-5:]} ms"
    assert flood_offloaded >= len(flood_answers) - 300, "the flood was not offloaded"
    assert "flooder" in hot_ids
    assert hot_ids == {"flooder"}
    assert final["classes"]["P20"]["offloaded"] == 0, "hot-tenant offload is not capacity shedding"
    slo_ms = int(SLO_SECONDS[Priority.P20] * 1000)
    for event_id in flood_ids:
        event = recorder.events[event_id]
        assert event.priority == pb.P20
        assert event.slo_deadline_ms == event.ingested_at_ms + slo_ms


# -- 3. invalid dynamic config -----------------------------------------------------------------


async def test_invalid_dynamic_config_is_refused_and_last_good_stays(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    """A valid aimd update applies; three invalid ones are refused; the next valid one applies."""
    config = tmp_path / "dyn" / "dynamic.json"
    config.parent.mkdir()
    stack = await write_stack(topics=unique_topics(), ingest={"dynamic_config_path": config})
    admission = stack.ingest.admission
    assert admission is not None
    watcher = admission.watcher

    async with (
        asyncio.timeout(60),
        httpx.AsyncClient(base_url=stack.http_url, timeout=10) as client,
    ):

        async def p20_capacity() -> float:
            return float((await status(client))["classes"]["P20"]["capacity"])

        async def apply(doc: dict[str, Any], capacity: float) -> None:
            # The watcher may still be starting: rewrite until it sees the file (bounded).
            try:
                async with asyncio.timeout(15):
                    while True:
                        write_config(config, doc)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1):
                                while True:
                                    if await p20_capacity() == capacity:
                                        return
                                    await asyncio.sleep(0.05)
            except TimeoutError:
                raise AssertionError(f"{doc} not applied: {await status(client)}") from None

        # "initial" applies at start-up only; a running ingest clamps into [floor, ceiling].
        assert await p20_capacity() == DEFAULT_AIMD_PARAMS["P20"].initial
        await apply({"aimd": {"classes": {"P20": p20_params()}}}, 123)

        invalid: list[dict[str, Any] | str] = [
            {"aimd": {"classes": {"P20": p20_params(decrease_factor=2)}}},
            {"aimd": {"classes": {"P20": p20_params(floor=500)}}},  # floor > ceiling
            '{"aimd": {"classes": ',  # malformed JSON
        ]
        for doc in invalid:
            before = watcher.refused
            write_config(config, doc)

            async def refused(before: int = before) -> bool:
                return watcher.refused > before

            await wait_until(refused, 10, f"the watcher to refuse {doc!r}", every_s=0.05)
            assert await p20_capacity() == 123
            assert admission.slo.config.classes["P20"].ceiling == 123
        metrics = (await client.get("/metrics")).text
        line = next(
            ln
            for ln in metrics.splitlines()
            if ln.startswith('eventgw_dynamic_config_reloads_total{result="refused"}')
        )
        assert float(line.split()[-1]) >= len(invalid)

        await apply({"aimd": {"classes": {"P20": p20_params(initial=77, ceiling=77)}}}, 77)
        assert admission.slo.config.classes["P20"].ceiling == 77
        print(f"\n[config] refused={watcher.refused} version={watcher.version} ({line})")


# -- 4. serious congestion ---------------------------------------------------------------------


async def test_more_than_ten_p10_decrements_a_minute_raise_the_alert(
    write_stack: StackFactory,
    kafka_broker: LocalBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Synthetic DECREASE signals on the flow-control topic → alert on status, metric and log."""
    config = tmp_path / "dyn" / "dynamic.json"
    config.parent.mkdir()
    write_config(config, {"aimd": {"classes": {"P10": {**P10_PARAMS, "cooldown_s": 0.1}}}})
    caplog.set_level(logging.INFO, logger="eventgw.ingest")
    stack = await write_stack(topics=unique_topics(), ingest={"dynamic_config_path": config})
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 0, "log_level": 2}
    )
    signal = Signal(
        priority=Priority.P10,
        action="DECREASE",
        orchestrator_index=0,
        queue_depth=1000,
        oldest_ready_age_s=1.0,
        paused_lanes=frozenset({"p10"}),
        reason="paused",
    )
    sent = 0
    async with (
        asyncio.timeout(60),
        httpx.AsyncClient(base_url=stack.http_url, timeout=10) as client,
    ):
        assert (await status(client))["serious_congestion"] is False
        while not (doc := await status(client))["serious_congestion"]:
            producer.produce(
                stack.settings.topics.flow_control,
                key=b"P10",
                value=encode(signal, time.time_ns() // 1_000_000),
            )
            await asyncio.to_thread(producer.flush, 10)
            sent += 1
            await asyncio.sleep(0.15)
        metrics = (await client.get("/metrics")).text

    p10 = doc["classes"]["P10"]
    print(
        f"\n[alert] after {sent} DECREASE signals: decrements_last_minute="
        f"{p10['decrements_last_minute']} capacity={p10['capacity']}"
    )
    assert p10["decrements_last_minute"] > 10
    assert p10["capacity"] == P10_PARAMS["floor"]
    assert "eventgw_ingest_serious_congestion 1.0" in metrics.splitlines()
    alerts = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage().startswith("slo.serious_congestion")
    ]
    assert len(alerts) == 1, [r.getMessage() for r in caplog.records if r.levelno >= 30]
    fields = dict(f.split("=", 1) for f in alerts[0].getMessage().split()[1:])
    assert int(fields["p10_decrements_last_minute"]) > 10
