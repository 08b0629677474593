"""The prep publisher process is SIGKILLed mid-stream; the client library's fallback
captures what the service could not take; the failed-writes processor replays it.
Count: every event the client saw acknowledged ends in its intended topic."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from eventgw.client.ingest_client import (
    ClientEvent,
    EventIngestPublisher,
    FallbackSettings,
)
from eventgw.config.settings import BackupSettings, EventGwSettings, KafkaClusterSettings
from eventgw.core.errors import NotDurable
from eventgw.core.lifecycle import run_services
from eventgw.ingest.service import IngestService
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from eventgw.recovery.service import RecoveryService
from tests.fixtures.procs import component_env, spawn, wait_http_ready
from tests.fixtures.read_path import read_records
from tests.fixtures.stack import make_settings, unique_topics

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka


def publisher_env(settings: EventGwSettings, grpc_port: int, liveness_port: int) -> dict[str, str]:
    return component_env(
        settings.kafka.primary.bootstrap_servers,
        settings.topics,
        EVENTGW_PUBLISHER__GRPC_PORT=str(grpc_port),
        EVENTGW_PUBLISHER__LIVENESS_PORT=str(liveness_port),
        EVENTGW_PUBLISHER__METRICS_PORT="0",
        EVENTGW_BACKUP__SPOOL_DIR=str(settings.backup.spool_dir),
    )


async def test_publisher_sigkill_mid_stream_client_fallback_loses_nothing(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    topics = unique_topics()
    await asyncio.to_thread(
        ensure_topics, kafka_broker.bootstrap, [TopicSpec(n, 3) for n in topics.all_topics()]
    )
    settings = make_settings(
        primary=kafka_broker.bootstrap,
        topics=topics,
        spool_dir=tmp_path / "publisher-spool",
        # One rule for ingest; the failed-writes processor must classify the client's
        # captures with the same rules (P10 here, not the default P20).
        ingest={"publish_timeout_s": 10.0, "class_rules": [{"priority": 10, "source_name": "api"}]},
    )
    grpc_port, liveness_port = free_port(), free_port()
    proc = await spawn("publisher", publisher_env(settings, grpc_port, liveness_port))
    stop_ingest = asyncio.Event()
    ingest_task = None
    try:
        await wait_http_ready(f"http://127.0.0.1:{liveness_port}/readyz", proc)
        ingest_settings = settings.model_copy(
            update={
                "ingest": settings.ingest.model_copy(
                    update={"publisher_target": f"127.0.0.1:{grpc_port}"}
                )
            }
        )
        ingest = IngestService(ingest_settings)
        ready = asyncio.Event()
        ingest_task = asyncio.create_task(run_services([ingest], stop_ingest, ready))
        async with asyncio.timeout(30):
            await ready.wait()

        client = EventIngestPublisher(
            f"127.0.0.1:{ingest.grpc_port}",
            use_fallbacks=True,
            fallback=FallbackSettings(
                kafka=KafkaClusterSettings(bootstrap_servers=kafka_broker.bootstrap),
                failed_writes_topic=topics.failed_writes,
                backup=BackupSettings(spool_dir=tmp_path / "client-spool"),
            ),
            timeout_s=15,
        )
        await client.start()
        acked: dict[str, str] = {}  # event_id → "service" | "client"
        progress = asyncio.Condition()
        stop = asyncio.Event()

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                batch = [
                    ClientEvent(f"c{i % 5}", "api", {"n": n, "i": i}, event_id=f"e-{w}-{n}-{i}")
                    for i in range(10)
                ]
                n += 1
                try:
                    results = await client.publish(batch)
                except NotDurable:
                    continue  # not acknowledged: a real sender retries; we don't count it
                for r in results:
                    acked[r.event_id] = "client" if r.captured_by_client else "service"
                async with progress:
                    progress.notify_all()
                await asyncio.sleep(0.02)  # pacing, not polling

        async def until(pred: Callable[[], bool], timeout_s: float) -> None:
            async with asyncio.timeout(timeout_s), progress:
                await progress.wait_for(pred)

        async with asyncio.TaskGroup() as tg:
            for w in range(3):
                tg.create_task(worker(w))
            await until(lambda: len(acked) >= 150, 60)
            os.kill(proc.pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                await proc.wait()
            await until(lambda: Counter(acked.values())["client"] >= 60, 60)
            stop.set()
        await client.close()

        by_service = {e for e, how in acked.items() if how == "service"}
        by_client = {e for e, how in acked.items() if how == "client"}
        assert by_service
        assert by_client
        lanes = [topics.p30, topics.p20, topics.p10, topics.offload]

        def ids(topic_list: list[str]) -> Counter[str]:
            """Event ids in the topics now (read by offset to each partition's end)."""
            c: Counter[str] = Counter()
            for t in topic_list:
                for rec in read_records(kafka_broker.bootstrap, t):
                    c[pb.EventData.FromString(rec.value).event_id] += 1
            return c

        # Acknowledged by the service = already durable in its lane, before any replay.
        in_lanes = await asyncio.to_thread(ids, lanes)
        assert not by_service - set(in_lanes), "service-acknowledged events missing from Kafka"
        captured = await asyncio.to_thread(ids, [topics.failed_writes])
        assert by_client <= set(captured) | set(in_lanes)

        # The failed-writes processor classifies the client's captures and replays them.
        recovery = RecoveryService(ingest_settings)
        rstop, rready = asyncio.Event(), asyncio.Event()
        rtask = asyncio.create_task(run_services([recovery], rstop, rready))
        try:
            deadline = time.monotonic() + 60
            while True:
                in_lanes = await asyncio.to_thread(ids, lanes)
                if set(acked) <= set(in_lanes) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)  # the replay has no event to await from here
        finally:
            rstop.set()
            await rtask
        missing = set(acked) - set(in_lanes)
        dupes = sum(c - 1 for c in in_lanes.values() if c > 1)
        print(
            f"acked={len(acked)} service={len(by_service)} client={len(by_client)} "
            f"duplicates={dupes}"
        )
        assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:5]}"
        replayed = {
            pb.EventData.FromString(r.value).event_id: r.headers
            for r in await asyncio.to_thread(read_records, kafka_broker.bootstrap, topics.p10)
        }
        sample = next(iter(by_client & set(replayed)))
        assert replayed[sample]["eventgw-class"] == b"P10"  # classified on replay, as ingest does
    finally:
        if proc.returncode is None:
            proc.kill()
            async with asyncio.timeout(10):
                await proc.wait()
        stop_ingest.set()
        if ingest_task is not None:
            await ingest_task
        await asyncio.to_thread(delete_topics, kafka_broker.bootstrap, topics.all_topics())
