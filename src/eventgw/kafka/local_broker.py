"""Run a real single-node KRaft Apache Kafka broker on loopback, as a detached process.

``LocalBroker`` runs ``kafka.Kafka`` from the jars of `eventgw.kafka.jar_cache` as one JVM
that is both broker and controller (``process.roles=broker,controller``, no ZooKeeper), with
the configuration of `eventgw.kafka.broker_config`. This module manages the process: format,
spawn, wait until ready, stop, kill, status.

The broker is a detached process (its own session) that outlives the Python process that
started it. Its identity lives on disk, in ``<data_dir>/broker.pid``, so ``eventgw kafka stop``
can stop a broker that ``eventgw kafka start`` or a pytest session started.

This module uses the standard library only: it never imports the Kafka client, so the CLI can
start and stop brokers without loading librdkafka.
"""

from __future__ import annotations

import base64
import contextlib
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from eventgw.kafka.broker_config import LOG4J2_PROPERTIES, render_properties, server_properties
from eventgw.kafka.jar_cache import file_lock
from eventgw.kafka.local_security import ADMIN_USER, LocalCredentials

if TYPE_CHECKING:
    from collections.abc import Mapping

    from eventgw.kafka.broker_config import BrokerSpec

logger = logging.getLogger(__name__)

STARTED_LINE: Final = "Kafka Server started"
"""The log line ``KafkaRaftServer`` writes once the broker is unfenced and serving.

In 4.1.1 it reads ``[KafkaRaftServer nodeId=1] Kafka Server started``. It comes after
``BrokerServer`` has waited for the broker to be unfenced and has opened the client listener,
so a broker that logged it accepts produce and metadata requests.
"""

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


def _tail(text: str) -> str:
    return text[-_TAIL_CHARS:]


def _port_answers(port: int, timeout_s: float = 1.0) -> bool:
    """Return whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


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
    records. A secured cluster (``spec.security``) gets its TLS files and SCRAM users at that
    format (`credentials`); they, and the ACLs created later, survive restarts too.
    ``start()``, ``stop()`` and ``kill()`` serialise on an ``flock`` of
    ``<data_dir>/broker.lock``, across processes.

    Resources: the broker process is detached: it is not a child of the caller, runs in its own
    session (so a Ctrl-C in the terminal does not reach it) and outlives the caller unless
    stopped. Its stdout and stderr append to ``<data_dir>/broker.log``.
    """

    def __init__(self, spec: BrokerSpec, libs: Path) -> None:
        """Describe a broker; nothing is started until ``start()``.

        Args:
            spec: Ports, data directory and JVM size.
            libs: The jar directory returned by `eventgw.kafka.jar_cache.ensure_kafka_jars`.
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

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.spec.data_dir / "broker.lock")

    @property
    def credentials(self) -> LocalCredentials:
        """The TLS files and SCRAM passwords of a secured cluster (`local_security`)."""
        return LocalCredentials(self.spec.security_dir)

    def _prepare_security(self, formatted: bool) -> dict[str, str]:
        """Create what a secured cluster lacks; return the SCRAM users the format must create.

        Raises:
            RuntimeError: The data directory was formatted without some of the users (or as
                a PLAINTEXT cluster): users are created only when a cluster is formatted.
        """
        security = self.spec.security
        if security is None:
            return {}
        credentials = self.credentials
        credentials.ensure_tls()
        if not formatted:
            return credentials.create_users(security.users)
        missing = sorted(set(security.users) - set(credentials.passwords()))
        if missing:
            raise RuntimeError(
                f"the Kafka cluster {self.spec.name} in {self.spec.data_dir} was formatted "
                f"without the SCRAM users {missing}: use another data directory"
            )
        return {}

    def _write_config(self) -> None:
        admin_password = (
            None if self.spec.security is None else self.credentials.password(ADMIN_USER)
        )
        text = render_properties(server_properties(self.spec, admin_password))
        # 0600 before the first byte: a secured broker's properties hold the admin password.
        fd = os.open(self.spec.properties_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            os.fchmod(fd, 0o600)
            out.write(text)
        self.spec.log4j_file.write_text(LOG4J2_PROPERTIES, encoding="utf-8")

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
            f"-Dlog4j2.configurationFile={self.spec.log4j_file}",
            "-cp",
            f"{self.libs}/*",
            main_class,
        ]

    def _format(self, scram_users: Mapping[str, str]) -> None:
        """Format the empty data directory as a new single-node cluster with a random id.

        Args:
            scram_users: SCRAM-SHA-512 users (name → password) the cluster starts with.
        """
        # A Kafka cluster id is a UUID in URL-safe base64 without padding (22 characters).
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        argv = [
            *self._java_argv("kafka.tools.StorageTool", 256),
            "format",
            # One argument: a random id starting with "-" would otherwise read as an option.
            f"--cluster-id={cluster_id}",
            "--config",
            str(self.spec.properties_file),
            # kafka-storage takes SCRAM passwords on its command line only; the formatter lives
            # about two seconds, and the passwords are for a loopback test cluster.
            *(
                f"--add-scram=SCRAM-SHA-512=[name={user},password={password}]"
                for user, password in scram_users.items()
            ),
        ]
        logger.info(
            "kafka.broker.format name=%s cluster_id=%s dir=%s",
            self.spec.name,
            cluster_id,
            self.spec.log_dir,
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
                f"kafka-storage format of {self.spec.log_dir} took over {_FORMAT_TIMEOUT_S:.0f} s"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"kafka-storage format of {self.spec.log_dir} failed (exit {result.returncode}):\n"
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
        return b"kafka.Kafka" in args and os.fsencode(self.spec.properties_file) in args

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
        argv = [*self._java_argv("kafka.Kafka", self.spec.heap_mb), str(self.spec.properties_file)]
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
        id; a secured one gets its CA, certificate and SCRAM users first), rewrites
        server.properties, launches ``java ... kafka.Kafka`` detached and waits
        until the broker logs ``STARTED_LINE`` and its client port accepts connections. If the
        pid file names a live broker for this data dir, waits for that one to be ready instead
        (idempotent: concurrent callers get the same broker).

        Blocking: yes, typically 3-5 s for a new broker. If this call spawned the broker and it
        does not become ready in time, the broker is killed before the error is raised.

        Args:
            timeout_s: The deadline for the broker to become ready (lock wait included).

        Raises:
            RuntimeError: ``java`` is missing, the format fails, the client port is taken by
                another process, the broker exits during startup (the message carries the
                log tail), or a secured spec names SCRAM users its formatted data directory
                lacks.
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
            formatted = (self.spec.log_dir / "meta.properties").exists()
            scram_users = self._prepare_security(formatted)
            self._write_config()
            if not formatted:
                self._format(scram_users)
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
            ``name``, ``bootstrap``, ``security_protocol`` (``PLAINTEXT`` or ``SASL_SSL``),
            ``pid`` (None when stopped), ``running`` (bool), ``data_dir`` and ``log`` (paths
            as strings).
        """
        running = self._read_pid_file()
        return {
            "name": self.spec.name,
            "bootstrap": self.bootstrap,
            "security_protocol": "PLAINTEXT" if self.spec.security is None else "SASL_SSL",
            "pid": running[0] if running is not None else None,
            "running": running is not None,
            "data_dir": str(self.spec.data_dir),
            "log": str(self.log_file),
        }
