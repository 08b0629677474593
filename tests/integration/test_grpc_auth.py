"""Every internal gRPC hop is authenticated; every gRPC server has health and reflection.

Real servers on loopback and the real broker: the publisher (ingest → publisher hop), the
orchestrator (processor → orchestrator: ``Work`` and ``Stats``) and ingest's public gRPC
API. A call without the server's token, or with another, is answered UNAUTHENTICATED and
serves nothing (no record written, no task leased); with the token it works. Health and
reflection answer without a token. docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import Priority
from eventgw.grpc_auth import bearer_metadata
from eventgw.ingest.service import IngestService
from eventgw.kafka.admin import delete_topics
from eventgw.orchestrator.service import OrchestratorService
from tests.fixtures.read_path import create_topics, make_event, produce, read_settings, running
from tests.fixtures.stack import read_topic, unique_topics

if TYPE_CHECKING:
    from collections.abc import Iterator

    from eventgw.config.settings import TopicSettings
    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.stack import StackFactory

pytestmark = pytest.mark.kafka

WRONG = bearer_metadata(SecretStr("not-the-token-" + "x" * 40))
PUBLISH = "/eventgw.v1.PrepPublisher/Publish"
WORK = "/eventgw.v1.Orchestrator/Work"
STATS = "/eventgw.v1.Orchestrator/Stats"


def refused(metrics_text: str, server: str, reason: str) -> float:
    """The value of eventgw_grpc_unauthenticated_total{server, reason} (0 when absent)."""
    prefix = f'eventgw_grpc_unauthenticated_total{{reason="{reason}",server="{server}"}} '
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


# -- health and reflection (every server) ------------------------------------------------------


async def assert_health_and_reflection(target: str, service: str) -> None:
    """Health says SERVING for the server and ``service``; reflection lists and describes it.
    Both without any token."""
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", service):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await health.List(health_pb2.HealthListRequest(), timeout=5)
        assert set(listed.statuses) >= {"", service}

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in (await call.read()).list_services_response.service}
        assert names == {
            service,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
        described = await call.read()
        assert described.file_descriptor_response.file_descriptor_proto, "grpcurl describe"
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF


# -- ingest → publisher ------------------------------------------------------------------------


async def test_the_publisher_serves_only_calls_with_its_token(
    write_stack: StackFactory, kafka_broker: LocalBroker
) -> None:
    stack = await write_stack()
    token = bearer_metadata(stack.settings.internal_auth.token_for("publisher"))
    request = pb.PublishRequest(events=[make_event("auth-refused", Priority.P20)])
    async with grpc.aio.insecure_channel(stack.publisher_grpc) as channel:
        publish = channel.unary_unary(
            PUBLISH,
            request_serializer=pb.PublishRequest.SerializeToString,
            response_deserializer=pb.PublishResponse.FromString,
        )
        for metadata in ((), WRONG, (("authorization", "Basic abc"),)):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await publish(request, metadata=metadata, timeout=10)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "internal_auth.publisher_token" in (denied.value.details() or "")
        ok = await publish(
            pb.PublishRequest(events=[make_event("auth-ok", Priority.P20)]),
            metadata=token,
            timeout=10,
        )
    assert [r.status for r in ok.results] == [pb.PUBLISHED]
    written = await asyncio.to_thread(
        read_topic, kafka_broker.bootstrap, stack.settings.topics.p20, expect=1
    )
    assert [r.key for r in written] == [b"acme"], "only the authenticated call wrote"
    assert all(b"auth-refused" not in (r.value or b"") for r in written)
    text = stack.publisher.metrics.render().decode()
    assert refused(text, "publisher", "missing") == 2  # none, and not a bearer token
    assert refused(text, "publisher", "invalid") == 1
    await assert_health_and_reflection(stack.publisher_grpc, "eventgw.v1.PrepPublisher")
    await assert_health_and_reflection(stack.ingest_grpc, "eventgw.v1.IngestService")


async def test_an_ingest_with_another_publisher_token_answers_503_and_writes_nothing(
    write_stack: StackFactory, kafka_broker: LocalBroker
) -> None:
    stack = await write_stack()
    auth = stack.settings.internal_auth.with_tokens({"publisher": SecretStr("z" * 40)})
    stranger = IngestService(stack.settings.model_copy(update={"internal_auth": auth}))
    async with running(stranger), httpx.AsyncClient() as http:
        answer = await http.post(
            f"http://127.0.0.1:{stranger.http_port}/v1/events",
            json={"company_id": "acme", "source_name": "api", "payload": {"x": 1}},
        )
    assert answer.status_code == 503, answer.text
    assert refused(stack.publisher.metrics.render().decode(), "publisher", "invalid") >= 1
    # The publisher never saw the event: it counted none, and its lane holds only a marker
    # published afterwards with the right token.
    published = [
        float(line.rpartition(" ")[2])
        for line in stack.publisher.metrics.render().decode().splitlines()
        if line.startswith("eventgw_publisher_events_total{")
    ]
    assert published, "the publisher's counters exist"
    assert sum(published) == 0
    async with httpx.AsyncClient() as http:
        marker = await http.post(
            f"{stack.http_url}/v1/events",
            json={"company_id": "marker", "source_name": "api", "payload": {}},
        )
    assert marker.status_code == 202, marker.text
    written = await asyncio.to_thread(
        read_topic, kafka_broker.bootstrap, stack.settings.topics.p20, expect=1
    )
    assert [r.key for r in written] == [b"marker"]


async def test_health_turns_not_serving_on_shutdown_and_ends_its_watch_streams(
    write_stack: StackFactory,
) -> None:
    """A Watch stream hears NOT_SERVING when the publisher drains and then ends, so it does
    not hold the drain (publisher.shutdown_timeout_s) open."""
    stack = await write_stack()
    async with grpc.aio.insecure_channel(stack.publisher_grpc) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="eventgw.v1.PrepPublisher")
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        stopping = asyncio.create_task(stack.stop())
        statuses = []
        async with asyncio.timeout(30):
            while (message := await watch.read()) is not grpc.aio.EOF:
                statuses.append(message.status)
            await stopping
    assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert await watch.code() == grpc.StatusCode.OK
    assert time.monotonic() - started < 10, "the drain did not wait for the Watch stream"


# -- processor → orchestrator ------------------------------------------------------------------


@pytest.fixture
def topics(kafka_broker: LocalBroker) -> Iterator[TopicSettings]:
    names = unique_topics()
    create_topics(kafka_broker.bootstrap, names)
    yield names
    delete_topics(kafka_broker.bootstrap, names.all_topics())


def work_stream(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.StreamStreamCall:
    return channel.stream_stream(
        WORK,
        request_serializer=pb.WorkRequest.SerializeToString,
        response_deserializer=pb.TaskBatch.FromString,
    )(metadata=metadata)


async def next_tasks(call: grpc.aio.StreamStreamCall) -> list[pb.Task]:
    """Read messages (the welcome, hints) until one carries tasks."""
    async with asyncio.timeout(30):
        while True:
            batch = await call.read()
            assert batch is not grpc.aio.EOF, "the stream ended"
            if batch.tasks:
                return list(batch.tasks)


async def finish(call: grpc.aio.StreamStreamCall) -> None:
    """End our half and wait for the server to end the stream: it applied all we sent."""
    await call.done_writing()
    async with asyncio.timeout(30):
        while await call.read() is not grpc.aio.EOF:
            pass


async def test_the_orchestrator_serves_only_streams_and_calls_with_its_token(
    kafka_broker: LocalBroker, topics: TopicSettings
) -> None:
    bootstrap = kafka_broker.bootstrap
    await asyncio.to_thread(produce, bootstrap, topics, [make_event("auth-task", Priority.P30)])
    settings = read_settings(bootstrap, topics)
    token = bearer_metadata(settings.internal_auth.token_for("orchestrator"))
    orchestrator = OrchestratorService(settings)
    async with running(orchestrator):
        d = orchestrator.dispatcher
        assert d is not None
        target = f"127.0.0.1:{orchestrator.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            for metadata in ((), WRONG):
                intruder = work_stream(channel, metadata)
                # The refusal comes before the first message is read: write may still
                # succeed (buffered), the read gets the status.
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await intruder.write(pb.WorkRequest(worker_id="intruder", credit=10))
                with pytest.raises(grpc.aio.AioRpcError):
                    await intruder.read()
                assert await intruder.code() == grpc.StatusCode.UNAUTHENTICATED
            assert not d.sessions, "no stream was opened for the refused calls"
            stats = channel.unary_unary(
                STATS,
                request_serializer=pb.StatsRequest.SerializeToString,
                response_deserializer=pb.StatsResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stats(pb.StatsRequest(), timeout=10)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert (await stats(pb.StatsRequest(), metadata=token, timeout=10)).index == 0

            worker = work_stream(channel, token)
            await worker.write(pb.WorkRequest(worker_id="w1", credit=1))
            [task] = await next_tasks(worker)
            assert task.event.event_id == "auth-task"
            assert task.delivery_count == 1, "never leased to a refused stream"

            # Another authenticated worker cannot finish w1's lease: counted stale.
            other = work_stream(channel, token)
            await other.write(pb.WorkRequest(worker_id="w2", acked=[task.task_id]))
            await other.write(
                pb.WorkRequest(results=[pb.TaskResult(task_id=task.task_id, kind=pb.ACK)])
            )
            await finish(other)
            assert d.stale_results == 2
            assert d.buffer.lease_of(task.task_id) is not None, "still w1's"

            await worker.write(pb.WorkRequest(acked=[task.task_id]))
            await finish(worker)
            assert d.buffer.get(task.task_id) is None, "w1's own ACK finished it"
        text = orchestrator.metrics.render().decode()
        assert refused(text, "orchestrator", "missing") == 2  # Work and Stats
        assert refused(text, "orchestrator", "invalid") == 1
        await assert_health_and_reflection(target, "eventgw.v1.Orchestrator")
