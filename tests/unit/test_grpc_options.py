"""The gRPC arguments every client and server shares (eventgw.grpc_options)."""

from __future__ import annotations

import grpc
import pytest

from eventgw.grpc_options import (
    MAX_RECONNECT_BACKOFF_MS,
    ChannelOption,
    client_channel_options,
    server_options,
)
from eventgw.ingest.publisher_client import GRPC_OPTIONS as INGEST_TO_PUBLISHER
from eventgw.publisher.grpc_api import GRPC_OPTIONS as PUBLISHER_SERVER


def _ints(options: list[ChannelOption]) -> dict[str, int]:
    """The integer-valued options (the timings compared below)."""
    return {name: value for name, value in options if isinstance(value, int)}


def test_reconnect_backoff_is_bounded_to_about_a_second() -> None:
    options = _ints(client_channel_options())
    assert options["grpc.initial_reconnect_backoff_ms"] <= options["grpc.max_reconnect_backoff_ms"]
    assert options["grpc.max_reconnect_backoff_ms"] == MAX_RECONNECT_BACKOFF_MS <= 1_000
    # Servers accept the clients' keepalive pings instead of answering GOAWAY too_many_pings.
    server = _ints(server_options())
    assert (
        server["grpc.http2.min_ping_interval_without_data_ms"] <= options["grpc.keepalive_time_ms"]
    )


def test_the_ingest_to_publisher_channel_and_the_publisher_server_use_them() -> None:
    assert set(client_channel_options()) <= set(INGEST_TO_PUBLISHER)
    assert ("grpc.lb_policy_name", "round_robin") in INGEST_TO_PUBLISHER
    assert set(server_options()) <= set(PUBLISHER_SERVER)


def test_a_call_site_cannot_override_a_shared_argument() -> None:
    with pytest.raises(ValueError, match=r"grpc\.max_reconnect_backoff_ms"):
        client_channel_options(("grpc.max_reconnect_backoff_ms", 120_000))


async def test_grpc_accepts_the_arguments() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1", options=client_channel_options())
    await channel.close()
    server = grpc.aio.server(options=server_options())
    await server.stop(None)
