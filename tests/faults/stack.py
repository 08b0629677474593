"""The whole gateway as real processes, for the fault matrix: kill any part, restart it.

``FaultStack`` runs ``eventgw publisher``, ``ingest``, ``failed-writes``, ``orchestrator`` and
``processor`` as child processes (``tests.fixtures.procs.Component``), configured only
through ``EVENTGW_*`` variables as a deployment would be, on a topic set of their own. The
processors run ``bench.handlers:record_fixed_cost`` with every line written at once: a start
line when the handler is called, a done line when it returns, so the record files hold every
handler invocation and every completion, even of a worker killed with ``kill -9``.
"Processed" is counted from the done lines, "duplicates" from the start lines.

A stack may own its primary broker (a private ``LocalBroker``, so a scenario can kill it)
and may have a fallback cluster for the failed-writes topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from tests.fixtures.procs import REPO_ROOT, Component, component_env, wait_http_ready
from tests.fixtures.read_path import lane_topics, read_records, wait_lag_zero
from tests.fixtures.stack import fast_lanes

if TYPE_CHECKING:
    from pathlib import Path

    from eventgw.config.settings import TopicSettings
    from eventgw.kafka.local_broker import LocalBroker

SERVICES = ("publisher", "ingest", "failed-writes", "orchestrator", "processor")
"""Every component a scenario can kill, in start order (downstream first)."""

CLASS_RULES = [
    {"priority": 30, "source_name": "p30"},
    {"priority": 10, "source_name": "p10"},
]
"""Ingest's static rules (the rest is P20); the failed-writes processor classifies client
captures with the same rules, so every service gets them."""

LANE_TIMEOUT_MS = 4000
"""Producer delivery timeout of every lane: a dead broker sends events down the
failed-writes path after 4 s instead of the product's 10-30 s, so outages fit the budget."""


@dataclass(frozen=True)
class StackOptions:
    """What a scenario changes about the stack; the defaults are the plain stack."""

    fallback: str | None = None
    """Bootstrap of the cluster holding the failed-writes topic (None: the primary)."""
    backup: dict[str, str] = field(default_factory=dict)
    """``EVENTGW_BACKUP__*`` settings beside the spool directory (S3, spool_max_bytes)."""
    dynamic_config: bool = False
    """Publisher and ingest watch ``<workdir>/dynamic.json`` (written before start)."""
    handler_cost_s: float = 0.005
    concurrency: int = 16


