"""Run a real single-node KRaft Apache Kafka broker on loopback, from jars fetched with Maven.

There is no Docker on the machines this project runs on, so the project starts Kafka itself:
``ensure_kafka_jars`` copies the runtime classpath of ``kafka_2.13`` from Maven Central into a
cache, and ``LocalBroker`` runs ``kafka.Kafka`` from it as one JVM that is both broker and
controller (``process.roles=broker,controller``, no ZooKeeper).

The broker is a detached process (its own session) that outlives the Python process that
started it. Its identity lives on disk, in ``<data_dir>/broker.pid``, so ``eventgw kafka stop``
can stop a broker that ``eventgw kafka start`` or a pytest session started.

This module uses the standard library only: it never imports the Kafka client, so the CLI can
start and stop brokers without loading librdkafka.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib.resources
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

logger = logging.getLogger(__name__)

KAFKA_VERSION: Final = "4.1.1"
"""The Apache Kafka release the local broker runs (override per call with ``version=``)."""

PRIMARY: Final = ("primary", 9092, 9093)
"""Name, client port and controller port of the default primary cluster."""

ROLLOUT: Final = ("rollout", 9094, 9095)
"""Name, client port and controller port of the default rollout cluster."""

STARTED_LINE: Final = "Kafka Server started"
"""The log line ``KafkaRaftServer`` writes once the broker is unfenced and serving.

In 4.1.1 it reads ``[KafkaRaftServer nodeId=1] Kafka Server started``. It comes after
``BrokerServer`` has waited for the broker to be unfenced and has opened the client listener,
so a broker that logged it accepts produce and metadata requests.
"""

_MVN_TIMEOUT_S: Final = 900.0
_FORMAT_TIMEOUT_S: Final = 120.0
_KILL_WAIT_S: Final = 30.0
_LAUNCH_TIMEOUT_S: Final = 30.0
# How often start() re-reads broker.log while waiting for STARTED_LINE. The broker is another
# process writing to a file, so there is no event to wait on; 50 ms is invisible next to the
# ~3 s a broker takes to start.
_LOG_POLL_S: Final = 0.05
_LOG_ROTATE_BYTES: Final = 20 * 1024 * 1024
_TAIL_CHARS: Final = 4000

# Run by a throwaway interpreter: argv is <log file> <java argv...>; prints the broker's pid.
# start_new_session: the broker must not receive the terminal's SIGINT meant for pytest or the CLI.
_LAUNCHER: Final = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    proc = subprocess.Popen(
        sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
print(proc.pid)
"""

