"""RabbitMQ baseline for the overload benchmark: Debian's ``rabbitmq-server`` on loopback.

- `RabbitServer`: a private node on free ports with its data in a scratch directory, started
  from ``/usr/lib/rabbitmq/bin/rabbitmq-server`` (as the current user, no ``su``), stopped
  and deleted by ``stop``. The distribution is started by the VM itself (``-sname``) so the
  prelaunch port probe, which fails under some sandboxes (gVisor answers ``eaddrinuse`` to a
  ``SO_REUSEADDR`` listen on a free port), is skipped.
- `declare_queue`: a durable classic queue with ``x-max-priority`` = 3.
- ``python -m bench.rabbit consume URL QUEUE CONCURRENCY``: a consumer process with manual
  acks and ``prefetch_count = CONCURRENCY``, each message run through the same handler as
  the gateway's processors (``bench.handlers.record_fixed_cost``), then acked.

Message body: ``event_id,priority,company,ingested_at_ms`` (ASCII); priority P30→3, P20→2,
P10→1 as the AMQP priority; persistent delivery mode; the publisher waits for the confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aio_pika

from eventgw.cli.local_procs import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
AMQP_PRIORITY = {30: 3, 20: 2, 10: 1}
_READY_TIMEOUT_S = 90.0


class RabbitServer:
    """A private RabbitMQ node on free ports (``stop`` kills it and deletes its data)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / "rabbit"
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"bench{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The AMQP URL (default guest user, allowed on loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> None:
        """Start the node and wait until it accepts AMQP connections."""
        if not SERVER.exists():
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        d = self.workdir
        (d / "mnesia").mkdir(parents=True, exist_ok=True)
        (d / "log").mkdir(parents=True, exist_ok=True)
        (d / "enabled_plugins").write_text("[].\n")
        env = {
            **os.environ,
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-sname {self.node}",
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_FEATURE_FLAGS_FILE": str(d / "mnesia" / "feature_flags"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "none"),
        }
        with (d / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(SERVER)],
                env=env,
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"rabbitmq-server not ready:\n{self.log_tail()}")
            if "Server startup complete" in self.log_tail(20000):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=1),
                ):
                    return
            time.sleep(0.25)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's log."""
        with contextlib.suppress(OSError):
            return (self.workdir / "server.log").read_text(errors="replace")[-chars:]
        return ""

    def pid(self) -> int | None:
        """The beam.smp pid (a child of the start script), for CPU accounting."""
        if self.proc is None:
            return None
        with contextlib.suppress(Exception):
            import psutil

            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if child.name().startswith("beam"):
                    return int(child.pid)
        return None

    def stop(self) -> None:
        """Kill the node's process group (it was started in its own session)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.workdir / "mnesia", ignore_errors=True)


async def declare_queue(
    channel: aio_pika.abc.AbstractChannel, name: str
) -> aio_pika.abc.AbstractQueue:
    """The durable priority queue (3 levels)."""
    return await channel.declare_queue(name, durable=True, arguments={"x-max-priority": 3})


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    """Ready messages in the queue now (a passive declare on the underlying channel: the
    aio-pika ``declare_queue`` object caches its first answer)."""
    raw = await channel.get_underlay_channel()
    ok = await raw.queue_declare(name, passive=True)
    return int(ok.message_count or 0)


async def consume(url: str, queue_name: str, concurrency: int) -> None:
    """Consume until SIGTERM: manual ack after the handler, prefetch = concurrency."""
    from bench import handlers
    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    conn = await aio_pika.connect_robust(url)
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=concurrency)
    queue = await declare_queue(channel, queue_name)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event_id, prio, _company, ingested = message.body.decode().split(",")
        ev = pb.EventData(
            event_id=event_id,
            priority=pb.Priority.ValueType(int(prio)),
            ingested_at_ms=int(ingested),
        )
        await handlers.record_fixed_cost(ev)
        await message.ack()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        t = asyncio.create_task(handle(message))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    await queue.consume(on_message, no_ack=False)
    await stop.wait()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    await channel.close()
    await conn.close()
    handlers._flush()


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "consume":
        sys.exit("usage: python -m bench.rabbit consume URL QUEUE CONCURRENCY")
    asyncio.run(consume(sys.argv[2], sys.argv[3], int(sys.argv[4])))
