"""SIGTERM under load: each service drains within its deadline and loses no acknowledged event.

Publisher and ingest run as real processes (``eventgw publisher`` / ``eventgw ingest``); load
comes over HTTP; one of the two gets SIGTERM mid-stream.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING

import httpx
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

SHUTDOWN_TIMEOUT_S = 10.0


def env_for(
    bootstrap: str, topics: TopicSettings, spool: str, ports: dict[str, int]
) -> dict[str, str]:
    return component_env(
        bootstrap,
        topics,
        EVENTGW_BACKUP__SPOOL_DIR=spool,
        EVENTGW_PUBLISHER__GRPC_PORT=str(ports["pub"]),
        EVENTGW_PUBLISHER__LIVENESS_PORT=str(ports["live"]),
        EVENTGW_PUBLISHER__METRICS_PORT="0",
        EVENTGW_PUBLISHER__SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
        EVENTGW_INGEST__HTTP_PORT=str(ports["http"]),
        EVENTGW_INGEST__GRPC_PORT=str(ports["igrpc"]),
        EVENTGW_INGEST__PUBLISHER_TARGET=f"127.0.0.1:{ports['pub']}",
    )


@pytest.mark.parametrize("victim", ["ingest", "publisher"])
async def test_sigterm_under_load_drains_in_time_and_loses_nothing(
    victim: str, kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    topics = unique_topics()
    await asyncio.to_thread(
        ensure_topics, kafka_broker.bootstrap, [TopicSpec(n, 3) for n in topics.all_topics()]
    )
    ports = {k: free_port() for k in ("pub", "live", "http", "igrpc")}
    env = env_for(kafka_broker.bootstrap, topics, str(tmp_path / "spool"), ports)
    procs = {"publisher": await spawn("publisher", env)}
    acked: set[str] = set()
    answered = asyncio.Condition()
    stop = asyncio.Event()
    try:
        await wait_http_ready(f"http://127.0.0.1:{ports['live']}/readyz", procs["publisher"])
        procs["ingest"] = await spawn("ingest", env)
        await wait_http_ready(f"http://127.0.0.1:{ports['http']}/readyz", procs["ingest"])

        async def worker(w: int) -> None:
            n = 0
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports['http']}", timeout=60
            ) as client:
                while not stop.is_set():
                    ids = [f"s-{w}-{n}-{i}" for i in range(20)]
                    n += 1
                    body = {
                        "events": [
                            {"company_id": "acme", "source_name": "api", "event_id": e} for e in ids
                        ]
                    }
                    try:
                        resp = await client.post("/v1/events", json=body)
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)  # the service is going away: pace retries
                        continue
                    if resp.status_code == 202:
                        acked.update(
                            r["event_id"]
                            for r in resp.json()["events"]
                            if r["status"] == "PUBLISHED"
                        )
                    async with answered:
                        answered.notify_all()

        async with asyncio.TaskGroup() as tg:
            for w in range(4):
                tg.create_task(worker(w))
            async with asyncio.timeout(60), answered:
                await answered.wait_for(lambda: len(acked) >= 400)
            proc = procs[victim]
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S + 20):
                code = await proc.wait()
            took = time.monotonic() - started
            stop.set()
        assert code == 0, f"{victim} exited with {code}"
        assert took < SHUTDOWN_TIMEOUT_S + 10, f"{victim} took {took:.1f}s to stop"

        records = await asyncio.to_thread(
            read_topic, kafka_broker.bootstrap, topics.p20, expect=len(acked), idle_s=1.0
        )
        in_kafka = {pb.EventData.FromString(r.value).event_id for r in records}
        missing = acked - in_kafka
        print(f"victim={victim} acked={len(acked)} in_kafka={len(in_kafka)} stop_s={took:.2f}")
        assert not missing, f"{len(missing)} acknowledged events missing: {sorted(missing)[:5]}"
    finally:
        stop.set()
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await asyncio.to_thread(delete_topics, kafka_broker.bootstrap, topics.all_topics())
