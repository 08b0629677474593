"""gRPC channel arguments every eventgw client and server shares: fast reconnects, keepalive.

Plain ``(name, value)`` pairs, so this module imports no gRPC: the ``*_client.py`` and
``*_api.py`` modules that do (ingest's publisher client, the client library, the servers)
all take their arguments from here, and a service never imports another service for them.

Why: gRPC's default reconnect backoff starts at 1 s and grows 1.6 times per attempt up to
120 s. After a 30 s outage of its peer a channel waited about 12 s more before it tried
again, and every call on it failed UNAVAILABLE meanwhile. With the backoff capped at
`MAX_RECONNECT_BACKOFF_MS` a channel is back within about a second of its peer being ready.
"""

from __future__ import annotations

from typing import Final

ChannelOption = tuple[str, int | str]

INITIAL_RECONNECT_BACKOFF_MS: Final = 100
"""Wait before the first reconnect attempt after a connection is lost."""

MAX_RECONNECT_BACKOFF_MS: Final = 1_000
"""Longest wait between reconnect attempts (gRPC's default is 120 s)."""

MIN_CONNECT_TIMEOUT_MS: Final = 1_000
"""Least time one connection attempt is given (``grpc.min_reconnect_backoff_ms`` is gRPC
core's minimum connect timeout, 20 s by default): a peer that vanished without a reset
(a deleted pod's address) costs a second per attempt, not twenty."""

KEEPALIVE_TIME_MS: Final = 10_000
"""Ping an otherwise silent connection this often, calls or not."""

KEEPALIVE_TIMEOUT_MS: Final = 5_000
"""A ping unanswered this long closes the connection, which then reconnects."""

_CLIENT: Final[tuple[ChannelOption, ...]] = (
    ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
    ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    # Idle connections are probed too, so a peer that died silently is found before the
    # next call waits out its deadline on a dead connection.
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)

_SERVER: Final[tuple[ChannelOption, ...]] = (
    # Accept the clients' pings above; by default a server allows one ping per 5 minutes
    # without data and answers more with GOAWAY "too_many_pings", which breaks every call
    # on the connection. (gRPC core's name is GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_
    # DATA_MS = "grpc.http2.min_ping_interval_without_data_ms"; an unknown name is ignored.)
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
)


def client_channel_options(*extra: ChannelOption) -> list[ChannelOption]:
    """Arguments for ``grpc.aio.insecure_channel``: ``extra`` plus reconnects and keepalive.

    An ``extra`` argument of the same name as a shared one is refused.
    """
    return _merge(extra, _CLIENT)


def server_options(*extra: ChannelOption) -> list[ChannelOption]:
    """Arguments for ``grpc.aio.server``: ``extra`` plus the keepalive the clients expect.

    An ``extra`` argument of the same name as a shared one is refused.
    """
    return _merge(extra, _SERVER)


def _merge(
    extra: tuple[ChannelOption, ...], shared: tuple[ChannelOption, ...]
) -> list[ChannelOption]:
    clash = {name for name, _ in extra} & {name for name, _ in shared}
    if clash:
        raise ValueError(f"set in eventgw.grpc_options, not per call site: {sorted(clash)}")
    return [*extra, *shared]
