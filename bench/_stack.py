"""The system under test: a private Kafka broker and the gateway as two separate processes.

``BenchBroker`` starts a single-node broker on free ports with its data in a temporary
directory (or wraps a broker the caller runs, ``--bootstrap``). ``Gateway`` runs
``eventgw publisher`` and ``eventgw ingest`` as child processes configured only through
``EVENTGW_*`` environment variables, as a deployment would, and waits for their ``/readyz``.
``CpuMeter`` reads the CPU time of those processes (and of their threads) so every scenario
can be charged what it cost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from confluent_kafka import Consumer, TopicPartition

from eventgw.cli.local_procs import free_port, free_ports, wait_http_ready
from eventgw.config.settings import TopicSettings
from eventgw.kafka.admin import TopicSpec, ensure_topics
from eventgw.kafka.broker_config import BrokerSpec
from eventgw.kafka.jar_cache import KAFKA_VERSION, default_home, ensure_kafka_jars
from eventgw.kafka.local_broker import LocalBroker

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

PARTITIONS = 3
"""Partitions of every benchmark topic (the gateway's default ``topics.partitions``)."""

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0


class BenchBroker:
    """A private broker on free ports (stopped and deleted by ``close``) or an external one."""

    def __init__(self, workdir: Path, bootstrap: str | None) -> None:
        self._broker: LocalBroker | None = None
        self.kafka_version = "external"
        if bootstrap is not None:
            self.bootstrap = bootstrap
            return
        libs = ensure_kafka_jars(default_home())
        port, controller_port = free_ports(2)
        spec = BrokerSpec("bench", port, controller_port, workdir / "kafka", heap_mb=1024)
        self._broker = LocalBroker(spec, libs)
        for attempt in range(3):
            try:
                self._broker.start()
                break
            except RuntimeError as exc:
                # LocalBroker._format passes a random base64url cluster id as a separate
                # argv item; one that starts with "-" (1 in 64) is taken for an option by
                # kafka-storage. The fresh data dir stays unformatted, so a retry draws a new id.
                if "--cluster-id" not in str(exc) or attempt == 2:
                    raise
        self.bootstrap = self._broker.bootstrap
        self.kafka_version = KAFKA_VERSION

    @property
    def pid(self) -> int | None:
        """The broker JVM's pid when this benchmark started it (its CPU is then measured)."""
        if self._broker is None:
            return None
        pid = self._broker.status()["pid"]
        return int(pid) if pid is not None else None

    def close(self) -> None:
        """Stop the private broker; an external one is left alone."""
        if self._broker is not None:
            self._broker.stop()
            self._broker = None


def bench_topics(suffix: str) -> TopicSettings:
    """The gateway's topic names with a unique suffix, so runs never share records."""
    base = TopicSettings()
    names = {k: f"{v}-bench-{suffix}" for k, v in base.model_dump().items() if k != "partitions"}
    return TopicSettings(**names, partitions=PARTITIONS)


def create_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Create ``names`` with `PARTITIONS` partitions each."""
    ensure_topics(bootstrap, [TopicSpec(n, PARTITIONS) for n in names])


class OffsetReader:
    """Reads the end offsets of topics: the proof that every acknowledged event is in Kafka."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"}
        )

    def records(self, topic: str) -> int:
        """Sum over partitions of the high watermark (records ever written; no retention here)."""
        total = 0
        for p in range(PARTITIONS):
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10, cached=False
            )
            total += high
        return total

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


@dataclass
class GatewayPorts:
    """Where the gateway processes listen."""

    http: int = field(default_factory=free_port)
    ingest_grpc: int = field(default_factory=free_port)
    publisher_grpc: int = field(default_factory=free_port)
    liveness: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    colocated_http: int = field(default_factory=free_port)
    colocated_grpc: int = field(default_factory=free_port)
    workers_http: int = field(default_factory=free_port)
    workers_grpc: int = field(default_factory=free_port)
    recovery_metrics: int = field(default_factory=free_port)


def _eventgw_argv(command: str) -> list[str]:
    if command in ("colocated", "workers"):  # ingest with the publisher embedded (see _spawn)
        command = "ingest"
    script = Path(sys.executable).with_name("eventgw")
    if script.exists():
        return [str(script), command]
    return [sys.executable, "-m", "eventgw.cli.main", command]