_LOG4J2_PROPERTIES: Final = """\
# Written by eventgw.kafka.local_broker. Kafka's poms bring log4j2 but no configuration; without
# one log4j2 prints errors only and start() would never see the started line.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# The full config dump (~1800 lines per start) repeats server.properties; keep it out.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def default_home() -> Path:
    """Return the cache and state directory: ``$EVENTGW_HOME`` or ``~/.cache/eventgw``.

    It holds the fetched jars (``kafka-<version>/libs``) and the data of the local clusters
    (``clusters/<name>``).
    """
    # The one environment read outside cli: the jar cache must be found the same way by the CLI,
    # by pytest fixtures and by scripts, none of which share a settings object.
    home = os.environ.get("EVENTGW_HOME")
    if home:
        return Path(home).expanduser().resolve()  # mvn and java run in other directories
    return Path.home() / ".cache" / "eventgw"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Blocks until the lock is free. flock locks belong to the open file description, so the lock
    is released by the kernel if the holder dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _tail(text: str) -> str:
    return text[-_TAIL_CHARS:] if len(text) > _TAIL_CHARS else text


def ensure_kafka_jars(home: Path, version: str = KAFKA_VERSION) -> Path:
    """Return the directory holding the Kafka broker's runtime jars, fetching them if needed.

    The jars go to ``<home>/kafka-<version>/libs``. The first call runs
    ``mvn -B -q dependency:copy-dependencies`` on the pom packaged with eventgw (copied into the
    cache first) and writes a ``COMPLETE`` marker listing the jars; later calls see the marker and
    return at once, without starting Maven.

    Blocking: yes, for as long as Maven runs (seconds with a warm ``~/.m2``, up to 15 minutes
    before it gives up). Concurrent callers, in this or other processes, serialise on an
    ``flock`` of ``<home>/kafka-<version>/.lock``; only the first one runs Maven. A failed or
    interrupted fetch leaves no marker and no ``libs`` directory, so the next call retries.

    Args:
        home: The cache directory, usually ``default_home()``.
        version: The ``org.apache.kafka:kafka_2.13`` version to fetch.

    Returns:
        The libs directory, suitable for ``java -cp "<libs>/*"``.

    Raises:
        RuntimeError: ``mvn`` is not on PATH, fails, times out, or fetches no Kafka jar. The
            message carries the tail of Maven's output.
    """
    root = home / f"kafka-{version}"
    libs = root / "libs"
    marker = root / "COMPLETE"
    if marker.is_file():
        return libs
    with _file_lock(root / ".lock"):
        # Another caller may have finished the fetch while this one waited for the lock.
        if marker.is_file():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "mvn is not on PATH: it is needed once to fetch the Kafka broker jars "
                f"(org.apache.kafka:kafka_2.13:{version}) into {libs}"
            )
        pom = root / "pom.xml"
        pom.write_bytes(importlib.resources.files("eventgw.kafka").joinpath("pom.xml").read_bytes())
        # Maven writes into a scratch directory that is renamed at the end, so a half-copied
        # classpath is never mistaken for a complete one.
        partial = root / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        argv = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={version}",
        ]
        logger.info("kafka.jars.fetch version=%s dir=%s", version, libs)
        started = time.monotonic()
        try:
            result = subprocess.run(
                argv,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_MVN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output if isinstance(exc.output, str) else ""
            raise RuntimeError(
                f"mvn did not fetch Kafka {version} jars within {_MVN_TIMEOUT_S:.0f} s:\n"
                f"{_tail(output)}"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"mvn failed (exit {result.returncode}) fetching Kafka {version} jars "
                f"with {' '.join(argv)}:\n{_tail(result.stdout)}"
            )
        jars = sorted(p.name for p in partial.glob("*.jar"))
        if f"kafka_2.13-{version}.jar" not in jars:
            raise RuntimeError(
                f"mvn succeeded but {partial} has no kafka_2.13-{version}.jar:\n"
                f"{_tail(result.stdout)}"
            )
        partial.rename(libs)
        marker.write_text("\n".join(jars) + "\n", encoding="utf-8")
        logger.info(
            "kafka.jars.fetched version=%s jars=%d elapsed_s=%.1f",
            version,
            len(jars),
            time.monotonic() - started,
        )
    return libs


@dataclass(frozen=True)
class BrokerSpec:
    """Where and how one local single-node cluster runs.

    A data directory belongs to one cluster: reuse it only with the same ports, since the
    broker registers its listeners in the metadata log it keeps there.

    Attributes:
        name: A label for logs and ``status()``; it does not affect the broker.
        port: The client (PLAINTEXT) port on 127.0.0.1.
        controller_port: The KRaft controller port on 127.0.0.1.
        data_dir: Holds server.properties, broker.log, broker.pid and the Kafka logs
            (``data_dir/logs``).
        heap_mb: The JVM's maximum heap.
        extra_props: Broker properties that override or extend the defaults.
    """

    name: str
    port: int
    controller_port: int
    data_dir: Path
    heap_mb: int = 512
    extra_props: Mapping[str, str] = field(default_factory=dict)


def default_spec(name: str, home: Path) -> BrokerSpec:
    """Return the spec of a named default cluster, with its data in ``<home>/clusters/<name>``.

    Args:
        name: ``"primary"`` (ports 9092/9093) or ``"rollout"`` (ports 9094/9095).
        home: The state directory, usually ``default_home()``.

    Raises:
        ValueError: ``name`` is not a default cluster.
    """
    for known, port, controller_port in (PRIMARY, ROLLOUT):
        if name == known:
            return BrokerSpec(
                name=name,
                port=port,
                controller_port=controller_port,
                data_dir=home / "clusters" / name,
            )
    raise ValueError(f"unknown default cluster {name!r}: expected {PRIMARY[0]!r} or {ROLLOUT[0]!r}")


def _port_answers(port: int, timeout_s: float = 1.0) -> bool:
    """Return whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _escape_property(value: str) -> str:
    # java.util.Properties treats a backslash as an escape character.
    return value.replace("\\", "\\\\")


