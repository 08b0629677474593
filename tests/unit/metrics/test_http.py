"""The status port (metrics/http.py): routes, the scrape, and liveness from the service's loop.

A real uvicorn on a loopback port (0: a free one), driven by httpx; the blocked-loop probe
runs in a thread, since the loop it probes is the one it blocks.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from prometheus_client.metrics_core import Metric


def populated_metrics() -> Metrics:
    """A registry with each kind of family eventgw exposes, each with a sample."""
    m = Metrics()
    m.counter("eventgw_publisher_events_total", "doc", ["priority"]).labels("P30").inc(3)
    m.gauge("eventgw_publisher_in_flight_events", "doc").set(7)
    m.histogram("eventgw_publisher_publish_duration_seconds", "doc").observe(0.02)
    bulk = m.bulk_histogram("eventgw_orchestrator_ack_latency_seconds", "doc", ["class", "tier"])
    bulk.labels("P30", "normal").observe(0.5)
    m.counter_from("eventgw_ingest_events_total", "doc", ["status"], lambda: {("ok",): 5.0})
    return m


class Ready:
    """What ``is_ready`` reads."""

    value = False


Served = tuple[StatusServer, Metrics, Ready]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics, ready = populated_metrics(), Ready()
    server = StatusServer(
        "127.0.0.1", 0, metrics, lambda: ready.value, extra={"/stats": lambda: b'{"n":1}'}
    )
    await server.start()
    try:
        yield server, metrics, ready
    finally:
        await server.close()


def sample_names(families: Iterable[Metric]) -> set[str]:
    return {s.name for f in families for s in f.samples}


async def test_port_zero_is_read_back_and_the_routes_answer(served: Served) -> None:
    server, _, ready = served
    assert server.port != 0
    base = f"http://127.0.0.1:{server.port}"
    async with asyncio.timeout(5), httpx.AsyncClient(base_url=base) as client:
        health = await client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert (await client.get("/readyz")).status_code == 503
        ready.value = True
        readyz = await client.get("/readyz")
        assert (readyz.status_code, readyz.json()) == (200, {"ready": True})
        assert (await client.get("/stats")).json() == {"n": 1}
        assert (await client.get("/nope")).status_code == 404
        post = await client.post("/healthz")
        assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")
        head = await client.head("/metrics")
        assert (head.status_code, head.content) == (200, b"")


async def test_a_scrape_has_every_family_of_the_registry(served: Served) -> None:
    server, metrics, _ = served
    rendered = sample_names(text_string_to_metric_families(metrics.render().decode()))
    assert "eventgw_orchestrator_ack_latency_seconds_bucket" in rendered
    assert "eventgw_ingest_events_total" in rendered
    url = f"http://127.0.0.1:{server.port}/metrics"
    async with asyncio.timeout(5), httpx.AsyncClient() as client:
        text = await client.get(url, headers={"accept-encoding": "identity"})
        assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert sample_names(text_string_to_metric_families(text.text)) == rendered
        # What a Prometheus server asks for: OpenMetrics, gzipped. Same samples, but for
        # OpenMetrics' own `_created` of the histograms.
        scraped = await client.get(
            url,
            headers={
                "accept": "application/openmetrics-text; version=1.0.0",
                "accept-encoding": "gzip",
            },
        )
        assert scraped.headers["content-type"].startswith("application/openmetrics-text")
        assert scraped.headers["content-encoding"] == "gzip"
        # httpx decodes gzip itself.
        names = sample_names(
            openmetrics_families(scraped.text)  # type: ignore[no-untyped-call]  # untyped parser
        )
        assert names - {n for n in names if n.endswith("_created")} == {
            n for n in rendered if not n.endswith("_created")
        }


async def test_healthz_stops_answering_while_the_loop_is_blocked(served: Served) -> None:
    server, _, _ = served
    url = f"http://127.0.0.1:{server.port}/healthz"
    probed = threading.Event()

    def probe() -> str:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return str(resp.status)
        except TimeoutError:
            return "timed out"
        finally:
            probed.set()

    loop = asyncio.get_running_loop()
    answer = loop.run_in_executor(None, probe)
    # Block this loop (the server's) until the probe gave up: what a stuck service does.
    assert probed.wait(5)  # blocking the loop is the point of this test
    assert await answer == "timed out"
    # The loop runs again: so does the probe.
    assert await loop.run_in_executor(None, probe) == "200"


async def test_a_busy_port_fails_at_start() -> None:
    metrics = Metrics()
    first = StatusServer("127.0.0.1", 0, metrics, lambda: True)
    await first.start()
    try:
        second = StatusServer("127.0.0.1", first.port, metrics, lambda: True)
        with pytest.raises(OSError, match="in use"):
            await second.start()
        await second.close()  # nothing started: a no-op
    finally:
        await first.close()


async def test_close_stops_listening() -> None:
    server = StatusServer("127.0.0.1", 0, Metrics(), lambda: True)
    await server.start()
    await server.close()
    async with asyncio.timeout(5), httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{server.port}/healthz")
