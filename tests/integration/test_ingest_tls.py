"""TLS on ingest's HTTP and gRPC ports, end to end: real ingest + publisher + Kafka.

A throwaway CA (tests/fixtures/tls.py) signs ingest's certificate. Over TLS, the client
library (https and a secure gRPC channel) and a raw TLS socket are answered and their events
are in Kafka; plaintext to a TLS port fails at once and cleanly (no HTTP answer, no
UNAVAILABLE after a long wait, nothing logged as an error in the server, which goes on
serving); a client that trusts another CA refuses the server. With ``client_ca_file`` a
client without a certificate is refused and one with a certificate signed by the CA is
served. The admin port stays plain HTTP on loopback. The key is bound to a tenant: over TLS
too, an event for a company outside its grant refuses the whole request with 403 /
PERMISSION_DENIED naming the field, and nothing of it reaches Kafka.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
import pytest_asyncio

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.client import ClientEvent, ClientTls, EventIngestPublisher, IngestHttpClient
from eventgw.config.ingest_security import key_digest
from eventgw.core.errors import NotDurable, PermissionDenied
from tests.fixtures.stack import make_settings, read_topic, topics_and_stack, unique_topics
from tests.fixtures.tls import Pki, make_pki

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.stack import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

KEY = "tls-test-key-" + uuid.uuid4().hex
# Company A's key: it may write acme and acme-eu, from any source, in any class.
GRANT = {"tenant": "acme", "key_sha256": key_digest(KEY), "company_ids": ["acme", "acme-eu"]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def _stack(
    broker: LocalBroker, tmp: Path, tls: dict[str, Any]
) -> AsyncIterator[RunningStack]:
    topics = unique_topics()
    settings = make_settings(
        primary=broker.bootstrap,
        topics=topics,
        spool_dir=tmp / "spool",
        ingest={"tls": tls, "tenant_keys": [GRANT]},
    )
    async with topics_and_stack(broker.bootstrap, settings) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> AsyncIterator[RunningStack]:
    """TLS, no client certificate asked."""
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key}
    async for s in _stack(kafka_broker, tmp_path_factory.mktemp("tls"), tls):
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mtls_stack(
    kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> AsyncIterator[RunningStack]:
    """Mutual TLS: clients need a certificate signed by the test CA."""
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca}
    async for s in _stack(kafka_broker, tmp_path_factory.mktemp("mtls"), tls):
        yield s


def https_url(stack: RunningStack) -> str:
    return f"https://127.0.0.1:{stack.ingest.http_port}"


async def lane_ids(stack: RunningStack) -> list[str]:
    """Event ids of every record in the stack's P20 lane and failed-writes topic."""
    bootstrap = stack.settings.kafka.primary.bootstrap_servers
    t = stack.settings.topics
    read = await asyncio.gather(
        *(
            asyncio.to_thread(read_topic, bootstrap, topic, expect=None)
            for topic in (t.p20, t.failed_writes)
        )
    )
    return [pb.EventData.FromString(r.value).event_id for records in read for r in records]


async def every_written_id(stack: RunningStack) -> list[str]:
    """Event ids of every record in all the stack's lanes, offload and failed-writes topics."""
    bootstrap = stack.settings.kafka.primary.bootstrap_servers
    t = stack.settings.topics
    topics = (t.p30, t.p20, t.p10, t.offload, t.failed_writes)
    read = await asyncio.gather(
        *(asyncio.to_thread(read_topic, bootstrap, topic, expect=None) for topic in topics)
    )
    return [pb.EventData.FromString(r.value).event_id for records in read for r in records]


def event(company: str = "acme") -> ClientEvent:
    return ClientEvent(company, "api", {"tls": True}, event_id=uuid.uuid4().hex)


async def raw_post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> bytes:
    """One HTTP/1.1 request written by hand; the whole answer (the server closes)."""
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"x-api-key: " + KEY.encode() + b"\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    async with asyncio.timeout(30):
        return await reader.read(-1)


