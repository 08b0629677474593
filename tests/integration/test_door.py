"""The class-aware door against the real write path: P30 taken, P10 held or deferred.

Ingest is saturated on purpose: a small events budget (``max_in_flight_events`` 40: P10 may
have 20 in flight, P30 all 40) and a P10 lane that lingers 300 ms, so P10 requests stay in
flight while others arrive. With the product's default a P10 request waits inside ingest
for room (held); with ``door_hold_ms`` 0 — or once a request has waited that long — it is
deferred with a retry hint, which the client library honours.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.client import ClientEvent, EventIngestPublisher
from eventgw.config.settings import LaneTuning
from tests.fixtures.stack import fast_lanes, read_topic

if TYPE_CHECKING:
    from tests.fixtures.stack import RunningStack, StackFactory

pytestmark = pytest.mark.kafka

CLASS_RULES = [{"priority": 30, "source_name": "flow"}, {"priority": 10, "source_name": "bulk"}]


async def saturated_stack(write_stack: StackFactory, *, hold: bool = True) -> RunningStack:
    lanes = fast_lanes()
    lanes["p10"] = LaneTuning(linger_ms=300, batch_size=1 << 20, delivery_timeout_ms=10_000)
    ingest: dict[str, Any] = {"max_in_flight_events": 40, "class_rules": CLASS_RULES}
    if not hold:
        ingest["door_hold_ms"] = 0
    return await write_stack(ingest=ingest, publisher={"lanes": lanes})


async def test_saturated_ingest_takes_p30_at_once_and_holds_p10_until_there_is_room(
    write_stack: StackFactory,
) -> None:
    stack = await saturated_stack(write_stack)
    p30, p10_waiting_then, answers, status = await p30_amid_p10(stack)
    assert p30.status_code == 202, p30.text
    assert p10_waiting_then >= 3, "P30 went through while P10 requests waited for room"
    assert [a.status_code for a in answers] == [202] * 5, "held, then taken: none deferred"
    door = status["door"]
    assert door["held"] >= 3
    assert door["held_events"] == 0
    assert door["classes"]["P10"]["deferred"] == 0
    records = await asyncio.to_thread(
        read_topic,
        stack.settings.kafka.primary.bootstrap_servers,
        stack.settings.topics.p10,
        expect=100,
    )
    assert len(records) == 100, "each held event written once"


def body(source: str, n: int, tag: str) -> dict[str, Any]:
    return {
        "events": [
            {"company_id": f"co-{i % 4}", "source_name": source, "payload": {"tag": tag, "i": i}}
            for i in range(n)
        ]
    }


async def p30_amid_p10(
    stack: RunningStack,
) -> tuple[httpx.Response, int, list[httpx.Response], dict[str, Any]]:
    """Post five P10 requests of 20 events, then one P30 request of 5 while they are in
    flight. Returns the P30 answer, how many P10 requests were still waiting when it came,
    the P10 answers and ingest's ``/status`` after all of them."""
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:

        async def post(source: str, n: int, tag: str) -> httpx.Response:
            return await client.post("/v1/events", json=body(source, n, tag))

        p10 = [asyncio.create_task(post("bulk", 20, f"b{k}")) for k in range(5)]
        await asyncio.sleep(0.1)  # the first P10 request holds the P10 share (300 ms linger)
        p30 = await post("flow", 5, "f")
        waiting = sum(not t.done() for t in p10)
        answers = await asyncio.gather(*p10)
        status: dict[str, Any] = (await client.get("/status")).json()
    return p30, waiting, answers, status


async def test_saturated_ingest_takes_p30_and_defers_p10_with_a_hint(
    write_stack: StackFactory,
) -> None:
    stack = await saturated_stack(write_stack, hold=False)
    p30, _, answers, status = await p30_amid_p10(stack)
    assert p30.status_code == 202, p30.text
    assert {e["status"] for e in p30.json()["events"]} == {"PUBLISHED"}
    deferred = [a for a in answers if a.status_code == 429]
    assert deferred, [a.status_code for a in answers]
    for a in deferred:
        doc = a.json()
        assert {e["status"] for e in doc["events"]} == {"DEFERRED"}
        assert doc["retry_after_ms"] > 0
        assert int(a.headers["retry-after"]) >= 1
    assert any(a.status_code == 202 for a in answers), "the first P10 request was taken"
    door = status["door"]
    assert door["classes"]["P10"]["deferred"] >= 20 * len(deferred)
    assert door["classes"]["P30"]["deferred"] == 0
    # What was deferred wrote nothing: the P10 topic holds only the taken requests' events.
    taken = sum(20 for a in answers if a.status_code == 202)
    records = await asyncio.to_thread(
        read_topic, stack.settings.kafka.primary.bootstrap_servers, stack.settings.topics.p10
    )
    assert len(records) == taken


async def test_the_client_library_retries_deferred_events_to_success(
    write_stack: StackFactory,
) -> None:
    stack = await saturated_stack(write_stack, hold=False)
    publisher = EventIngestPublisher(stack.ingest_grpc, timeout_s=60)
    await publisher.start()
    try:
        batches = [
            [ClientEvent(f"co-{i % 4}", "bulk", {"b": k, "i": i}) for i in range(20)]
            for k in range(8)
        ]
        urgent = [ClientEvent("vip", "flow", {"i": i}) for i in range(5)]
        bulk = [asyncio.create_task(publisher.publish(b)) for b in batches]
        await asyncio.sleep(0.1)
        urgent_results = await publisher.publish(urgent)
        deferrals_by_then = publisher.deferrals
        results = await asyncio.gather(*bulk)
    finally:
        await publisher.close()
    assert {r.status for r in urgent_results} == {"PUBLISHED"}
    assert deferrals_by_then > 0, "P10 was deferred while P30 went through"
    flat = [r for batch in results for r in batch]
    assert len(flat) == 160
    assert {r.status for r in flat} == {"PUBLISHED"}
    assert not any(r.captured_by_client for r in flat)
    assert len({r.event_id for r in flat}) == 160
    records = await asyncio.to_thread(
        read_topic,
        stack.settings.kafka.primary.bootstrap_servers,
        stack.settings.topics.p10,
        expect=160,
    )
    payloads = [json.loads(pb.EventData.FromString(r.value).payload) for r in records]
    assert sorted((d["b"], d["i"]) for d in payloads) == sorted(
        (k, i) for k in range(8) for i in range(20)
    ), "every event exactly once: deferred ones were written only when retried"