class FaultStack:
    """The five services as processes on ``topics``; every part can be killed and restarted.

    Lifecycle: ``await start()`` (all services, ready) → scenario (``kill``, ``restart``) →
    ``await stop()`` (SIGTERM upstream first, SIGKILL after 20 s). The record files, logs,
    spool and dynamic config live under ``workdir``.
    """

    def __init__(
        self,
        primary: str,
        topics: TopicSettings,
        workdir: Path,
        options: StackOptions,
        *,
        broker: LocalBroker | None = None,
    ) -> None:
        self.primary = primary
        self.topics = topics
        self.workdir = workdir
        self.options = options
        self.broker = broker
        self.spool_dir = workdir / "spool"
        self.record_path = workdir / "handled"
        self.done_path = workdir / "done"
        self.dynamic_config_path = workdir / "dynamic.json"
        suffix = uuid.uuid4().hex[:8]
        self.orchestrator_group = f"faults-orch-{suffix}"
        self.recovery_group = f"faults-fw-{suffix}"
        self.ports = {
            "ingest_http": free_port(),
            "ingest_grpc": free_port(),
            "publisher_grpc": free_port(),
            "publisher_liveness": free_port(),
            "publisher_metrics": free_port(),
            "recovery_metrics": free_port(),
            "orchestrator_grpc": free_port(),
            "orchestrator_metrics": free_port(),
            "processor_metrics": free_port(),
        }
        env = self._env()
        self.components = {name: Component(name, env, workdir) for name in SERVICES}
        self.components["processor"].env = {
            **env,
            "EVENTGW_PROCESSOR__METRICS_PORT": str(self.ports["processor_metrics"]),
        }
        self.killed: list[str] = []
        """What the scenario killed, in order (a component name or ``broker``)."""

    @property
    def ingest_grpc(self) -> str:
        """host:port of ingest's gRPC API (the client library's target)."""
        return f"127.0.0.1:{self.ports['ingest_grpc']}"

    @property
    def failed_writes_bootstrap(self) -> str:
        """The cluster of the failed-writes topic (the client library captures there too)."""
        return self.options.fallback or self.primary

    def ready_url(self, name: str) -> str:
        """The readiness probe of component ``name``."""
        port = {
            "publisher": "publisher_liveness",
            "ingest": "ingest_http",
            "failed-writes": "recovery_metrics",
            "orchestrator": "orchestrator_metrics",
            "processor": "processor_metrics",
        }[name]
        return f"http://127.0.0.1:{self.ports[port]}/readyz"

    def metrics_url(self, name: str) -> str:
        """The Prometheus endpoint of component ``name``."""
        port = {
            "publisher": "publisher_metrics",
            "ingest": "ingest_http",
            "failed-writes": "recovery_metrics",
            "orchestrator": "orchestrator_metrics",
            "processor": "processor_metrics",
        }[name]
        return f"http://127.0.0.1:{self.ports[port]}/metrics"

    def _env(self) -> dict[str, str]:
        p = self.ports
        settings = {
            "PYTHONPATH": str(REPO_ROOT),
            "EVENTGW_BACKUP__SPOOL_DIR": str(self.spool_dir),
            "EVENTGW_INGEST__HTTP_PORT": str(p["ingest_http"]),
            "EVENTGW_INGEST__GRPC_PORT": str(p["ingest_grpc"]),
            "EVENTGW_INGEST__PUBLISHER_TARGET": f"127.0.0.1:{p['publisher_grpc']}",
            "EVENTGW_INGEST__PUBLISH_TIMEOUT_S": "30",
            "EVENTGW_INGEST__CLASS_RULES": json.dumps(CLASS_RULES),
            "EVENTGW_PUBLISHER__GRPC_PORT": str(p["publisher_grpc"]),
            "EVENTGW_PUBLISHER__LIVENESS_PORT": str(p["publisher_liveness"]),
            "EVENTGW_PUBLISHER__METRICS_PORT": str(p["publisher_metrics"]),
            "EVENTGW_PUBLISHER__LANES": json.dumps(
                {k: v.model_dump() for k, v in fast_lanes(LANE_TIMEOUT_MS).items()}
            ),
            "EVENTGW_RECOVERY__METRICS_PORT": str(p["recovery_metrics"]),
            "EVENTGW_RECOVERY__GROUP_ID": self.recovery_group,
            "EVENTGW_RECOVERY__BACKUP_SCAN_INTERVAL_S": "1",
            "EVENTGW_RECOVERY__BACKOFF_INITIAL_S": "0.2",
            "EVENTGW_RECOVERY__BACKOFF_MAX_S": "2",
            "EVENTGW_RECOVERY__DELIVERY_TIMEOUT_MS": str(LANE_TIMEOUT_MS),
            "EVENTGW_ORCHESTRATOR__GRPC_PORT": str(p["orchestrator_grpc"]),
            "EVENTGW_ORCHESTRATOR__METRICS_PORT": str(p["orchestrator_metrics"]),
            "EVENTGW_ORCHESTRATOR__GROUP_ID": self.orchestrator_group,
            "EVENTGW_ORCHESTRATOR__SHUTDOWN_TIMEOUT_S": "5",
            "EVENTGW_PROCESSOR__ORCHESTRATORS": json.dumps([f"127.0.0.1:{p['orchestrator_grpc']}"]),
            "EVENTGW_PROCESSOR__HANDLER": "bench.handlers:record_fixed_cost",
            "EVENTGW_PROCESSOR__CONCURRENCY": str(self.options.concurrency),
            "EVENTGW_PROCESSOR__SHUTDOWN_TIMEOUT_S": "5",
            "BENCH_RECORD_PATH": str(self.record_path),
            "BENCH_RECORD_FLUSH_S": "0",
            "BENCH_DONE_PATH": str(self.done_path),
            "BENCH_HANDLER_COST_S": str(self.options.handler_cost_s),
        }
        if self.options.fallback is not None:
            settings["EVENTGW_KAFKA__FALLBACK__BOOTSTRAP_SERVERS"] = self.options.fallback
        if self.options.dynamic_config:
            settings["EVENTGW_PUBLISHER__DYNAMIC_CONFIG_PATH"] = str(self.dynamic_config_path)
            settings["EVENTGW_INGEST__DYNAMIC_CONFIG_PATH"] = str(self.dynamic_config_path)
        settings.update({f"EVENTGW_BACKUP__{k.upper()}": v for k, v in self.options.backup.items()})
        return component_env(self.primary, self.topics, **settings)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every service at once and wait until all are ready.

        Order does not matter for correctness: ingest answers 503 until the publisher is up,
        processors back off until the orchestrator is. Starting them together saves seconds.
        """
        for component in self.components.values():
            await component.start()
        async with asyncio.TaskGroup() as tg:
            for name, component in self.components.items():
                tg.create_task(wait_http_ready(self.ready_url(name), component))

    async def kill(self, name: str) -> None:
        """``kill -9`` component ``name`` (or ``broker``: the private primary broker)."""
        self.killed.append(name)
        if name == "broker":
            if self.broker is None:
                raise ValueError("this stack does not own its broker")
            await asyncio.to_thread(self.broker.kill)
            return
        await self.components[name].kill9()

    async def restart(self, name: str) -> None:
        """Start component ``name`` (or ``broker``) again and wait until it is ready."""
        if name == "broker":
            if self.broker is None:
                raise ValueError("this stack does not own its broker")
            await asyncio.to_thread(self.broker.start)
            return
        component = self.components[name]
        await component.start()
        await wait_http_ready(self.ready_url(name), component)

    async def kill_and_restart(self, name: str, down_s: float) -> None:
        """``kill -9`` ``name``, leave it down ``down_s`` seconds, start it again (ready)."""
        await self.kill(name)
        await asyncio.sleep(down_s)
        await self.restart(name)

    def crashed(self) -> dict[str, str]:
        """Components that exited without being killed, with their log tails."""
        out = {}
        for name, component in self.components.items():
            proc = component.proc
            if proc is not None and proc.returncode is not None:
                out[name] = f"exit {proc.returncode}:\n{component.log_tail()}"
        return out

    async def stop(self) -> None:
        """SIGTERM upstream first (ingest first, processors last), each drains."""
        for name in ("ingest", "publisher", "failed-writes", "orchestrator", "processor"):
            await self.components[name].stop()

    # -- what happened --------------------------------------------------------------------

    def handled(self, pid: int | None = None) -> Counter[str]:
        """Handler invocations (starts) per event id, of every processor or of ``pid``."""
        return _count_ids(self.workdir, self.record_path.name, pid)

    def completed(self, pid: int | None = None) -> Counter[str]:
        """Handler completions per event id, of every processor or of ``pid``."""
        return _count_ids(self.workdir, self.done_path.name, pid)

    def lane_copies(self) -> Counter[str]:
        """Records per event id in the lanes: more than one is a duplicate of the write path
        (a capture or a client retry of an event that had in fact been written)."""
        counts: Counter[str] = Counter()
        for topic in lane_topics(self.topics):
            for record in read_records(self.primary, topic):
                event = pb.EventData()
                with contextlib.suppress(Exception):  # poison records are not events
                    event.ParseFromString(record.value)
                    if event.event_id:  # a tombstone parses as an empty event
                        counts[event.event_id] += 1
        return counts

    def backup_objects(self) -> list[str]:
        """Objects left in the local spool (S3 scenarios check their bucket themselves)."""
        return sorted(p.name for p in self.spool_dir.glob("*.egwbak"))

    async def metric(self, name: str, metric: str, **labels: str) -> float:
        """The sum of ``metric`` samples of component ``name`` matching ``labels``."""
        async with asyncio.timeout(5), httpx.AsyncClient() as client:
            text = (await client.get(self.metrics_url(name))).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(metric) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            sample, _, label_text = head.partition("{")
            if sample != metric:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    async def wait_settled(self, timeout_s: float) -> dict[str, Any]:
        """Wait until nothing is left behind: lanes and failed-writes committed, no backups.

        Returns what was checked; raises AssertionError naming what is still pending.
        """
        lanes = await wait_lag_zero(
            self.primary, self.orchestrator_group, lane_topics(self.topics), timeout_s
        )
        failed_writes = await wait_lag_zero(
            self.failed_writes_bootstrap,
            self.recovery_group,
            [self.topics.failed_writes],
            timeout_s,
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                # The spool has no change notification: look again every 0.3 s.
                while self.backup_objects():  # noqa: ASYNC110
                    await asyncio.sleep(0.3)
        left = self.backup_objects()
        assert not left, f"{len(left)} backup objects never replayed: {left[:3]}"
        copies = await asyncio.to_thread(self.lane_copies)
        return {
            "lane_lag": sum(lanes.values()),
            "failed_writes_lag": sum(failed_writes.values()),
            "lane_duplicates": sum(n - 1 for n in copies.values()),
        }


def _count_ids(workdir: Path, stem: str, pid: int | None) -> Counter[str]:
    """Lines per event id (the first field) in ``workdir/<stem>.<pid>`` files."""
    counts: Counter[str] = Counter()
    for path in workdir.glob(f"{stem}.{'*' if pid is None else pid}"):
        text = path.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line being written is not counted yet
        counts.update(line.split(",", 1)[0] for line in complete.splitlines())
    return counts
