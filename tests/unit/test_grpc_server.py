"""Health states of a gRPC server (eventgw.grpc_server.HealthState), without a network."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from eventgw.grpc_server import HealthState

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class WatchContext:
    """Collects what ``Watch`` writes."""

    def __init__(self) -> None:
        self.written: list[int] = []
        self.wrote = asyncio.Event()

    async def write(self, message: health_pb2.HealthCheckResponse) -> None:
        self.written.append(message.status)
        self.wrote.set()


def test_not_serving_until_ready_serving_then_not_serving_for_good() -> None:
    health = HealthState(["eventgw.v1.PrepPublisher"])
    assert health.status("") == health.status("eventgw.v1.PrepPublisher") == NOT_SERVING
    health.set_serving()
    assert health.status("") == health.status("eventgw.v1.PrepPublisher") == SERVING
    health.close()
    health.set_serving()  # too late: a draining server does not come back
    assert health.status("") == NOT_SERVING
    assert health.status("other.Service") == UNKNOWN


async def test_a_watch_hears_each_change_and_ends_after_the_shutdown() -> None:
    health = HealthState(["s.S"])
    context = WatchContext()
    request = health_pb2.HealthCheckRequest(service="s.S")
    watching = asyncio.create_task(health.Watch(request, context))
    async with asyncio.timeout(1):
        await context.wrote.wait()
        context.wrote.clear()
        health.set_serving()
        await context.wrote.wait()
        health.close()
        await watching
    assert context.written == [NOT_SERVING, SERVING, NOT_SERVING]
