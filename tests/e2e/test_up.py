"""The README's first command, end to end: ``eventgw up`` starts Kafka and the write path;
a curl-style POST is answered 202 and the record is on its topic; the demo processor
handles it; the internal gRPC hops are authenticated; ``eventgw status`` shows every
component ready; every documented metric is exposed; SIGINT stops everything the command
started, within its deadline. ``eventgw up --secure`` the same over SASL_SSL, each component
as its own principal (one cluster, to keep it short)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import sys
from typing import TYPE_CHECKING, Any, get_args

import grpc
import httpx
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from eventgw.cli.local_stack import PORT_STRIDE
from eventgw.config.local_credentials import credentials_dir
from eventgw.config.settings import load_settings
from eventgw.kafka.client_config import cluster_config
from eventgw.kafka.jar_cache import default_home
from eventgw.metrics.names import MetricName
from tests.fixtures.stack import read_topic

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


async def wait_until_up(
    proc: asyncio.subprocess.Process, output: list[str], timeout_s: float
) -> asyncio.Task[None]:
    """Read ``eventgw up``'s output into ``output`` until its banner; return the task that
    keeps reading the rest (so the pipe never fills)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await stdout.readline()).decode()
            assert line, "eventgw up exited before it was up:\n" + "".join(output)
            output.append(line)
            if "eventgw is up." in line:
                break

    async def drain() -> None:
        while line := await stdout.readline():
            output.append(line.decode())

    return asyncio.create_task(drain())


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
async def test_eventgw_up_serves_the_quick_start_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secure: bool
) -> None:
    # Each local broker's controller listens on its port + 1.
    kafka_primary, kafka_rollout = free_port(also_free=[1]), free_port(also_free=[1])
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
    metric_ports = [
        http_port,
        int(env["EVENTGW_PUBLISHER__METRICS_PORT"]),
        int(env["EVENTGW_RECOVERY__METRICS_PORT"]),
        orch_status,
        int(env["EVENTGW_PROCESSOR__METRICS_PORT"]),
    ]
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
        draining = await wait_until_up(proc, output, 180)
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

        # Authenticated by default: the stack's tokens were made (0600) and passed to every
        # component; a call without them is refused.
        tokens = credentials_dir(default_home())
        assert f"{tokens}/ (0600)" in "".join(output)
        for name in ("publisher.token", "orchestrator.token"):
            assert stat.S_IMODE((tokens / name).stat().st_mode) == 0o600
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orch_grpc}") as channel:
            ask = channel.unary_unary(
                "/eventgw.v1.Orchestrator/Stats",
                request_serializer=pb.StatsRequest.SerializeToString,
                response_deserializer=pb.StatsResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await ask(pb.StatsRequest(), timeout=10)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # `eventgw status` sees every component ready, the orchestrator's attainment and the
        # demo processor's session.
        status = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventgw.cli.main",
            "status",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            status_out = (await status.communicate())[0].decode()
        assert status.returncode == 0, status_out
        lines = status_out.splitlines()
        for name in ("ingest", "publisher", "failed-writes", "processor"):
            assert any(line.split()[:2] == [name, "ready"] for line in lines), status_out
        assert any(line.split()[:3] == ["orchestrator", "0", "serving"] for line in lines)
        p20_row = next(line for line in lines if line.startswith("    P20"))
        assert p20_row.split()[-3:] == ["100.0%", "of", "1"], status_out
        assert "    worker sessions: 1" in lines, status_out

        # Every metric of metrics/names.py is exposed by some component (dashboards and
        # alerts use these names: one that nothing emits would stay empty).
        exposed: set[str] = set()
        async with httpx.AsyncClient(timeout=5) as client:
            for port in metric_ports:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                exposed |= {
                    line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")
                }
        assert set(get_args(MetricName)) - exposed == set()

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


async def test_eventgw_up_runs_a_fleet_per_cluster_and_a_migration_by_the_dynamic_config(
    tmp_path: Path,
) -> None:
    """``eventgw up --rollout-fleet --publishers 2 --processors 2``: one orchestrator per
    cluster; raising the share in the file it wrote moves new events to the rollout cluster,
    where the rollout fleet's replica processes them."""
    # Each local broker's controller listens on its port + 1.
    kafka_primary, kafka_rollout = free_port(also_free=[1]), free_port(also_free=[1])
    http_port = free_port()
    orch_status = free_port(also_free=[PORT_STRIDE])
    dynamic = tmp_path / "dynamic.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTGW_")}
    env.update(
        {
            "EVENTGW_KAFKA__PRIMARY__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_primary}",
            "EVENTGW_KAFKA__ROLLOUT__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_rollout}",
            "EVENTGW_INGEST__HTTP_PORT": str(http_port),
            "EVENTGW_INGEST__GRPC_PORT": str(free_port()),
            "EVENTGW_PUBLISHER__GRPC_PORT": str(free_port(also_free=[PORT_STRIDE])),
            "EVENTGW_PUBLISHER__LIVENESS_PORT": str(free_port(also_free=[PORT_STRIDE])),
            "EVENTGW_PUBLISHER__METRICS_PORT": str(free_port(also_free=[PORT_STRIDE])),
            "EVENTGW_PUBLISHER__DYNAMIC_CONFIG_PATH": str(dynamic),
            "EVENTGW_RECOVERY__METRICS_PORT": str(free_port()),
            "EVENTGW_BACKUP__SPOOL_DIR": str(tmp_path / "spool"),
            "EVENTGW_ORCHESTRATOR__GRPC_PORT": str(free_port(also_free=[PORT_STRIDE])),
            "EVENTGW_ORCHESTRATOR__METRICS_PORT": str(orch_status),
            "EVENTGW_PROCESSOR__METRICS_PORT": str(free_port(also_free=[PORT_STRIDE])),
        }
    )
    data_dirs = [
        default_home() / "clusters" / f"{n}-{p}"
        for n, p in (("primary", kafka_primary), ("rollout", kafka_rollout))
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventgw.cli.main",
        "up",
        "--rollout-fleet",
        "--publishers",
        "2",
        "--processors",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    url = f"http://127.0.0.1:{http_port}/v1/events"

    async def post(client: httpx.AsyncClient, companies: list[str]) -> list[dict[str, str]]:
        body = {"events": [{"company_id": c, "source_name": "api"} for c in companies]}
        resp = await client.post(url, json=body)
        assert resp.status_code == 202, resp.text
        return list(resp.json()["events"])

    async def processed(client: httpx.AsyncClient, status_port: int) -> int:
        stats = (await client.get(f"http://127.0.0.1:{status_port}/stats")).json()
        return sum(ln["processed"] for ln in stats["lanes"] if ln["lane"] in ("P30", "P20", "P10"))

    try:
        draining = await wait_until_up(proc, output, 240)
        doc = json.loads(dynamic.read_text())
        assert doc == {"event_gateway_cluster_rollout": 0, "rollout_orchestrator_indexes": [1]}
        companies = [f"company-{i}" for i in range(20)]
        async with httpx.AsyncClient(timeout=30) as client:
            before = await post(client, companies)
            assert {r["cluster"] for r in before} == {"primary"}
            doc["event_gateway_cluster_rollout"] = 100
            dynamic.write_text(json.dumps(doc))
            async with asyncio.timeout(30):  # the publishers reload the file
                # Other processes: nothing to await but their HTTP answers.
                while (await post(client, companies[:1]))[0]["cluster"] != "rollout":  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            after = await post(client, companies)
            assert {r["cluster"] for r in after} == {"rollout"}
            async with asyncio.timeout(60):  # each fleet's replica processes its cluster's
                while await processed(client, orch_status + 100) < len(after):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                while await processed(client, orch_status) < len(before):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            stats = (await client.get(f"http://127.0.0.1:{orch_status + 100}/stats")).json()
            assert (stats["index"], stats["fleet"]) == (1, "rollout")
        banner = "".join(output)
        assert "fleets: primary [0], rollout [1]" in banner
        assert "publisher 1" in banner
        assert "processor 1" in banner
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(120):
            code = await proc.wait()
            await draining
        assert code == 0, "".join(output)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for d in data_dirs:
            shutil.rmtree(d, ignore_errors=True)