class Gateway:
    """``eventgw publisher`` and ``eventgw ingest`` as separate processes, configured by env."""

    def __init__(self, bootstrap: str, topics: TopicSettings, workdir: Path) -> None:
        self.ports = GatewayPorts()
        self.topics = topics
        self.spool_dir = workdir / "spool"
        self._workdir = workdir
        base = {k: v for k, v in os.environ.items() if not k.startswith("EVENTGW_")}
        if "EVENTGW_HOME" in os.environ:
            base["EVENTGW_HOME"] = os.environ["EVENTGW_HOME"]
        env = {
            "EVENTGW_KAFKA__PRIMARY__BOOTSTRAP_SERVERS": bootstrap,
            "EVENTGW_BACKUP__SPOOL_DIR": str(self.spool_dir),
            "EVENTGW_OBSERVABILITY__LOG_LEVEL": "WARNING",
            "EVENTGW_PUBLISHER__GRPC_PORT": str(self.ports.publisher_grpc),
            "EVENTGW_PUBLISHER__LIVENESS_PORT": str(self.ports.liveness),
            "EVENTGW_PUBLISHER__METRICS_PORT": str(self.ports.metrics),
            "EVENTGW_INGEST__HTTP_PORT": str(self.ports.http),
            "EVENTGW_INGEST__GRPC_PORT": str(self.ports.ingest_grpc),
            "EVENTGW_INGEST__ADMIN_PORT": "0",  # picked by the OS: each ingest its own
            "EVENTGW_INGEST__PUBLISHER_TARGET": f"127.0.0.1:{self.ports.publisher_grpc}",
            "EVENTGW_TOPICS__PARTITIONS": str(PARTITIONS),
            "EVENTGW_RECOVERY__METRICS_PORT": str(self.ports.recovery_metrics),
        }
        for key, name in topics.model_dump().items():
            if key != "partitions":
                env[f"EVENTGW_TOPICS__{key.upper()}"] = name
        self._env = {**base, **env}
        self.publisher: subprocess.Popen[bytes] | None = None
        self.ingest: subprocess.Popen[bytes] | None = None
        self.colocated: subprocess.Popen[bytes] | None = None
        self.workers: subprocess.Popen[bytes] | None = None
        self.recovery: subprocess.Popen[bytes] | None = None

    def _spawn(self, command: str, workers: int = 1) -> subprocess.Popen[bytes]:
        env = self._env
        if command == "colocated":
            env = {
                **env,
                "EVENTGW_INGEST__HTTP_PORT": str(self.ports.colocated_http),
                "EVENTGW_INGEST__GRPC_PORT": str(self.ports.colocated_grpc),
                "EVENTGW_INGEST__EMBEDDED_PUBLISHER": "true",
            }
        elif command == "workers":
            env = {
                **env,
                "EVENTGW_INGEST__HTTP_PORT": str(self.ports.workers_http),
                "EVENTGW_INGEST__GRPC_PORT": str(self.ports.workers_grpc),
                "EVENTGW_INGEST__EMBEDDED_PUBLISHER": "true",
                "EVENTGW_INGEST__WORKERS": str(workers),
            }
        log = (self._workdir / f"{command}.log").open("ab")
        with log:
            return subprocess.Popen(
                _eventgw_argv(command),
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], url: str, command: str) -> None:
        wait_http_ready(
            url,
            proc,
            _READY_TIMEOUT_S,
            name=f"eventgw {command}",
            log_tail=lambda: self.log_tail(command),
        )

    def start(self, *, colocated: bool = False, workers: int = 0, recovery: bool = False) -> None:
        """Start the publisher, then ingest (downstream first); return once both are ready.

        With ``colocated``, also a third process: ingest with the publisher embedded. With
        ``workers``, also a co-located ingest with that many worker processes. With
        ``recovery``, first the failed-writes processor (``eventgw failed-writes``), which
        replays what the publisher captured (FAILED_WRITES, BACKED_UP) into the lanes, as
        ``eventgw up`` runs it: without it an event acknowledged that way is never processed.
        """
        if recovery:
            self.recovery = self._spawn("failed-writes")
            url = f"http://127.0.0.1:{self.ports.recovery_metrics}/readyz"
            self._wait_ready(self.recovery, url, "failed-writes")
        self.publisher = self._spawn("publisher")
        self._wait_ready(
            self.publisher, f"http://127.0.0.1:{self.ports.liveness}/readyz", "publisher"
        )
        self.ingest = self._spawn("ingest")
        self._wait_ready(self.ingest, f"http://127.0.0.1:{self.ports.http}/readyz", "ingest")
        if colocated:
            self.colocated = self._spawn("colocated")
            url = f"http://127.0.0.1:{self.ports.colocated_http}/readyz"
            self._wait_ready(self.colocated, url, "colocated")
        if workers:
            self.workers = self._spawn("workers", workers)
            url = f"http://127.0.0.1:{self.ports.workers_http}/readyz"
            self._wait_ready(self.workers, url, "workers")
            # every worker must be up before a run: readyz answers as soon as one is
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while len(psutil.Process(self.workers.pid).children()) < workers or not all(
                _listening(c.pid, self.ports.workers_http)
                for c in psutil.Process(self.workers.pid).children()
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ingest workers not ready:\n{self.log_tail('workers')}")
                time.sleep(0.2)

    def start_colocated_only(self) -> None:
        """Start only the co-located ingest (the publisher embedded); return once ready."""
        self.colocated = self._spawn("colocated")
        url = f"http://127.0.0.1:{self.ports.colocated_http}/readyz"
        self._wait_ready(self.colocated, url, "colocated")

    def log_tail(self, command: str, chars: int = 3000) -> str:
        """The end of a gateway process's log."""
        with contextlib.suppress(OSError):
            return (self._workdir / f"{command}.log").read_text(errors="replace")[-chars:]
        return ""

    def spooled_bytes(self) -> int:
        """Bytes in the backup spool: anything here means an event missed its topic."""
        if not self.spool_dir.exists():
            return 0
        return sum(p.stat().st_size for p in self.spool_dir.rglob("*") if p.is_file())

    def stop(self) -> None:
        """SIGTERM upstream first (ingest, publisher, failed-writes); SIGKILL past the grace."""
        for proc in (self.workers, self.colocated, self.ingest, self.publisher, self.recovery):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_TIMEOUT_S)


