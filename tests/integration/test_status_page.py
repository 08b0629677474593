"""The status page (``GET /``) in a real browser: headless Chromium against a running stack.

Publisher + ingest run in-process on the test broker; ingest's dynamic config makes a company
hot at 5 events/s and raises the serious-congestion alert after two P10 decrements, so every
part of the page has something to show within seconds. The test reads the numbers from the
DOM and checks them against ``/status``, sends events and sees them counted, raises the
alert and sees the banner, stops ingest and sees the page say it is stale. The hot
companies (company ids) are on the admin port's page only: the same page on the public
port shows the same numbers and says where the companies are. The page must load nothing
but its own routes and throw no error. A screenshot (admin port) is kept:
``<pytest tmp>/status-page.png`` and ``test-artifacts/status-page.png`` (printed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import confluent_kafka
import httpx
import pytest

from eventgw.core.envelope import Priority
from eventgw.orchestrator.flow_control import Signal, encode
from tests.fixtures.browser import open_page

if TYPE_CHECKING:
    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.browser import Page
    from tests.fixtures.stack import StackFactory

pytestmark = pytest.mark.kafka

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "status-page.png"
REFRESH_MS = 250
DYNAMIC_CONFIG = {
    "aimd": {
        "alert_decrements_per_minute": 1,  # two P10 cuts raise the alert
        "classes": {
            "P10": {
                "initial": 400,
                "floor": 20,
                "ceiling": 2000,
                "increase_step": 50,
                "decrease_factor": 0.5,
                "cooldown_s": 0.1,
                "burst_s": 1,
            }
        },
    },
    "hot_tenants": {"max_rate_per_company": 5, "window_s": 10},
}
CLASS_RULES = [
    {"priority": 30, "source_name": "flow"},
    {"priority": 10, "source_name": "bulk"},
]  # anything else is P20

# Every number the page must show (per class: {c}), as paths into the /status document.
SHOWN = {
    "classes.{c}.capacity",
    "classes.{c}.decrements_last_minute",
    "classes.{c}.admitted",
    "classes.{c}.offloaded",
    "door.classes.{c}.admitted",
    "door.classes.{c}.deferred",
    "door.classes.{c}.limit_events",
    "door.in_flight_events",
    "door.max_in_flight_events",
    "door.in_flight_requests",
    "door.retry_after_ms",
    "door.refused_requests",
    "door.scale",
    "door.unloaded_ms",
    "door.held_events",
    "door.held",
    "hot_tenants.offloaded",
    "hot_tenants.demoted",
    "hot_tenants.offloaded_by_kill_switch",
    "hot_tenants.max_rate_per_company",
    "flow_control_signals",
    "pid",
}

SNAPSHOT_JS = """(() => ({
  state: document.body.dataset.state,
  alert: !document.getElementById("alert").hidden,
  stale: !document.getElementById("stale").hidden,
  classes: [...document.querySelectorAll("#classes tbody tr")].map(r => r.cells[0].textContent),
  fields: Object.fromEntries([...document.querySelectorAll("[data-field]")]
                               .map(e => [e.dataset.field, e.textContent])),
  hot: [...document.querySelectorAll("#hot tbody tr")].map(r => r.cells[0].textContent),
  rates: Object.fromEntries([...document.querySelectorAll("[data-rate]")]
                              .map(e => [e.dataset.rate, e.textContent])),
}))()"""


def refreshes(n: int) -> str:
    """JS: a promise of the detail of the n-th ``eventgw:refresh`` from now."""
    return f"""new Promise(resolve => {{
      let seen = 0;
      const on = (e) => {{
        if (++seen < {n}) return;
        document.removeEventListener("eventgw:refresh", on);
        resolve(e.detail);
      }};
      document.addEventListener("eventgw:refresh", on);
    }})"""


async def fresh_snapshot(page: Page) -> dict[str, Any]:
    """The page after a refresh that started after this call (the second one from now)."""
    async with asyncio.timeout(10):
        detail = await page.evaluate(refreshes(2))
    assert detail["ok"] is True, detail
    snapshot: dict[str, Any] = await page.evaluate(SNAPSHOT_JS)
    return snapshot


def lookup(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for key in path.split("."):
        value = value[key]
    return value


ON_ADMIN_PORT = "on the admin port (ingest.admin_port)"


def assert_page_shows(snapshot: dict[str, Any], status: dict[str, Any]) -> None:
    """Every number on the page is the one in ``status`` (as formatted: en-US, 0.1), and the
    hot companies if ``status`` lists them (the admin port), else where they are."""
    fields: dict[str, str] = snapshot["fields"]
    wanted = {p.format(c=c) for p in SHOWN for c in ("P30", "P20", "P10")}
    assert wanted <= fields.keys(), f"not on the page: {sorted(wanted - fields.keys())}"
    for path, text in fields.items():
        expected = lookup(status, path)
        assert float(text.replace(",", "")) == round(expected, 1), (path, text, expected)
    assert snapshot["alert"] is status["serious_congestion"]
    if "hot_companies" in status:
        assert snapshot["hot"] == ([h["company_id"] for h in status["hot_companies"]] or ["none"])
    else:
        assert snapshot["hot"] == [ON_ADMIN_PORT]


async def test_the_status_page_shows_status_live_in_headless_chromium(
    write_stack: StackFactory,
    kafka_broker: LocalBroker,
    chromium: Path,
    tmp_path: Path,
) -> None:
    config = tmp_path / "dynamic.json"
    config.write_text(json.dumps(DYNAMIC_CONFIG))
    stack = await write_stack(ingest={"class_rules": CLASS_RULES, "dynamic_config_path": config})
    started = time.monotonic()
    async with (
        asyncio.timeout(120),
        httpx.AsyncClient(base_url=stack.http_url, timeout=20) as client,
        httpx.AsyncClient(base_url=stack.admin_url, timeout=20) as admin,
        open_page(chromium, tmp_path / "profile") as page,
    ):

        async def status(on: httpx.AsyncClient = admin) -> dict[str, Any]:
            response = await on.get("/status")
            assert response.status_code == 200
            doc: dict[str, Any] = response.json()
            return doc

        async def post(company: str, sources: list[str]) -> None:
            events = [{"company_id": company, "source_name": s, "payload": {"i": i}}
                      for i, s in enumerate(sources)]  # fmt: skip
            response = await client.post("/v1/events", json={"events": events})
            assert response.status_code == 202, response.text

        # 1. Loaded (the admin port): live numbers, the same as /status (nothing moves yet).
        await page.goto(f"{stack.admin_url}/?refresh_ms={REFRESH_MS}")
        before = await fresh_snapshot(page)
        initial = await status()
        assert before["state"] == "live"
        assert before["classes"] == ["P30", "P20", "P10"]
        assert before["hot"] == ["none"]
        assert not before["alert"]
        assert not before["stale"]
        assert_page_shows(before, initial)

        # 2. Events: each class counted by the door; a company above 5 events/s turns hot.
        await post("acme", ["flow"] * 5 + ["api"] * 20 + ["bulk"] * 12)
        await post("floodco", ["api"] * 60)
        after = await fresh_snapshot(page)
        doc = await status()
        assert_page_shows(after, doc)
        shown = after["fields"]
        for c, n in (("P30", 5), ("P20", 80), ("P10", 12)):
            path = f"door.classes.{c}.admitted"
            assert int(shown[path].replace(",", "")) == lookup(initial, path) + n, path
        assert after["hot"] == ["floodco"]
        assert shown["hot_tenants.offloaded"] != before["fields"]["hot_tenants.offloaded"]

        # 3. Serious congestion: P10 DECREASE signals until the banner shows (bounded).
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 0, "log_level": 2}
        )
        signal = Signal(
            priority=Priority.P10,
            action="DECREASE",
            orchestrator_index=0,
            queue_depth=1000,
            oldest_ready_age_s=1.0,
            paused_lanes=frozenset({"p10"}),
            reason="paused",
        )
        alerted = after
        for _ in range(20):
            producer.produce(
                stack.settings.topics.flow_control,
                key=b"P10",
                value=encode(signal, time.time_ns() // 1_000_000),
            )
            await asyncio.to_thread(producer.flush, 10)
            alerted = await fresh_snapshot(page)
            if alerted["alert"]:
                break
        assert alerted["alert"], "the serious-congestion banner never showed"
        doc = await status()
        assert_page_shows(alerted, doc)
        assert doc["serious_congestion"] is True
        shot = await page.screenshot(tmp_path / "status-page.png")
        ARTIFACT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACT)
        print(f"\n[status page] screenshot: {shot} and {ARTIFACT}")

        # 4. The public port: the same page and numbers, no company id anywhere.
        await page.goto(f"{stack.http_url}/?refresh_ms={REFRESH_MS}")
        public_page = await fresh_snapshot(page)
        public = await status(client)
        assert "hot_companies" not in public
        assert_page_shows(public_page, public)
        assert public_page["alert"]
        html = await page.evaluate("document.body.innerText")
        assert "floodco" not in html
        assert "acme" not in html

        # 5. Ingest gone: the page says so and keeps the last numbers.
        await stack.stop()
        async with asyncio.timeout(15):
            detail = await page.evaluate(refreshes(1))
        assert detail["ok"] is False
        gone = await page.evaluate(SNAPSHOT_JS)
        assert (gone["state"], gone["stale"]) == ("stale", True)
        assert gone["fields"] == public_page["fields"]

        origins = (stack.admin_url, stack.http_url)
        assert page.requests, "the page made no request at all"
        assert all(url.startswith(origins) for url in page.requests), page.requests
        for origin in origins:
            assert f"{origin}/status" in page.requests
        assert page.errors == []
    print(f"[status page] {len(page.requests)} requests, {time.monotonic() - started:.1f}s")
