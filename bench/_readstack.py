"""The read path as child processes: ``eventgw orchestrator`` and ``eventgw processor`` workers.

Configured only through ``EVENTGW_*`` environment variables and the CLI flags, as a
deployment would; each gets free ports. Also: Kafka helpers the read-path benchmark needs
(committed offsets of a group, high watermarks, a preloader and a steady-rate generator of
``EventData`` records that stamps ``ingested_at_ms`` / ``slo_deadline_ms`` at produce time).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import confluent_kafka
from confluent_kafka import Consumer, TopicPartition

from bench._stack import PARTITIONS
from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port, wait_http_ready
from eventgw.core.envelope import SLO_SECONDS, Priority, event_headers, new_event_id

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from eventgw.config.settings import TopicSettings

_REPO = Path(__file__).resolve().parent.parent
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0
LANE_KEYS = ("p30", "p20", "p10", "offload")
COMPANY_ID = "acme-bench"


def base_env(bootstrap: str, topics: TopicSettings) -> dict[str, str]:
    """The parent's environment without ``EVENTGW_*``, plus broker, topics and PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTGW_")}
    if "EVENTGW_HOME" in os.environ:
        env["EVENTGW_HOME"] = os.environ["EVENTGW_HOME"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    env["EVENTGW_KAFKA__PRIMARY__BOOTSTRAP_SERVERS"] = bootstrap
    env["EVENTGW_OBSERVABILITY__LOG_LEVEL"] = "WARNING"
    env["EVENTGW_TOPICS__PARTITIONS"] = str(PARTITIONS)
    for key, name in topics.model_dump().items():
        if key != "partitions":
            env[f"EVENTGW_TOPICS__{key.upper()}"] = name
    return env


def _eventgw() -> list[str]:
    script = Path(sys.executable).with_name("eventgw")
    return [str(script)] if script.exists() else [sys.executable, "-m", "eventgw.cli.main"]


class ReadPath:
    """One orchestrator replica and ``processors`` worker processes on a topic set."""

    def __init__(
        self,
        bootstrap: str,
        topics: TopicSettings,
        workdir: Path,
        *,
        group_id: str,
        handler: str,
        processors: int,
        concurrency: int,
        orchestrator_env: Mapping[str, str] | None = None,
        processor_env: Mapping[str, str] | None = None,
        name: str = "rp",
    ) -> None:
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.group_id = group_id
        self.workdir = workdir
        self.name = name
        env = base_env(bootstrap, topics)
        self._orch_env = {
            **env,
            "EVENTGW_ORCHESTRATOR__GRPC_PORT": str(self.grpc_port),
            "EVENTGW_ORCHESTRATOR__METRICS_PORT": str(self.metrics_port),
            "EVENTGW_ORCHESTRATOR__GROUP_ID": group_id,
            **(orchestrator_env or {}),
        }
        self._proc_env = {**env, **(processor_env or {})}
        self._proc_argv = [
            *_eventgw(),
            "processor",
            "--handler",
            handler,
            "--orchestrator",
            f"127.0.0.1:{self.grpc_port}",
            "--concurrency",
            str(concurrency),
        ]
        self.n_processors = processors
        self.orchestrator: subprocess.Popen[bytes] | None = None
        self.processors: list[subprocess.Popen[bytes]] = []

    def _spawn(self, argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{self.name}-{log}.log").open("ab") as fh:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=_REPO,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self, log: str, chars: int = 3000) -> str:
        """The end of a child's log."""
        with contextlib.suppress(OSError):
            return (self.workdir / f"{self.name}-{log}.log").read_text(errors="replace")[-chars:]
        return ""

    def _wait(self, proc: subprocess.Popen[bytes], url: str, log: str) -> None:
        wait_http_ready(
            url, proc, _READY_TIMEOUT_S, name=log, log_tail=lambda: self.log_tail(log), every_s=0.05
        )

    def start_orchestrator(self) -> None:
        """Start the orchestrator and wait for its /readyz."""
        self.orchestrator = self._spawn([*_eventgw(), "orchestrator"], self._orch_env, "orch")
        self._wait(self.orchestrator, f"http://127.0.0.1:{self.metrics_port}/readyz", "orch")

    def start_processors(self) -> None:
        """Start the workers (after the orchestrator: they back off while it is away)."""
        ports = []
        for i in range(self.n_processors):
            port = free_port()
            env = {**self._proc_env, "EVENTGW_PROCESSOR__METRICS_PORT": str(port)}
            self.processors.append(self._spawn(self._proc_argv, env, f"proc{i}"))
            ports.append(port)
        for i, (proc, port) in enumerate(zip(self.processors, ports, strict=True)):
            self._wait(proc, f"http://127.0.0.1:{port}/readyz", f"proc{i}")

    def start(self) -> None:
        """Orchestrator, then processors."""
        self.start_orchestrator()
        self.start_processors()

    def pids(self) -> dict[str, int]:
        """Process ids by component name (``processor`` 0..n-1 as ``processor<i>``)."""
        out = {}
        if self.orchestrator is not None:
            out["orchestrator"] = self.orchestrator.pid
        for i, p in enumerate(self.processors):
            out[f"processor{i}"] = p.pid
        return out

    def stats(self) -> dict[str, Any]:
        """The orchestrator's ``GET /stats``."""
        url = f"http://127.0.0.1:{self.metrics_port}/stats"
        with urllib.request.urlopen(url, timeout=2) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc

    def processed(self) -> dict[str, int]:
        """ACKed tasks per lane so far."""
        return {ln["lane"]: int(ln["processed"]) for ln in self.stats().get("lanes", [])}

    def processed_total(self) -> int:
        """ACKed tasks over the classes P30+P20+P10 (offload/retry rows count them again)."""
        return sum(v for k, v in self.processed().items() if k in ("P30", "P20", "P10"))

    def stop(self) -> None:
        """SIGTERM the processors (they drain and report), then the orchestrator."""
        for group in (self.processors, [self.orchestrator]):
            for proc in group:
                if proc is not None and proc.poll() is None:
                    proc.terminate()
            for proc in group:
                if proc is None or proc.poll() is not None:
                    continue
                try:
                    proc.wait(_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(_STOP_TIMEOUT_S)


class Offsets:
    """High watermarks of topics and committed offsets of consumer groups."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets"})
        self._groups: dict[str, Consumer] = {}

    def high(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """High watermark per partition."""
        return {
            (t, p): self._c.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)[1]
            for t in topics
            for p in range(PARTITIONS)
        }

    def committed(self, group: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """Committed offset per partition of ``group`` (0 where none)."""
        c = self._groups.get(group)
        if c is None:
            c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
            self._groups[group] = c
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in c.committed(tps, timeout=10)}

    def close(self) -> None:
        """Close the consumers."""
        self._c.close()
        for c in self._groups.values():
            c.close()


def producer(bootstrap: str) -> confluent_kafka.Producer:
    """A producer like the gateway's lanes: acks=all, idempotent, small linger."""
    return confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.size": 512 << 10,
            "compression.type": "none",
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def make_event(priority: Priority, payload: bytes, now_ms: int | None = None) -> pb.EventData:
    """An ``EventData`` as ingest builds it, stamped ``now``."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return pb.EventData(
        event_id=new_event_id(),
        company_id=COMPANY_ID,
        source_name="bench",
        statistic_key="bench.read_path",
        payload=payload,
        priority=priority.value,  # type: ignore[arg-type]  # pb.Priority values are ints
        ingested_at_ms=now_ms,
        slo_deadline_ms=now_ms + int(SLO_SECONDS[priority] * 1000),
        request_id=new_event_id(),
    )


def payload_json(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    return b'{"data":"' + b"x" * (size - len(b'{"data":""}')) + b'"}'


def preload(
    bootstrap: str, topic_of: Mapping[Priority, str], counts: Mapping[Priority, int], size: int
) -> dict[str, int]:
    """Produce ``counts[p]`` records to ``topic_of[p]``; return delivered records per topic."""
    prod = producer(bootstrap)
    payload = payload_json(size)
    delivered: dict[str, int] = dict.fromkeys(topic_of.values(), 0)
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            delivered[msg.topic()] += 1
        else:
            errors.append(str(err))

    for prio, n in counts.items():
        topic = topic_of[prio]
        for _ in range(n):
            ev = make_event(prio, payload)
            while True:
                try:
                    prod.produce(
                        topic,
                        ev.SerializeToString(),
                        ev.company_id.encode(),
                        headers=_headers(ev),
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    prod.poll(0.01)
            prod.poll(0)
    prod.flush(60)
    if errors:
        raise RuntimeError(f"preload: {len(errors)} delivery errors, first: {errors[0]}")
    return delivered


class SteadyGenerator(threading.Thread):
    """Produces each class at a steady rate for ``duration_s``, stamping events when produced.

    ``rates``: events/s per priority; ``topic_of``: where each priority goes (one topic for
    all in the FIFO baseline). Produces every ``tick_s`` the events due by then, so the load is
    smooth at the 10 ms scale. ``produced`` counts delivered records per priority; ``ids``
    keeps the delivered event ids per priority (for loss checks).
    """

    def __init__(
        self,
        bootstrap: str,
        topic_of: Mapping[Priority, str],
        rates: Mapping[Priority, float],
        duration_s: float,
        payload_bytes: int,
        tick_s: float = 0.01,
    ) -> None:
        super().__init__(name="bench-generator", daemon=True)
        self._prod = producer(bootstrap)
        self._topic_of = dict(topic_of)
        self._rates = dict(rates)
        self._duration_s = duration_s
        self._payload = payload_json(payload_bytes)
        self._tick_s = tick_s
        self.produced: dict[Priority, int] = dict.fromkeys(rates, 0)
        self.ids: dict[Priority, set[str]] = {p: set() for p in rates}
        self.errors: list[str] = []
        self.lag_max_s = 0.0  # how far behind schedule the generator fell at worst
        self.elapsed_s = 0.0

    def _cb(self, prio: Priority, event_id: str) -> Any:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                self.produced[prio] += 1
                self.ids[prio].add(event_id)
            else:
                self.errors.append(str(err))

        return on_delivery

    def run(self) -> None:
        started = time.monotonic()
        sent = dict.fromkeys(self._rates, 0)
        prod = self._prod
        while True:
            now = time.monotonic()
            t = now - started
            if t >= self._duration_s:
                break
            now_ms = time.time_ns() // 1_000_000
            for prio, rate in self._rates.items():
                due = int(rate * t) - sent[prio]
                topic = self._topic_of[prio]
                for _ in range(due):
                    ev = make_event(prio, self._payload, now_ms)
                    while True:
                        try:
                            prod.produce(
                                topic,
                                ev.SerializeToString(),
                                b"acme-bench",
                                headers=_headers(ev),
                                on_delivery=self._cb(prio, ev.event_id),
                            )
                            break
                        except BufferError:
                            prod.poll(0.005)
                sent[prio] += max(due, 0)
            prod.poll(0)
            behind = time.monotonic() - now
            self.lag_max_s = max(self.lag_max_s, behind - self._tick_s)
            time.sleep(max(0.0, self._tick_s - behind))
        prod.flush(60)
        self.elapsed_s = time.monotonic() - started


def _headers(ev: pb.EventData) -> list[tuple[str, str | bytes | None]]:
    """`event_headers` typed as confluent-kafka's stubs want (lists are invariant)."""
    return list(event_headers(ev))
