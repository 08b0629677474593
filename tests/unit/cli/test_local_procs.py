"""Tests for eventgw.cli.local_procs: free ports, and waiting for a child's readiness URL."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from eventgw.cli.local_procs import free_port, free_ports, http_ready, wait_http_ready

if TYPE_CHECKING:
    from collections.abc import Iterator


def _bindable(*ports: int) -> bool:
    with contextlib.ExitStack() as stack:
        try:
            for port in ports:
                stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert _bindable(*ports)


def test_a_free_port_with_offsets_has_those_ports_free_too() -> None:
    port = free_port(also_free=[1, 100])
    assert _bindable(port, port + 1, port + 100)


def test_no_ports_is_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        free_ports(0)


class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base's name)
        pass


@pytest.fixture
def ready_url() -> Iterator[str]:
    """A loopback HTTP server answering 200 to every GET."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/readyz"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child process that lives until the test ends."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with subprocess.Popen(argv) as proc:
        try:
            yield proc
        finally:
            proc.kill()


def test_http_ready_is_a_200_now(ready_url: str) -> None:
    assert http_ready(ready_url)
    assert not http_ready(f"http://127.0.0.1:{free_port()}/readyz"), "nothing listens"


def test_wait_returns_once_the_url_answers(ready_url: str, child: subprocess.Popen[bytes]) -> None:
    wait_http_ready(ready_url, child, 5)


def test_a_child_that_exits_during_start_up_fails_at_once_with_its_log() -> None:
    with (
        subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]) as proc,
        pytest.raises(RuntimeError) as info,
    ):
        wait_http_ready(
            f"http://127.0.0.1:{free_port()}/readyz",
            proc,
            30,
            name="publisher",
            log_tail=lambda: "the log",
            every_s=0.01,
        )
    assert str(info.value) == "publisher exited with 3 during start-up:\nthe log"


def test_a_child_not_ready_in_time_fails_naming_the_url(child: subprocess.Popen[bytes]) -> None:
    url = f"http://127.0.0.1:{free_port()}/readyz"
    with pytest.raises(RuntimeError, match=f"not ready at {url} after 0s"):
        wait_http_ready(url, child, 0.2, every_s=0.05)
    assert child.poll() is None
