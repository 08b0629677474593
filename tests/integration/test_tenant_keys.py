"""Tenant-bound API keys against a real ingest + publisher + Kafka.

A key writes only its companies, sources and classes: inside the grant → 202 / OK and the
events are in their lanes; one event outside it → 403 / PERMISSION_DENIED naming the field,
and nothing of that request is written — checked by consuming every lane and the
failed-writes topic of the stack, where each accepted event id must be exactly once and no
refused one at all. No key or a wrong one → 401 / UNAUTHENTICATED. One tenant's key comes
from settings, the other's from a keys file, as from a mounted Secret.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
import pytest_asyncio

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.client import ClientEvent, EventIngestPublisher, IngestHttpClient
from eventgw.config.ingest_security import key_digest
from eventgw.core.errors import PermissionDenied, Unauthenticated
from tests.fixtures.stack import make_settings, read_topic, topics_and_stack, unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.stack import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

ACME_KEY = "acme-" + uuid.uuid4().hex
GLOBEX_KEY = "globex-" + uuid.uuid4().hex
ACME = {
    "tenant": "acme",
    "key_sha256": key_digest(ACME_KEY),
    "company_ids": ["acme", "acme-eu"],
    "source_names": ["api", "checkout", "bulk"],
    "classes": ["P20", "P10"],
}
CLASS_RULES = [{"priority": 30, "source_name": "checkout"}, {"priority": 10, "source_name": "bulk"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    tmp = tmp_path_factory.mktemp("keys")
    keys_file = tmp / "keys.toml"
    keys_file.write_text(
        f'[[keys]]\ntenant = "globex"\nkey_sha256 = "{key_digest(GLOBEX_KEY)}"\n'
        'company_ids = ["globex"]\n'
    )
    topics = unique_topics()
    settings = make_settings(
        primary=kafka_broker.bootstrap,
        topics=topics,
        spool_dir=tmp / "spool",
        ingest={
            "tenant_keys": [ACME],
            "tenant_keys_file": keys_file,
            "class_rules": CLASS_RULES,
        },
    )
    async with topics_and_stack(kafka_broker.bootstrap, settings) as running:
        yield running


async def written_ids(stack: RunningStack) -> list[str]:
    """Event ids of every record in the stack's lanes and failed-writes topic."""
    bootstrap = stack.settings.kafka.primary.bootstrap_servers
    t = stack.settings.topics
    topics = [t.p30, t.p20, t.p10, t.offload, t.failed_writes]
    read = await asyncio.gather(
        *(asyncio.to_thread(read_topic, bootstrap, topic, expect=None) for topic in topics)
    )
    return [pb.EventData.FromString(r.value).event_id for records in read for r in records]


def ev(company: str = "acme", source: str = "api", **extra: Any) -> dict[str, Any]:
    return {"company_id": company, "source_name": source, "event_id": uuid.uuid4().hex, **extra}


