"""A restarted peer is used again within about a second: no long gRPC reconnect backoff.

A fault run found ingest answering 503 for 12 s after a publisher that had been down 30 s
was ready again, and the client library's calls UNAVAILABLE for 14-15 s after an ingest
outage: gRPC's default reconnect backoff (1 s, growing 1.6 times per attempt, ±20 %) had
grown to 10-20 s. Real processes are killed with SIGKILL under a steady trickle of
requests and restarted on the same port after `OUTAGE_S`. Two things must hold:

- during the outage the channel tries again at most `BACK_WITHIN_S` apart: a listener
  takes the dead peer's port and records every connection attempt (and closes it, so each
  attempt fails as against a dead peer). gRPC's default backoff spaces its fourth and
  fifth attempts 3.3-4.9 s apart, about 9 s into an outage, so it cannot pass;
- from the moment the restarted process is ready, requests succeed within
  `BACK_WITHIN_S` (the channels' backoff is capped at 1 s: ``eventgw.grpc_options``).

Watching the attempts shows the backoff itself instead of waiting out a 30 s outage for
its effect (one restart after a long outage may land just before an attempt by luck).
The two outages (a publisher behind ingest, ingest behind the client library) are
independent, so one test runs them at once, the second `STAGGER_S` later so that the two
restarts, which are timed, do not compete for the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest

from eventgw.cli.local_procs import free_port
from eventgw.client.ingest_client import ClientEvent, EventIngestPublisher
from eventgw.core.errors import EventGwError
from eventgw.core.lifecycle import run_services
from eventgw.ingest.service import IngestService
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from tests.fixtures.procs import component_env, spawn, wait_http_ready
from tests.fixtures.stack import make_settings, unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from eventgw.config.settings import TopicSettings
    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka

OUTAGE_S = 12.0  # gRPC's default backoff has reached 3.3-4.9 s by then (module docstring)
TRICKLE_S = 0.05  # one request every 50 ms
BACK_WITHIN_S = 2.0  # the backoff cap is 1 s (+20 % jitter); the rest is margin
STAGGER_S = 5.0  # the second outage starts this much later than the first


@dataclass(frozen=True)
class Outage:
    """What one outage showed: the connection attempts' spacing, and the way back."""

    attempts: int
    """Connection attempts the channel made while the peer was down."""
    widest_gap_s: float
    """The longest time without an attempt, from the moment the port was watched until it
    was given back to the restarted peer (so no attempt at all is one wide gap)."""
    back_after_s: float
    """From the restarted peer's readiness to the first request that succeeded."""


