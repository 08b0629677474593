"""``eventgw ingest`` with ``ingest.workers > 1``: several ingest processes on the same ports.

One Python process serves ingest from one thread (the GIL): on a host with spare cores, a
single ingest, and more so a co-located one (``ingest.embedded_publisher``), is bound by
that thread long before the host's CPU is used up. With ``workers = N`` this supervisor
starts N copies of the same command as child processes. Each binds the HTTP and gRPC ports
with ``SO_REUSEPORT``, so the kernel spreads new connections over them; each is a complete
ingest (and, co-located, a complete publisher with its own producers).

Supervision is deliberately simple: SIGTERM or SIGINT is passed to every worker and the
supervisor waits for them (each drains: in-flight requests finish once their events are
durable). A worker that exits on its own is a failure of the whole service: the others are
stopped the same way and the supervisor exits 1, so the deployment restarts it as a unit.

Limits: ``/metrics`` and ``/status`` answer for the worker that took the connection; the
AIMD SLO service and hot-tenant tracking run per worker (as they do per pod).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

logger = logging.getLogger(__name__)

WORKER_FLAG = "--worker"
_POLL_S = 0.2


def run_workers(count: int, argv: Sequence[str], grace_s: float = 60.0) -> int:
    """Run ``count`` copies of ``eventgw <argv> --worker`` until a signal or a worker exits.

    Returns 0 when every worker stopped cleanly after a signal, 1 otherwise.
    """
    command = [sys.executable, "-m", "eventgw.cli.main", *argv, WORKER_FLAG]
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    procs: list[subprocess.Popen[bytes]] = []
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        procs.extend(subprocess.Popen(command, stdin=subprocess.DEVNULL) for _ in range(count))
        if stopping:  # a signal came while they were being started: some did not get it
            on_signal(signal.SIGTERM, None)
        logger.info("ingest.workers started=%d pids=%s", count, [p.pid for p in procs])
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(_POLL_S)
        failed = not stopping
        if failed:
            dead = [(p.pid, p.returncode) for p in procs if p.returncode is not None]
            logger.error("ingest.worker_exited workers=%s; stopping the others", dead)
            on_signal(signal.SIGTERM, None)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("ingest.worker_kill pid=%d: no exit within %.0f s", proc.pid, grace_s)
                proc.kill()
                proc.wait()
        codes = [p.returncode for p in procs]
        logger.info("ingest.workers_stopped codes=%s", codes)
        return 1 if failed or any(codes) else 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def worker_argv() -> list[str]:
    """The arguments this process was started with (what each worker runs again)."""
    return list(sys.argv[1:])


def is_reuse_port_supported() -> bool:
    """SO_REUSEPORT exists on this platform (Linux, BSDs, macOS)."""
    return hasattr(socket, "SO_REUSEPORT") and os.name == "posix"