class LoopErrors:
    """Records what reaches the event loop's exception handler (an unhandled error)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __enter__(self) -> LoopErrors:
        self._loop = asyncio.get_running_loop()
        self._previous = self._loop.get_exception_handler()
        self._loop.set_exception_handler(lambda _loop, context: self.seen.append(context))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.set_exception_handler(self._previous)


async def test_the_client_library_and_a_raw_tls_client_are_served(
    stack: RunningStack, pki: Pki
) -> None:
    tls = ClientTls(ca_file=pki.ca)
    sent: list[str] = []
    async with IngestHttpClient(https_url(stack), api_key=KEY, tls=tls) as client:
        results = await client.publish([event(), event("acme-eu")])
    assert [r.status for r in results] == ["PUBLISHED", "PUBLISHED"]
    sent += [r.event_id for r in results]

    grpc_client = EventIngestPublisher(stack.ingest_grpc, api_key=KEY, tls=tls, timeout_s=30)
    await grpc_client.start()
    try:
        results = await grpc_client.publish([event()])
    finally:
        await grpc_client.close()
    assert [r.status for r in results] == ["PUBLISHED"]
    sent += [r.event_id for r in results]

    ctx = ssl.create_default_context(cafile=str(pki.ca))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", stack.ingest.http_port, ssl=ctx, server_hostname="127.0.0.1"
    )
    tls_object = writer.get_extra_info("ssl_object")
    assert tls_object.version() in ("TLSv1.2", "TLSv1.3")
    raw_id = uuid.uuid4().hex
    body = {"company_id": "acme", "source_name": "raw", "event_id": raw_id}
    answer = await raw_post(reader, writer, json.dumps(body).encode())
    writer.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202"), answer
    # Chunked (the app sends no length): the id and status are in the one chunk.
    assert f'"event_id":"{raw_id}","status":"PUBLISHED"'.encode() in content, answer
    sent.append(raw_id)

    # The admin port is plain HTTP on loopback, TLS or not on the public one.
    async with httpx.AsyncClient(base_url=stack.admin_url, timeout=10) as admin:
        assert (await admin.get("/readyz")).status_code == 200
        assert "hot_companies" in (await admin.get("/status")).json()

    written = await lane_ids(stack)
    assert sorted(i for i in written if i in sent) == sorted(sent)


async def test_plaintext_to_a_tls_port_fails_cleanly_and_the_server_goes_on(
    stack: RunningStack, pki: Pki
) -> None:
    refused = [uuid.uuid4().hex for _ in range(4)]
    with LoopErrors() as loop_errors:
        # HTTP: a plaintext request gets no HTTP answer, the connection is closed, at once.
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.ingest.http_port)
        body = json.dumps({"company_id": "acme", "source_name": "api", "event_id": refused[0]})
        answer = await raw_post(reader, writer, body.encode())
        writer.close()
        assert not answer.startswith(b"HTTP/"), answer
        async with IngestHttpClient(
            f"http://127.0.0.1:{stack.ingest.http_port}", api_key=KEY
        ) as plain:
            with pytest.raises(NotDurable):
                await plain.publish([ClientEvent("acme", "api", event_id=refused[1])])
        # gRPC: a plaintext channel is UNAVAILABLE within its deadline, never served.
        async with grpc.aio.insecure_channel(stack.ingest_grpc) as channel:
            stub = pb_grpc.IngestServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
            request = pb.IngestRequest(
                events=[pb.IngestEvent(company_id="acme", source_name="api", event_id=refused[2])]
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Ingest(request, metadata=(("x-api-key", KEY),), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 15
        # A client that trusts another CA refuses the server (and sends nothing).
        other = ClientTls(ca_file=pki.other_ca)
        async with IngestHttpClient(https_url(stack), api_key=KEY, tls=other) as doubting:
            with pytest.raises(NotDurable, match="CERTIFICATE_VERIFY_FAILED"):
                await doubting.publish([ClientEvent("acme", "api", event_id=refused[3])])
        # The server is unharmed: the next TLS request is served.
        async with IngestHttpClient(
            https_url(stack), api_key=KEY, tls=ClientTls(ca_file=pki.ca)
        ) as client:
            (after,) = await client.publish([event()])
        assert after.status == "PUBLISHED"
    assert loop_errors.seen == []
    written = await lane_ids(stack)
    assert after.event_id in written
    assert not set(refused) & set(written)


async def test_mutual_tls_needs_a_client_certificate_signed_by_the_ca(
    mtls_stack: RunningStack, pki: Pki
) -> None:
    url = https_url(mtls_stack)
    anonymous = ClientTls(ca_file=pki.ca)
    with LoopErrors() as loop_errors:
        async with IngestHttpClient(url, api_key=KEY, tls=anonymous) as client:
            with pytest.raises(NotDurable):
                await client.publish([event()])
        grpc_anonymous = EventIngestPublisher(
            mtls_stack.ingest_grpc, api_key=KEY, tls=anonymous, timeout_s=5
        )
        await grpc_anonymous.start()
        try:
            with pytest.raises(NotDurable, match="UNAVAILABLE"):
                await grpc_anonymous.publish([event()])
        finally:
            await grpc_anonymous.close()
    assert loop_errors.seen == []

    certified = ClientTls(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    async with IngestHttpClient(url, api_key=KEY, tls=certified) as client:
        (result,) = await client.publish([event()])
    assert result.status == "PUBLISHED"
    grpc_client = EventIngestPublisher(
        mtls_stack.ingest_grpc, api_key=KEY, tls=certified, timeout_s=30
    )
    await grpc_client.start()
    try:
        (grpc_result,) = await grpc_client.publish([event()])
    finally:
        await grpc_client.close()
    assert grpc_result.status == "PUBLISHED"
    written = await lane_ids(mtls_stack)
    assert sorted(written) == sorted([result.event_id, grpc_result.event_id])


async def test_over_tls_a_key_for_one_company_is_refused_for_another(
    stack: RunningStack, pki: Pki
) -> None:
    refused: list[str] = []

    def theirs() -> dict[str, str]:
        refused.append(uuid.uuid4().hex)
        return {"company_id": "globex", "source_name": "api", "event_id": refused[-1]}

    def ours() -> dict[str, str]:
        refused.append(uuid.uuid4().hex)
        return {"company_id": "acme", "source_name": "api", "event_id": refused[-1]}

    ctx = ssl.create_default_context(cafile=str(pki.ca))
    async with httpx.AsyncClient(base_url=https_url(stack), verify=ctx, timeout=30) as client:
        for body, field in (
            ({"events": [ours(), theirs()]}, "events[1].company_id"),
            (theirs(), "events[0].company_id"),
        ):
            resp = await client.post("/v1/events", json=body, headers={"x-api-key": KEY})
            assert resp.status_code == 403, resp.text
            error = resp.json()["error"]
            assert (error["code"], error["field"]) == ("permission_denied", field)
            assert error["message"].startswith("company 'globex' is not granted to the key"), error
        metrics = (await client.get("/metrics")).text

    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with grpc.aio.secure_channel(stack.ingest_grpc, credentials) as channel:
        stub = pb_grpc.IngestServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
        request = pb.IngestRequest(events=[theirs(), ours()])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ingest(request, metadata=(("x-api-key", KEY),), timeout=30)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (info.value.details() or "").startswith("events[0].company_id: company 'globex'")

    # The client library over TLS: the same refusal, as a permanent PermissionDenied.
    tls = ClientTls(ca_file=pki.ca)
    grpc_client = EventIngestPublisher(stack.ingest_grpc, api_key=KEY, tls=tls, timeout_s=30)
    await grpc_client.start()
    try:
        wrong = ClientEvent("globex", "api", event_id=uuid.uuid4().hex)
        refused.append(wrong.event_id or "")
        with pytest.raises(PermissionDenied) as denied:
            await grpc_client.publish([wrong])
        assert denied.value.field == "events[0].company_id"
        # The same key, its own company, the same channel: served.
        (allowed,) = await grpc_client.publish([event("acme-eu")])
    finally:
        await grpc_client.close()
    assert allowed.status == "PUBLISHED"

    assert 'eventgw_ingest_permission_denied_total{field="company_id"} 2.0' in metrics
    written = await every_written_id(stack)
    assert allowed.event_id in written
    assert not set(refused) & set(written), "a refused request wrote something"