def _thread_group(comm: str) -> str:
    """Collapse per-instance thread names (``rdk:broker1``, ``grpc_global_tim``) to a group."""
    return comm.split("/")[0].rstrip("0123456789-:") or comm


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds (user + system) of one process, total and per thread group."""

    total_s: float
    threads_s: dict[str, float]


def machine_busy_s() -> dict[str, float]:
    """Machine-wide CPU seconds so far: busy (all processes), steal, and CPU-pressure stall.

    ``busy`` minus what the measured processes used is the CPU that other tenants of the
    machine took during a scenario; ``pressure_some`` is the time (s) at least one runnable
    task waited for a CPU (Linux PSI), the direct measure of a noisy neighbour.
    """
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
    pressure = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        pressure = int(some.rsplit("total=", 1)[1]) / 1e6
    return {"busy": busy, "steal": getattr(t, "steal", 0.0), "pressure_some": pressure}


class CpuMeter:
    """Snapshots the CPU time of named processes; ``delta`` charges a scenario its cost."""

    def __init__(self, pids: Mapping[str, int], with_children: tuple[str, ...] = ()) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._with_children = with_children  # supervisors: their workers' CPU is theirs

    def sample(self) -> dict[str, CpuSample]:
        """CPU used so far by each process (with its children when asked), per thread group."""
        out: dict[str, CpuSample] = {"machine": CpuSample(0.0, machine_busy_s())}
        for name, parent in self._procs.items():
            total = 0.0
            threads: dict[str, float] = {}
            children = parent.children(recursive=True) if name in self._with_children else []
            for proc in (parent, *children):
                times = proc.cpu_times()
                total += times.user + times.system
                for t in proc.threads():
                    comm = _thread_comm(proc.pid, t.id)
                    group = "main" if t.id == proc.pid else _thread_group(comm)
                    threads[group] = threads.get(group, 0.0) + t.user_time + t.system_time
            out[name] = CpuSample(total, threads)
        return out

    @staticmethod
    def delta(before: dict[str, CpuSample], after: dict[str, CpuSample]) -> dict[str, CpuSample]:
        """``after - before`` per process and thread group (threads that ended count as 0)."""
        out: dict[str, CpuSample] = {}
        for name, a in after.items():
            if name == "machine":
                continue
            b = before[name]
            threads = {
                g: round(s - b.threads_s.get(g, 0.0), 4)
                for g, s in a.threads_s.items()
                if s - b.threads_s.get(g, 0.0) > 0
            }
            out[name] = CpuSample(round(a.total_s - b.total_s, 4), threads)
        return out


def _listening(pid: int, port: int) -> bool:
    """True when process ``pid`` has a listening socket on ``port``."""
    try:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            for c in psutil.Process(pid).net_connections(kind="tcp")
        )
    except psutil.Error:
        return False


def _thread_comm(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"


def remove_tree(path: Path) -> None:
    """Delete a scratch directory, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
