"""The README's first command, end to end: ``eventgw up`` starts Kafka and the write path;
a curl-style POST is answered 202 and the record is on its topic; SIGINT stops everything
the command started, within its deadline. ``eventgw up --secure`` the same over SASL_SSL,
each component as its own principal (one cluster, to keep it short)."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import socket
import stat
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import load_settings
from eventgw.kafka.client_config import cluster_config
from eventgw.kafka.jar_cache import default_home
from tests.fixtures.stack import read_topic

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def free_port_pair() -> int:
    """A port P with P+1 also free (the local broker uses P+1 as its controller port)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def security_from(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The client properties of the login ``eventgw up --secure`` wrote to ``env_file``."""
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    for name in [n for n in os.environ if n.startswith("EVENTGW_")]:
        monkeypatch.delenv(name)
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(name, shlex.split(value)[0])
    return cluster_config(load_settings().kafka.primary)


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "secure"])
async def test_eventgw_up_serves_the_quick_start_and_stops_cleanly(tmp_path, monkeypatch, secure):
    kafka_primary, kafka_rollout = free_port_pair(), free_port_pair()
    http_port, admin_port = free_port(), free_port()
    orch_grpc, orch_status = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTGW_")}
    env.update(
        {
            "EVENTGW_KAFKA__PRIMARY__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_primary}",
            "EVENTGW_KAFKA__ROLLOUT__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_rollout}",
            "EVENTGW_INGEST__HTTP_PORT": str(http_port),
            "EVENTGW_INGEST__GRPC_PORT": str(free_port()),
            "EVENTGW_INGEST__ADMIN_PORT": str(admin_port),
            "EVENTGW_PUBLISHER__GRPC_PORT": str(free_port()),
            "EVENTGW_PUBLISHER__LIVENESS_PORT": str(free_port()),
            "EVENTGW_PUBLISHER__METRICS_PORT": str(free_port()),
            "EVENTGW_RECOVERY__METRICS_PORT": str(free_port()),
            "EVENTGW_BACKUP__SPOOL_DIR": str(tmp_path / "spool"),
            "EVENTGW_ORCHESTRATOR__METRICS_PORT": str(orch_status),
            "EVENTGW_PROCESSOR__METRICS_PORT": str(free_port()),
        }
    )
    env["EVENTGW_ORCHESTRATOR__GRPC_PORT"] = str(orch_grpc)
    env["EVENTGW_PROCESSOR__ORCHESTRATORS"] = f'["127.0.0.1:{orch_grpc}"]'
    env["EVENTGW_INGEST__PUBLISHER_TARGET"] = f"127.0.0.1:{env['EVENTGW_PUBLISHER__GRPC_PORT']}"
    data_dirs = [
        default_home() / "clusters" / f"{n}-{p}"
        for n, p in (("primary", kafka_primary), ("rollout", kafka_rollout))
    ]
    if secure:
        env["EVENTGW_KAFKA__ROLLOUT"] = "null"
        data_dirs = [default_home() / "clusters" / f"primary-{kafka_primary}-secure"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventgw.cli.main",
        "up",
        *(["--secure"] if secure else []),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        async with asyncio.timeout(180):
            assert proc.stdout is not None
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "eventgw up exited before it was up:\n" + "".join(output)
                output.append(line)
                if "eventgw is up." in line:
                    break

        async def drain() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                output.append(line.decode())

        draining = asyncio.create_task(drain())
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(
                f"http://127.0.0.1:{http_port}/v1/events",
                headers={"content-type": "application/json"},
                content=b'{"company_id":"acme","source_name":"api","payload":{"x":1}}',
            )
            assert resp.status_code == 202, resp.text
            result = resp.json()["events"][0]
            assert result["status"] == "PUBLISHED"
            assert result["priority"] == "P20"
            assert result["topic"] == "events.public.p20-events-express-v1"
            assert (await client.get(f"http://127.0.0.1:{http_port}/readyz")).status_code == 200
            metrics = (await client.get(f"http://127.0.0.1:{http_port}/metrics")).text
            assert 'eventgw_ingest_events_total{status="accepted"} 1.0' in metrics
            # Company ids (the hot companies) only on the admin port, on loopback.
            public = (await client.get(f"http://127.0.0.1:{http_port}/status")).json()
            admin = (await client.get(f"http://127.0.0.1:{admin_port}/status")).json()
            assert "hot_companies" not in public
            assert admin["hot_companies"] == []
            assert admin["door"]["classes"]["P20"]["admitted"] == 1
        security = None
        if secure:
            assert "Kafka is SASL_SSL with ACLs" in "".join(output)
            security = security_from(data_dirs[0] / "security" / "admin.env", monkeypatch)
            assert security["sasl.username"] == "eventgw-admin"
            tools = data_dirs[0] / "security" / "tools.env"
            assert "eventgw-tools" in tools.read_text()
        records = await asyncio.to_thread(
            read_topic, f"127.0.0.1:{kafka_primary}", result["topic"], expect=1, security=security
        )
        assert [pb.EventData.FromString(r.value).event_id for r in records] == [result["event_id"]]

        # The demo processor handles it: the orchestrator counts it processed.
        async with asyncio.timeout(60), httpx.AsyncClient(timeout=5) as client:
            while True:
                stats = (await client.get(f"http://127.0.0.1:{orch_status}/stats")).json()
                p20 = next(lane for lane in stats["lanes"] if lane["lane"] == "P20")
                if p20["processed"] >= 1:
                    break
                await asyncio.sleep(0.2)
        assert p20["processed"] == 1

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(90):
            code = await proc.wait()
            await draining
        assert code == 0, "".join(output)
        ports = (kafka_primary, http_port) if secure else (kafka_primary, kafka_rollout, http_port)
        for port in (*ports, admin_port):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for d in data_dirs:
            shutil.rmtree(d, ignore_errors=True)
