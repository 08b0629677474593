"""The write path against the real broker: lanes, record format, rollout, gating."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import SLO_SECONDS, Priority
from tests.fixtures.stack import RunningStack, StackFactory, read_topic

if TYPE_CHECKING:
    from pathlib import Path

    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka

RULES = [
    {"priority": 30, "source_name": "flow"},
    {"priority": 10, "source_name": "backfill*"},
]


async def post(stack: RunningStack, body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        return await client.post("/v1/events", json=body)


async def test_each_class_lands_on_its_topic_with_key_value_and_headers(
    write_stack: StackFactory,
) -> None:
    stack = await write_stack(ingest={"class_rules": RULES, "default_class": 20})
    events: list[dict[str, Any]] = [
        {"company_id": "acme", "source_name": "flow", "payload": {"n": 1}},
        {
            "company_id": "globex",
            "source_name": "api",
            "statistic_key": "opened",
            "payload": [1, 2],
        },
        {
            "company_id": "initech",
            "source_name": "backfill-2024",
            "payload": "x",
            "event_id": "my-id-1",
        },
    ]
    resp = await post(stack, {"events": events})
    assert resp.status_code == 202, resp.text
    results = resp.json()["events"]
    assert [r["priority"] for r in results] == ["P30", "P20", "P10"]
    assert [r["lane"] for r in results] == ["p30", "p20", "p10"]
    assert all(r["status"] == "PUBLISHED" for r in results)
    assert results[2]["event_id"] == "my-id-1"
    topics = stack.settings.topics
    expected_topics = [topics.p30, topics.p20, topics.p10]
    assert [r["topic"] for r in results] == expected_topics

    bootstrap = stack.settings.kafka.primary.bootstrap_servers
    # The three lanes are read at once: each read waits its own idle time for extras.
    per_lane = await asyncio.gather(
        *(asyncio.to_thread(read_topic, bootstrap, topic, expect=1) for topic in expected_topics)
    )
    for sent, result, records in zip(events, results, per_lane, strict=True):
        assert len(records) == 1
        rec = records[0]
        assert rec.key == sent["company_id"].encode()
        data = pb.EventData.FromString(rec.value)
        assert data.event_id == result["event_id"]
        assert data.company_id == sent["company_id"]
        assert data.source_name == sent["source_name"]
        assert data.statistic_key == sent.get("statistic_key", "")
        assert json.loads(data.payload) == sent["payload"]
        prio = Priority.parse(result["priority"])
        assert data.priority == prio.value
        assert data.slo_deadline_ms - data.ingested_at_ms == int(SLO_SECONDS[prio] * 1000)
        assert data.attempt == 0
        assert rec.headers["eventgw-event-id"] == data.event_id.encode()
        assert rec.headers["eventgw-class"] == prio.name.encode()
        assert rec.headers["eventgw-deadline-ms"] == str(data.slo_deadline_ms).encode()
        assert rec.headers["eventgw-attempt"] == b"0"
        assert rec.partition == result.get("partition", rec.partition)


async def test_rollout_share_routes_exactly_the_companies_under_it_and_hot_reloads(
    write_stack: StackFactory,
    kafka_broker: LocalBroker,
    kafka_broker_2: LocalBroker,
    tmp_path: Path,
) -> None:
    dyn = tmp_path / "dynamic.json"
    dyn.write_text(json.dumps({"event_gateway_cluster_rollout": 0}))
    stack = await write_stack(
        rollout=kafka_broker_2.bootstrap,
        publisher={"rollout_producers_enabled": True, "dynamic_config_path": dyn},
    )
    companies = [f"company-{i}" for i in range(60)]
    share = 40.0  # percent → buckets < 4000
    under = {c for c in companies if zlib.crc32(c.encode()) % 10000 < share * 100}
    assert 0 < len(under) < len(companies)  # the sample exercises both sides

    body = {"events": [{"company_id": c, "source_name": "api"} for c in companies]}
    resp = await post(stack, body)
    assert {r["cluster"] for r in resp.json()["events"]} == {"primary"}

    watcher = stack.publisher.parts.watcher
    changed = asyncio.ensure_future(watcher.wait_changed())
    dyn.write_text(json.dumps({"event_gateway_cluster_rollout": share}))
    async with asyncio.timeout(10):
        await changed
    assert watcher.current.event_gateway_cluster_rollout == share

    resp = await post(stack, body)
    assert resp.status_code == 202
    got = {
        e["company_id"]: r["cluster"]
        for e, r in zip(body["events"], resp.json()["events"], strict=True)
    }
    assert {c for c, cl in got.items() if cl == "rollout"} == under

    p20 = stack.settings.topics.p20
    on_rollout, on_primary = await asyncio.gather(  # both clusters read at once
        asyncio.to_thread(read_topic, kafka_broker_2.bootstrap, p20, expect=len(under)),
        asyncio.to_thread(
            read_topic, kafka_broker.bootstrap, p20, expect=len(companies) * 2 - len(under)
        ),
    )
    assert sorted((r.key or b"").decode() for r in on_rollout) == sorted(under)
    assert len(on_primary) == len(companies) * 2 - len(under)


async def test_invalid_dynamic_config_is_refused_and_last_good_kept(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    dyn = tmp_path / "dynamic.json"
    dyn.write_text(
        json.dumps({"gating": [{"action": "block", "source_name": "spam", "reason": "r1"}]})
    )
    stack = await write_stack(publisher={"dynamic_config_path": dyn})
    watcher = stack.publisher.parts.watcher
    changed = asyncio.ensure_future(watcher.wait_changed())
    dyn.write_text('{"event_gateway_cluster_rollout": 250}')
    async with asyncio.timeout(10):
        await changed
    assert watcher.refused == 1
    assert watcher.current.gating[0].reason == "r1"
    resp = await post(stack, {"company_id": "acme", "source_name": "spam"})
    assert resp.status_code == 403
    assert resp.json()["events"][0]["reason"] == "r1"


async def test_gating_rejects_with_reason_and_writes_nothing(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    dyn = tmp_path / "dynamic.json"
    dyn.write_text(
        json.dumps(
            {
                "gating": [
                    {"action": "allow", "source_name": "spam", "company_id": "vip"},
                    {
                        "action": "block",
                        "source_name": "spam",
                        "reason": "source spam is blocked (INC-42)",
                    },
                ]
            }
        )
    )
    stack = await write_stack(publisher={"dynamic_config_path": dyn})
    resp = await post(
        stack,
        {
            "events": [
                {"company_id": "acme", "source_name": "spam"},
                {"company_id": "vip", "source_name": "spam"},
            ]
        },
    )
    assert resp.status_code == 202
    blocked, allowed = resp.json()["events"]
    assert blocked["status"] == "REJECTED"
    assert blocked["reason"] == "source spam is blocked (INC-42)"
    assert allowed["status"] == "PUBLISHED"
    resp = await post(stack, {"company_id": "acme", "source_name": "spam"})
    assert resp.status_code == 403
    records = await asyncio.to_thread(
        read_topic, stack.settings.kafka.primary.bootstrap_servers, stack.settings.topics.p20
    )
    assert [r.key for r in records] == [b"vip"]


async def test_embedded_publisher_publishes_with_default_priority(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
    from eventgw.publisher.embedded import EmbeddedPrepPublisher
    from tests.fixtures.stack import make_settings, unique_topics

    topics = unique_topics()
    await asyncio.to_thread(
        ensure_topics, kafka_broker.bootstrap, [TopicSpec(n, 3) for n in topics.all_topics()]
    )
    settings = make_settings(primary=kafka_broker.bootstrap, topics=topics, spool_dir=tmp_path)
    p = EmbeddedPrepPublisher(settings, priority=Priority.P10)
    await p.init()
    try:
        results = await p.publish_with_result(
            [pb.EventData(event_id=f"e{i}", company_id="acme", payload=b"{}") for i in range(5)]
        )
    finally:
        await p.stop()
    assert [r.status for r in results] == [pb.PUBLISHED] * 5
    assert {r.topic for r in results} == {topics.p10}
    records = await asyncio.to_thread(read_topic, kafka_broker.bootstrap, topics.p10, expect=5)
    assert sorted(pb.EventData.FromString(r.value).event_id for r in records) == [
        f"e{i}" for i in range(5)
    ]
    await asyncio.to_thread(delete_topics, kafka_broker.bootstrap, topics.all_topics())