async def post(client: httpx.AsyncClient, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["x-api-key"] = key
    return await client.post("/v1/events", content=json.dumps(body), headers=headers)


def ids(body: dict[str, Any]) -> list[str]:
    events = body.get("events", [body])
    return [e["event_id"] for e in events]


async def test_http_writes_inside_the_grant_and_refuses_outside_it(stack: RunningStack) -> None:
    allowed = [
        {"events": [ev(), ev("acme-eu", "bulk"), ev(statistic_key="s")]},  # P20, P10, P20
        ev("acme-eu"),  # the single-event form
        {"events": [ev("globex", "anything")]},  # with the globex key (from the file)
    ]
    refused: list[tuple[dict[str, Any], str, str]] = [
        ({"events": [ev(), ev("globex")]}, ACME_KEY, "events[1].company_id"),
        ({"events": [ev(), ev(), ev(source="web")]}, ACME_KEY, "events[2].source_name"),
        ({"events": [ev(source="checkout"), ev()]}, ACME_KEY, "events[0].class"),
        (ev("globex"), ACME_KEY, "events[0].company_id"),
        ({"events": [ev("globex"), ev("acme")]}, GLOBEX_KEY, "events[1].company_id"),
    ]
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        accepted: list[str] = []
        for body, key in zip(allowed, (ACME_KEY, ACME_KEY, GLOBEX_KEY), strict=True):
            resp = await post(client, body, key)
            assert resp.status_code == 202, resp.text
            assert {e["status"] for e in resp.json()["events"]} == {"PUBLISHED"}
            accepted += ids(body)
        for body, key, field in refused:
            resp = await post(client, body, key)
            assert resp.status_code == 403, resp.text
            error = resp.json()["error"]
            assert (error["code"], error["field"]) == ("permission_denied", field)
            assert "nothing of the request was written" in error["message"]
        for bad_key in (None, "wrong", ACME_KEY[:-1]):
            resp = await post(client, {"events": [ev()]}, bad_key)
            assert resp.status_code == 401, resp.text
            assert resp.json()["error"]["field"] == "authorization"
        metrics = (await client.get("/metrics")).text
    written = await written_ids(stack)
    assert sorted(i for i in written if i in accepted) == sorted(accepted), "each exactly once"
    never = {i for body, _, _ in refused for i in ids(body)}
    assert not never & set(written), "a refused request wrote something"
    assert 'eventgw_ingest_permission_denied_total{field="company_id"} 3.0' in metrics


async def test_grpc_and_the_client_library_refuse_the_same(stack: RunningStack) -> None:
    outside = pb.IngestRequest(
        events=[
            pb.IngestEvent(company_id="acme", source_name="api", event_id=uuid.uuid4().hex),
            pb.IngestEvent(company_id="initech", source_name="api", event_id=uuid.uuid4().hex),
        ]
    )
    async with grpc.aio.insecure_channel(stack.ingest_grpc) as channel:
        stub = pb_grpc.IngestServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ingest(outside, metadata=(("x-api-key", ACME_KEY),), timeout=30)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (info.value.details() or "").startswith("events[1].company_id: company 'initech'")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ingest(outside, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    refused_ids = [e.event_id for e in outside.events]
    accepted: list[str] = []
    grpc_client = EventIngestPublisher(stack.ingest_grpc, api_key=ACME_KEY, timeout_s=30)
    await grpc_client.start()
    try:
        checkout = ClientEvent("acme", "checkout", {"n": 1}, event_id=uuid.uuid4().hex)
        refused_ids.append(checkout.event_id or "")
        with pytest.raises(PermissionDenied) as denied:
            await grpc_client.publish([ClientEvent("acme", "api", 1), checkout])
        assert (denied.value.field, denied.value.index) == ("events[1].class", 1)
        results = await grpc_client.publish([ClientEvent("acme-eu", "bulk", {"n": 2})])
        assert [r.status for r in results] == ["PUBLISHED"]
        accepted += [r.event_id for r in results]
    finally:
        await grpc_client.close()
    async with IngestHttpClient(stack.http_url, api_key=GLOBEX_KEY) as http_client:
        wrong = ClientEvent("acme", "api", event_id=uuid.uuid4().hex)
        refused_ids.append(wrong.event_id or "")
        with pytest.raises(PermissionDenied) as denied:
            await http_client.publish([ClientEvent("globex", "api"), wrong])
        assert denied.value.field == "events[1].company_id"
        results = await http_client.publish([ClientEvent("globex", "web", [1, 2])])
        assert [r.status for r in results] == ["PUBLISHED"]
        accepted += [r.event_id for r in results]
    async with IngestHttpClient(stack.http_url) as keyless:
        with pytest.raises(Unauthenticated):
            await keyless.publish([ClientEvent("globex", "api")])
    written = await written_ids(stack)
    assert sorted(i for i in written if i in accepted) == sorted(accepted)
    assert not set(refused_ids) & set(written)
