"""``ingest.workers``: several co-located ingest processes on one port, supervised as one.

Real processes (``eventgw ingest`` with ``ingest.embedded_publisher`` and ``ingest.workers
= 2``) against the real broker: connections are spread over both workers, every event a
worker acknowledged is in Kafka, SIGTERM drains both, and a worker killed with SIGKILL
takes the service down as a unit (exit 1) without losing an acknowledged event.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from tests.fixtures.procs import component_env, spawn, wait_http_ready
from tests.fixtures.stack import read_topic, unique_topics

if TYPE_CHECKING:
    from pathlib import Path

    from eventgw.config.settings import TopicSettings
    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka

WORKERS = 2


async def _start(
    kafka_broker: LocalBroker, tmp_path: Path
) -> tuple[TopicSettings, int, asyncio.subprocess.Process]:
    topics = unique_topics()
    await asyncio.to_thread(
        ensure_topics, kafka_broker.bootstrap, [TopicSpec(n, 3) for n in topics.all_topics()]
    )
    http = free_port()
    env = component_env(
        kafka_broker.bootstrap,
        topics,
        EVENTGW_BACKUP__SPOOL_DIR=str(tmp_path / "spool"),
        EVENTGW_INGEST__HTTP_PORT=str(http),
        EVENTGW_INGEST__GRPC_PORT=str(free_port()),
        EVENTGW_INGEST__EMBEDDED_PUBLISHER="true",
        EVENTGW_INGEST__WORKERS=str(WORKERS),
    )
    proc = await spawn("ingest", env)
    await wait_http_ready(f"http://127.0.0.1:{http}/readyz", proc)
    async with asyncio.timeout(60):  # /readyz answers once one worker is up: wait for all
        while True:
            children = psutil.Process(proc.pid).children()
            listening = [
                c
                for c in children
                if any(
                    s.status == psutil.CONN_LISTEN and s.laddr.port == http
                    for s in c.net_connections(kind="tcp")
                )
            ]
            if len(listening) == WORKERS:
                break
            await asyncio.sleep(0.2)
    return topics, http, proc


async def _post(http: int, ids: list[str]) -> tuple[int, set[str]]:
    """One request on a fresh connection (so the kernel picks a worker for each)."""
    body = {
        "events": [
            {"company_id": f"c{n % 7}", "source_name": "api", "event_id": e}
            for n, e in enumerate(ids)
        ]
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}", timeout=60) as client:
        resp = await client.post("/v1/events", json=body)
    if resp.status_code != 202:
        return resp.status_code, set()
    return 202, {r["event_id"] for r in resp.json()["events"] if r["status"] == "PUBLISHED"}


async def test_workers_share_the_port_and_every_acknowledged_event_is_in_kafka(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    topics, http, proc = await _start(kafka_broker, tmp_path)
    try:
        pids = set()
        for _ in range(30):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}") as client:
                pids.add((await client.get("/status")).json()["pid"])
        worker_pids = {c.pid for c in psutil.Process(proc.pid).children()}
        assert pids == worker_pids, f"answered by {pids}, workers {worker_pids}"

        acked: set[str] = set()
        for batch in range(40):
            status, ok = await _post(http, [f"w-{batch}-{i}" for i in range(25)])
            assert status == 202
            acked |= ok
        assert len(acked) == 1000

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
        assert not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in worker_pids
        )
        records = await asyncio.to_thread(
            read_topic, kafka_broker.bootstrap, topics.p20, expect=len(acked), idle_s=1.0
        )
        in_kafka = [pb.EventData.FromString(r.value).event_id for r in records]
        assert set(in_kafka) == acked
        assert len(in_kafka) == len(acked), "one worker per request: nothing written twice"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.to_thread(delete_topics, kafka_broker.bootstrap, topics.all_topics())


async def test_a_worker_killed_stops_the_service_and_loses_no_acknowledged_event(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    topics, http, proc = await _start(kafka_broker, tmp_path)
    acked: set[str] = set()
    stop = asyncio.Event()
    enough = asyncio.Event()
    try:

        async def load(w: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    _, ok = await _post(http, [f"k-{w}-{n}-{i}" for i in range(20)])
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                acked.update(ok)
                if len(acked) >= 400:
                    enough.set()

        async with asyncio.TaskGroup() as tg:
            for w in range(4):
                tg.create_task(load(w))
            async with asyncio.timeout(60):
                await enough.wait()
            victim, *others = psutil.Process(proc.pid).children()
            os.kill(victim.pid, signal.SIGKILL)
            async with asyncio.timeout(90):
                code = await proc.wait()
            stop.set()
        assert code == 1, "a worker that dies takes the service down as a unit"
        for other in others:  # the surviving worker was stopped (drained), not orphaned
            assert not other.is_running() or other.status() == psutil.STATUS_ZOMBIE
        records = await asyncio.to_thread(
            read_topic, kafka_broker.bootstrap, topics.p20, expect=len(acked), idle_s=1.5
        )
        in_kafka = {pb.EventData.FromString(r.value).event_id for r in records}
        missing = acked - in_kafka
        print(f"acked={len(acked)} in_kafka={len(in_kafka)}")
        assert not missing, f"{len(missing)} acknowledged events missing: {sorted(missing)[:5]}"
    finally:
        stop.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.to_thread(delete_topics, kafka_broker.bootstrap, topics.all_topics())
