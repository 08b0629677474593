"""Servers accept the keepalive pings of an idle connection (eventgw.grpc_options).

gRPC core's default ping policy allows a server one ping per five minutes without data; a
client that pings more often collects strikes and, at the third, gets GOAWAY
"too_many_pings", which ends every call on the connection. eventgw's clients ping every
10 s, so each server must allow it: an idle ``Work`` stream, or ingest's idle channel to a
publisher, would otherwise break every ~40 s. The shared server arguments once named the
allowance wrongly, and gRPC ignores an unknown name.

What a real server and client prove here is that gRPC honours the allowance under the name
`server_options` gives it: a client pinging a little slower than the allowance keeps an idle
stream through six pings, and the same client is cut off (GOAWAY) by a server given
`server_options` without that argument — what the misspelled name amounted to — so the test
fails if the name is wrong. The clock is a twelfth of the product's, with its ratio (pings
every 800 ms against an allowance of 400 ms; the product's are 10 s and 5 s), so both halves
take seconds instead of the 24 s four pings of the product's clock took; that the product's
allowance is below its clients' ping interval is arithmetic on the constants, checked in
tests/unit/test_grpc_options.py.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from eventgw.grpc_options import ChannelOption, server_options

ALLOWANCE = "grpc.http2.min_ping_interval_without_data_ms"
ALLOWANCE_MS = 400
PING_EVERY_MS = 800  # twice the allowance, as the product's 10 s against 5 s
PINGS = 5  # the fourth would be the third strike under gRPC's default policy
CLIENT = [
    ("grpc.keepalive_time_ms", PING_EVERY_MS),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def scaled_server_options() -> list[ChannelOption]:
    """`server_options()` with the ping allowance scaled to this test's clock."""
    options = server_options()
    names = [name for name, _ in options]
    assert ALLOWANCE in names, f"server_options() no longer sets {ALLOWANCE}: {names}"
    return [(name, ALLOWANCE_MS if name == ALLOWANCE else value) for name, value in options]


async def idle_watch_outcome(options: list[ChannelOption]) -> str:
    """Open a health ``Watch`` stream to a server with ``options`` and leave it idle for
    `PINGS` client pings; return ``"open"`` or how the stream ended."""
    server = grpc.aio.server(options=options)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            # No data either way from here: only pings.
            next_message = asyncio.ensure_future(watch.read())
            done, _ = await asyncio.wait({next_message}, timeout=PINGS * PING_EVERY_MS / 1000)
            if done:
                exc = next_message.exception()
                return repr(exc) if exc is not None else repr(next_message.result())
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            watch.cancel()
            next_message.cancel()
            return "open"
    finally:
        await server.stop(None)


async def test_an_idle_stream_survives_the_clients_keepalive_pings() -> None:
    without = [option for option in scaled_server_options() if option[0] != ALLOWANCE]
    allowed, refused = await asyncio.gather(
        idle_watch_outcome(scaled_server_options()), idle_watch_outcome(without)
    )
    assert allowed == "open", f"the idle stream ended: {allowed}"
    # The control: without the allowance the same pings end the stream, so the pings were
    # sent and the check above could fail.
    assert "Too many pings" in refused, f"without the allowance: {refused}"