@dataclass
class Trickle:
    """Sends one request every ``TRICKLE_S`` and records when each one succeeded."""

    send: Callable[[int], Awaitable[bool]]
    successes: list[float] = field(default_factory=list)  # monotonic completion times
    failures: int = 0
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            ok = await self.send(n)
            if ok:
                self.successes.append(time.monotonic())
            else:
                self.failures += 1
            async with self._progress:
                self._progress.notify_all()
            await asyncio.sleep(TRICKLE_S)  # pacing, not polling

    async def wait_success_after(self, t: float, timeout_s: float) -> float:
        """The first success that completed after ``t`` (monotonic)."""
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(lambda: any(s > t for s in self.successes))
        return next(s for s in self.successes if s > t)

    async def wait_failures(self, count: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(lambda: self.failures >= count)


@contextlib.asynccontextmanager
async def trickling(send: Callable[[int], Awaitable[bool]]) -> AsyncIterator[Trickle]:
    trickle = Trickle(send)
    stop = asyncio.Event()
    task = asyncio.create_task(trickle.run(stop))
    try:
        yield trickle
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


@contextlib.asynccontextmanager
async def fresh_topics(bootstrap: str) -> AsyncIterator[TopicSettings]:
    topics = unique_topics()
    await asyncio.to_thread(
        ensure_topics, bootstrap, [TopicSpec(n, 3) for n in topics.all_topics()]
    )
    try:
        yield topics
    finally:
        await asyncio.to_thread(delete_topics, bootstrap, topics.all_topics())


class Restartable:
    """``eventgw <name>`` as a child process that can be killed and started again."""

    def __init__(self, name: str, env: dict[str, str], ready_url: str) -> None:
        self.name = name
        self.env = env
        self.ready_url = ready_url
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> float:
        """Spawn it; returns the monotonic time its readiness URL first answered 200."""
        self.proc = await spawn(self.name, self.env)
        await wait_http_ready(self.ready_url, self.proc, every_s=0.02)  # finely: it is timed
        return time.monotonic()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                await self.proc.wait()


async def watch_attempts(port: int, seconds: float) -> tuple[int, float]:
    """Listen on ``port`` for ``seconds``, closing every connection at once (an attempt that
    fails); return how many came and the widest gap between them, the window's edges
    included."""
    attempts: list[float] = []

    def attempt(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(attempt, "127.0.0.1", port)
    opened = time.monotonic()
    try:
        await asyncio.sleep(seconds)  # the outage itself
    finally:
        server.close()
        await server.wait_closed()
    edges = [opened, *attempts, time.monotonic()]
    return len(attempts), max(b - a for a, b in itertools.pairwise(edges))


async def outage(peer: Restartable, port: int, trickle: Trickle) -> Outage:
    """Kill ``peer`` under the trickle, watch its ``port`` for `OUTAGE_S`, restart it."""
    await trickle.wait_success_after(0, 60)  # the path works before the outage
    await peer.kill()
    await trickle.wait_failures(trickle.failures + 5, 30)
    attempts, widest_gap_s = await watch_attempts(port, OUTAGE_S)
    ready_at = await peer.start()
    ok_at = await trickle.wait_success_after(ready_at, 60)
    return Outage(attempts, widest_gap_s, ok_at - ready_at)


async def ingest_after_a_publisher_outage(bootstrap: str, tmp_path: Path) -> Outage:
    """A publisher's outage as ingest's channel to it saw it."""
    async with fresh_topics(bootstrap) as topics:
        grpc_port, liveness_port = free_port(), free_port()
        publisher = Restartable(
            "publisher",
            component_env(
                bootstrap,
                topics,
                EVENTGW_PUBLISHER__GRPC_PORT=str(grpc_port),
                EVENTGW_PUBLISHER__LIVENESS_PORT=str(liveness_port),
                EVENTGW_PUBLISHER__METRICS_PORT="0",
                EVENTGW_BACKUP__SPOOL_DIR=str(tmp_path / "spool"),
            ),
            f"http://127.0.0.1:{liveness_port}/readyz",
        )
        settings = make_settings(
            primary=bootstrap,
            topics=topics,
            spool_dir=tmp_path / "spool",
            ingest={"publisher_target": f"127.0.0.1:{grpc_port}", "publish_timeout_s": 5.0},
        )
        ingest = IngestService(settings)
        stop_ingest, ingest_ready = asyncio.Event(), asyncio.Event()
        ingest_task = asyncio.create_task(run_services([ingest], stop_ingest, ingest_ready))
        try:
            await publisher.start()
            async with asyncio.timeout(60):
                await ingest_ready.wait()
            url = f"http://127.0.0.1:{ingest.http_port}/v1/events"
            async with httpx.AsyncClient(timeout=10) as http:

                async def post(n: int) -> bool:
                    body = {"company_id": "acme", "source_name": "api", "event_id": f"e-{n}"}
                    try:
                        return (await http.post(url, json=body)).status_code == 202
                    except httpx.TransportError:
                        return False

                async with trickling(post) as trickle:
                    return await outage(publisher, grpc_port, trickle)
        finally:
            await publisher.kill()
            stop_ingest.set()
            async with asyncio.timeout(60):
                await ingest_task


async def the_client_library_after_an_ingest_outage(bootstrap: str, tmp_path: Path) -> Outage:
    """An ingest outage as the client library's channel to it saw it."""
    async with fresh_topics(bootstrap) as topics:
        http_port, grpc_port = free_port(), free_port()
        ingest = Restartable(
            "ingest",
            component_env(
                bootstrap,
                topics,
                EVENTGW_BACKUP__SPOOL_DIR=str(tmp_path / "spool"),
                EVENTGW_INGEST__HTTP_PORT=str(http_port),
                EVENTGW_INGEST__GRPC_PORT=str(grpc_port),
                EVENTGW_INGEST__EMBEDDED_PUBLISHER="true",  # one process to kill
            ),
            f"http://127.0.0.1:{http_port}/readyz",
        )
        client = EventIngestPublisher(f"127.0.0.1:{grpc_port}", timeout_s=5)
        try:
            await ingest.start()
            await client.start()

            async def publish(n: int) -> bool:
                try:
                    await client.publish([ClientEvent("acme", "api", {"n": n})])
                except EventGwError:  # NotDurable: the service is down (no fallbacks here)
                    return False
                return True

            async with trickling(publish) as trickle:
                return await outage(ingest, grpc_port, trickle)
        finally:
            await client.close()
            await ingest.kill()


async def test_ingest_and_the_client_library_reach_a_restarted_peer_within_a_second(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    async def staggered() -> Outage:
        await asyncio.sleep(STAGGER_S)
        return await the_client_library_after_an_ingest_outage(
            kafka_broker.bootstrap, tmp_path / "ingest-outage"
        )

    async with asyncio.TaskGroup() as tg:
        behind_ingest = tg.create_task(
            ingest_after_a_publisher_outage(kafka_broker.bootstrap, tmp_path / "publisher-outage")
        )
        behind_client = tg.create_task(staggered())
    seen = {
        "ingest -> restarted publisher": behind_ingest.result(),
        "client library -> restarted ingest": behind_client.result(),
    }
    for path, o in seen.items():
        print(
            f"{path}: {o.attempts} attempts in {OUTAGE_S:.0f} s, at most "
            f"{o.widest_gap_s:.2f} s apart; OK {o.back_after_s:.2f} s after it was ready"
        )
    for path, o in seen.items():
        assert o.widest_gap_s < BACK_WITHIN_S, f"{path}: {o.widest_gap_s:.2f} s without a try"
        assert o.back_after_s < BACK_WITHIN_S, f"{path}: {o.back_after_s:.2f} s after ready"
