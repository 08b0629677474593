"""Local child processes: free ports to give them, and waiting until one is ready.

The one home of these helpers: ``eventgw up`` waits for each component it starts; the
benchmarks (``bench/``) and the tests (``tests/fixtures``) import them too. The tests' asyncio
twin of `wait_http_ready` is ``tests.fixtures.procs.wait_http_ready``.

Ports: the OS picks a free port, which is closed again before the child binds it, so another
process may take it in between; the callers start at once and fail loudly if it was taken.
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterable

__all__ = ["free_port", "free_ports", "http_ready", "wait_http_ready"]

_HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    Raises:
        ValueError: ``count`` < 1.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    with contextlib.ExitStack() as stack:
        # Held open together, so the OS cannot hand out the same port twice.
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((_HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port(*, also_free: Iterable[int] = ()) -> int:
    """Return a TCP port P on 127.0.0.1 that was free a moment ago.

    Args:
        also_free: Offsets k for which P + k must be free too: for a program that derives
            more ports from one (the local broker's controller on P + 1, ``eventgw up``'s
            replicas on P + 100 n).

    Raises:
        RuntimeError: no such P was found in 50 tries.
    """
    offsets = sorted(set(also_free))
    for _ in range(50):
        [port] = free_ports(1)
        if port + (offsets[-1] if offsets else 0) > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for k in offsets:
                    stack.enter_context(socket.socket()).bind((_HOST, port + k))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port P with P + {offsets} free too")


def http_ready(url: str, timeout_s: float = 1.0) -> bool:
    """Return whether ``GET url`` answers 200 now (False on any connection error)."""
    if not url.startswith("http://"):
        raise ValueError(f"not an http URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310  (http only)
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_http_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    *,
    name: str | None = None,
    log_tail: Callable[[], str] | None = None,
    every_s: float = 0.1,
) -> None:
    """Block until ``url`` answers 200, polling every ``every_s`` (a child process has no
    readiness event to wait on).

    Args:
        url: The child's readiness URL (``/readyz``).
        proc: The child; if it exits first, waiting stops at once.
        timeout_s: How long the child may take to be ready.
        name: The child in messages (default: its ``args``).
        log_tail: The end of the child's log, appended to the messages.

    Raises:
        RuntimeError: ``proc`` exited, or was not ready within ``timeout_s``.
    """
    what = name if name is not None else repr(proc.args)

    def failure(text: str) -> RuntimeError:
        tail = log_tail() if log_tail is not None else ""
        return RuntimeError(f"{what} {text}" + (f":\n{tail}" if tail else ""))

    deadline = time.monotonic() + timeout_s
    while not http_ready(url):
        if proc.poll() is not None:
            raise failure(f"exited with {proc.returncode} during start-up")
        if time.monotonic() > deadline:
            raise failure(f"not ready at {url} after {timeout_s:.0f}s")
        time.sleep(every_s)
