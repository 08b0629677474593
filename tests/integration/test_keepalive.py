"""Servers accept the keepalive pings of an idle connection (eventgw.grpc_options).

gRPC core's default ping policy allows a server one ping per five minutes without data; a
client that pings more often collects strikes and, at the third, gets GOAWAY
"too_many_pings", which ends every call on the connection. eventgw's clients ping every
10 s, so each server must allow it: an idle ``Work`` stream, or ingest's idle channel to a
publisher, would otherwise break every ~40 s. The shared server arguments once named the
allowance wrongly, and gRPC ignores an unknown name: this test drives a real server and
client through four pings at 5.5 s (the least interval the servers allow is 5 s).
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from eventgw.grpc_options import server_options

PING_EVERY_MS = 5_500
CLIENT = [
    ("grpc.keepalive_time_ms", PING_EVERY_MS),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


async def test_an_idle_stream_survives_the_clients_keepalive_pings() -> None:
    server = grpc.aio.server(options=server_options())
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            # No data either way from here: only pings. Four of them, the fourth at 22 s,
            # would be the third strike under gRPC's default policy.
            next_message = asyncio.ensure_future(watch.read())
            done, _ = await asyncio.wait({next_message}, timeout=4 * PING_EVERY_MS / 1000 + 2)
            assert not done, f"the idle stream ended: {next_message.result()!r}"
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            watch.cancel()
            next_message.cancel()
    finally:
        await server.stop(None)