class LocalBroker:
    """One single-node KRaft Kafka cluster (broker and controller in one JVM) on loopback.

    State machine: *stopped* → ``start()`` → *running* → ``stop()`` or ``kill()`` → *stopped*.
    The state is not held by this object but on disk and in the kernel: the broker is running
    when ``<data_dir>/broker.pid`` names a live process whose command line is ``kafka.Kafka``
    with this data dir's ``server.properties``. Any number of ``LocalBroker`` objects, in any
    process, may therefore manage the same cluster: ``start()`` reuses a running broker, and
    ``stop()`` stops one that another process started.

    Invariants: the data directory is formatted once (when ``logs/meta.properties`` is absent)
    and never re-formatted, so a restart, including one after ``kill()``, keeps topics and
    records. ``start()``, ``stop()`` and ``kill()`` serialise on an ``flock`` of
    ``<data_dir>/broker.lock``, across processes.

    Resources: the broker process is detached: it is not a child of the caller, runs in its own
    session (so a Ctrl-C in the terminal does not reach it) and outlives the caller unless
    stopped. Its stdout and stderr append to ``<data_dir>/broker.log``.
    """

    def __init__(self, spec: BrokerSpec, libs: Path) -> None:
        """Describe a broker; nothing is started until ``start()``.

        Args:
            spec: Ports, data directory and JVM size.
            libs: The jar directory returned by ``ensure_kafka_jars``.
        """
        self.spec = spec
        self.libs = libs

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value for clients: ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.spec.port}"

    @property
    def log_file(self) -> Path:
        """The broker's stdout and stderr, appended across restarts."""
        return self.spec.data_dir / "broker.log"

    @property
    def _pid_file(self) -> Path:
        return self.spec.data_dir / "broker.pid"

    @property
    def _properties_file(self) -> Path:
        return self.spec.data_dir / "server.properties"

    @property
    def _log4j_file(self) -> Path:
        return self.spec.data_dir / "log4j2.properties"

    @property
    def _log_dir(self) -> Path:
        return self.spec.data_dir / "logs"

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return _file_lock(self.spec.data_dir / "broker.lock")

    def server_properties(self) -> dict[str, str]:
        """Return the broker configuration ``start()`` writes, ``extra_props`` applied last.

        Tuned for a fast single-node test cluster: replication factors and min ISR of 1, no
        initial rebalance delay, few partitions for the internal topics (so the first consumer
        group does not wait for 50 ``__consumer_offsets`` partitions), a short broker session
        (so a restart after ``kill()`` registers within seconds) and no auto-created topics, so
        a typo in a topic name fails instead of creating a topic.
        """
        port = self.spec.port
        controller_port = self.spec.controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static voter set rather than --standalone's dynamic quorum: the voter's endpoint
            # then lives in this file, not in the metadata log.
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._log_dir),
            "num.partitions": "3",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a kill -9 the restarted broker cannot register until the controller expires
            # the dead incarnation's session (DUPLICATE_BROKER_REGISTRATION): 9 s by default.
            # Loopback heartbeats inside one JVM do not need that margin.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
        }
        props.update(self.spec.extra_props)
        return props

    def _write_config(self) -> None:
        lines = [
            "# Written by eventgw.kafka.local_broker on every start; edits are overwritten.",
            *(
                f"{key}={_escape_property(value)}"
                for key, value in self.server_properties().items()
            ),
        ]
        self._properties_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._log4j_file.write_text(_LOG4J2_PROPERTIES, encoding="utf-8")

    def _java_argv(self, main_class: str, heap_mb: int) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not on PATH: the local Kafka broker needs a JDK 17+")
        return [
            java,
            f"-Xmx{heap_mb}m",
            # Serial GC: a test broker's heap is small and the machine has few cores; G1's
            # concurrent threads would compete with the tests for them.
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j_file}",
            "-cp",
            f"{self.libs}/*",
            main_class,
        ]

    def _format(self) -> None:
        """Format the empty data directory as a new single-node cluster with a random id."""
        # A Kafka cluster id is a UUID in URL-safe base64 without padding (22 characters).
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        argv = [
            *self._java_argv("kafka.tools.StorageTool", 256),
            "format",
            # One argument: a random id starting with "-" would otherwise read as an option.
            f"--cluster-id={cluster_id}",
            "--config",
            str(self._properties_file),
        ]
        logger.info(
            "kafka.broker.format name=%s cluster_id=%s dir=%s",
            self.spec.name,
            cluster_id,
            self._log_dir,
        )
        try:
            result = subprocess.run(
                argv,
                cwd=self.spec.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"kafka-storage format of {self._log_dir} took over {_FORMAT_TIMEOUT_S:.0f} s"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"kafka-storage format of {self._log_dir} failed (exit {result.returncode}):\n"
                f"{_tail(result.stdout)}"
            )

    def _is_ours(self, pid: int) -> bool:
        """Return whether ``pid`` is a live ``kafka.Kafka`` JVM running this data directory.

        Guards against signalling an unrelated process that reused the pid of a dead broker.
        A zombie has an empty command line, so it does not count as running.
        """
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in args and os.fsencode(self._properties_file) in args

    def _read_pid_file(self) -> tuple[int, int] | None:
        """Return (pid, log offset at spawn) of the running broker, or None if it is not running.

        A pid file that names a dead or foreign process is stale and is removed.
        """
        try:
            fields = self._pid_file.read_text(encoding="utf-8").split()
            pid = int(fields[0])
            offset = int(fields[1]) if len(fields) > 1 else 0
        except (OSError, ValueError, IndexError):
            return None
        if self._is_ours(pid):
            return pid, offset
        with contextlib.suppress(OSError):
            self._pid_file.unlink()
        return None

    def _write_pid_file(self, pid: int, log_offset: int) -> None:
        tmp = self._pid_file.with_suffix(".pid.tmp")
        tmp.write_text(f"{pid}\n{log_offset}\n", encoding="utf-8")
        os.replace(tmp, self._pid_file)

    def _log_tail(self, offset: int = 0) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(max(offset, log.seek(0, os.SEEK_END) - _TAIL_CHARS))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _spawn(self) -> tuple[int, int]:
        """Start the broker JVM detached and return (pid, offset of its output in broker.log)."""
        argv = [*self._java_argv("kafka.Kafka", self.spec.heap_mb), str(self._properties_file)]
        if self.log_file.exists() and self.log_file.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(self.log_file, self.log_file.with_suffix(".log.1"))
        with self.log_file.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- eventgw: starting {self.spec.name} at {stamp}\n".encode())
            log.flush()
            offset = log.tell()
        # The broker is started by a short-lived launcher so that it is not our child: it
        # outlives this process without a Popen that warns "still running" when collected, and
        # it is reaped by init rather than left a zombie until this process exits.
        try:
            launched = subprocess.run(
                [sys.executable, "-I", "-W", "ignore", "-c", _LAUNCHER, str(self.log_file), *argv],
                cwd=self.spec.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_LAUNCH_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"launching the Kafka broker {self.spec.name} hung") from exc
        if launched.returncode != 0 or not launched.stdout.strip().isdigit():
            raise RuntimeError(
                f"could not launch the Kafka broker {self.spec.name} "
                f"(exit {launched.returncode}):\n{_tail(launched.stderr)}"
            )
        pid = int(launched.stdout.strip())
        self._write_pid_file(pid, offset)
        return pid, offset

    def _wait_ready(self, pid: int, offset: int, deadline: float) -> None:
        """Block until the broker logged STARTED_LINE after ``offset`` and its port answers.

        Raises:
            RuntimeError: The broker exited first.
            TimeoutError: ``deadline`` (monotonic) passed first.
        """
        marker = STARTED_LINE.encode()
        seen = b""
        with self.log_file.open("rb") as log:
            log.seek(offset)
            while True:
                # Keep a short overlap so a line split across two reads is still found.
                seen = seen[-len(marker) :] + log.read()
                if marker in seen and _port_answers(self.spec.port):
                    return
                if not self._is_ours(pid):
                    raise RuntimeError(
                        f"Kafka broker {self.spec.name} (pid {pid}) exited during startup; "
                        f"see {self.log_file}:\n{self._log_tail(offset)}"
                    )
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"Kafka broker {self.spec.name} (pid {pid}) did not log "
                        f"{STARTED_LINE!r} in time; see {self.log_file}:\n{self._log_tail(offset)}"
                    )
                time.sleep(_LOG_POLL_S)

    def start(self, timeout_s: float = 90) -> None:
        """Start the broker, or reuse the one already running, and return once it serves.

        Formats ``data_dir/logs`` if it has no ``meta.properties`` (a new cluster with a random
        id), rewrites server.properties, launches ``java ... kafka.Kafka`` detached and waits
        until the broker logs ``STARTED_LINE`` and its client port accepts connections. If the
        pid file names a live broker for this data dir, waits for that one to be ready instead
        (idempotent: concurrent callers get the same broker).

        Blocking: yes, typically 3-5 s for a new broker. If this call spawned the broker and it
        does not become ready in time, the broker is killed before the error is raised.

        Args:
            timeout_s: The deadline for the broker to become ready (lock wait included).

        Raises:
            RuntimeError: ``java`` is missing, the format fails, the client port is taken by
                another process, or the broker exits during startup (the message carries the
                log tail).
            TimeoutError: The broker did not become ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            running = self._read_pid_file()
            if running is not None:
                pid, offset = running
                logger.info("kafka.broker.reuse name=%s pid=%d", self.spec.name, pid)
                self._wait_ready(pid, offset, deadline)
                return
            if _port_answers(self.spec.port):
                raise RuntimeError(
                    f"port {self.spec.port} for Kafka broker {self.spec.name} is already in use "
                    f"by a process that is not the broker of {self.spec.data_dir}"
                )
            self._write_config()
            if not (self._log_dir / "meta.properties").exists():
                self._format()
            started = time.monotonic()
            pid, offset = self._spawn()
            logger.info(
                "kafka.broker.spawn name=%s pid=%d bootstrap=%s",
                self.spec.name,
                pid,
                self.bootstrap,
            )
            try:
                self._wait_ready(pid, offset, deadline)
            except BaseException:
                # Never leave a half-started broker behind (and never signal a recycled pid).
                if self._is_ours(pid):
                    self._signal_and_wait(pid, signal.SIGKILL, _KILL_WAIT_S)
                self._finish_stop()
                raise
            logger.info(
                "kafka.broker.ready name=%s pid=%d bootstrap=%s elapsed_s=%.1f",
                self.spec.name,
                pid,
                self.bootstrap,
                time.monotonic() - started,
            )

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        """Block until ``pid`` exits or ``timeout_s`` passes; return whether it exited."""
        # The broker is never our child (see _spawn), so there is no waitpid; a pidfd becomes
        # readable when the process exits, which waits without polling /proc.
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            return bool(poller.poll(max(0, int(timeout_s * 1000))))
        finally:
            os.close(pidfd)

    def _signal_and_wait(self, pid: int, sig: signal.Signals, timeout_s: float) -> bool:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        return self._wait_exit(pid, timeout_s)

    def _finish_stop(self) -> None:
        with contextlib.suppress(OSError):
            self._pid_file.unlink()

    def stop(self, timeout_s: float = 30) -> None:
        """Stop the broker gracefully (SIGTERM), with SIGKILL if it outlives ``timeout_s``.

        Works on a broker started by any process (found through the pid file, and checked to be
        this data dir's ``kafka.Kafka`` before it is signalled). Does nothing if none runs.

        Blocking: until the JVM has exited, at most ``timeout_s`` plus 30 s after SIGKILL.

        Raises:
            RuntimeError: The broker survived SIGKILL.
        """
        with self._lock():
            running = self._read_pid_file()
            if running is None:
                self._finish_stop()
                return
            pid = running[0]
            logger.info("kafka.broker.stop name=%s pid=%d", self.spec.name, pid)
            if not self._signal_and_wait(pid, signal.SIGTERM, timeout_s):
                logger.warning(
                    "kafka.broker.stop_timeout name=%s pid=%d timeout_s=%.0f action=SIGKILL",
                    self.spec.name,
                    pid,
                    timeout_s,
                )
                if not self._signal_and_wait(pid, signal.SIGKILL, _KILL_WAIT_S):
                    raise RuntimeError(
                        f"Kafka broker {self.spec.name} (pid {pid}) survived SIGKILL"
                    )
            self._finish_stop()

    def kill(self) -> None:
        """Kill the broker with SIGKILL, as a crash would, and wait for it to exit.

        The data directory is left as the crash left it; the next ``start()`` recovers it.
        Does nothing if no broker runs.

        Raises:
            RuntimeError: The broker survived SIGKILL for 30 s.
        """
        with self._lock():
            running = self._read_pid_file()
            if running is None:
                self._finish_stop()
                return
            pid = running[0]
            logger.info("kafka.broker.kill name=%s pid=%d", self.spec.name, pid)
            if not self._signal_and_wait(pid, signal.SIGKILL, _KILL_WAIT_S):
                raise RuntimeError(f"Kafka broker {self.spec.name} (pid {pid}) survived SIGKILL")
            self._finish_stop()

    def is_running(self) -> bool:
        """Return whether this data directory's broker process is alive (ready or not)."""
        return self._read_pid_file() is not None

    def status(self) -> dict[str, Any]:
        """Return a snapshot for ``eventgw kafka status``.

        Returns:
            ``name``, ``bootstrap``, ``pid`` (None when stopped), ``running`` (bool),
            ``data_dir`` and ``log`` (paths as strings).
        """
        running = self._read_pid_file()
        return {
            "name": self.spec.name,
            "bootstrap": self.bootstrap,
            "pid": running[0] if running is not None else None,
            "running": running is not None,
            "data_dir": str(self.spec.data_dir),
            "log": str(self.log_file),
        }
