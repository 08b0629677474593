"""The one place eventgw builds a gRPC server: token check, health and reflection included.

Every gRPC server (ingest, prep publisher, orchestrator) is a `GrpcServer`, so each has:

- the token check of the internal hops (`eventgw.grpc_auth.TokenInterceptor`) when it is
  given a token — the publisher and the orchestrator; ingest's API is public and checks its
  own API keys;
- the standard health service ``grpc.health.v1.Health`` (Check, List, Watch): NOT_SERVING
  until the service calls `GrpcServer.set_serving` (its readiness), NOT_SERVING again from
  `GrpcServer.set_not_serving` (shutdown) on, for the whole server (``""``) and for each of
  its services by name;
- server reflection (``grpc.reflection.v1alpha``), so ``grpcurl -plaintext host:port list``
  and ``describe`` work.

Health and reflection answer without a token (docs/security.md). The health servicer is
our own small one on the package's generated stubs: the reference aio servicer keeps
``Watch`` streams open through a shutdown, so every drain would wait its whole grace for
them; ours ends them with a last NOT_SERVING.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eventgw.grpc_auth import TokenInterceptor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import SecretStr

    from eventgw.grpc_options import ChannelOption
    from eventgw.metrics.backend import Metrics

__all__ = ["HEALTH_SERVICE", "REFLECTION_SERVICE", "GrpcServer", "HealthState"]

HEALTH_SERVICE: Final[str] = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE: Final[str] = reflection.SERVICE_NAME

_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN: Final = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthState(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped stubs
    """``grpc.health.v1.Health`` for one server: every name it knows shares one status.

    States: NOT_SERVING (start) → SERVING (`set_serving`) → NOT_SERVING for good (`close`);
    ``Watch`` streams get each change and end after the last one.
    """

    def __init__(self, services: Sequence[str]) -> None:
        self.names = frozenset(("", *services))
        self.serving = False
        self.closed = False
        self._changed = asyncio.Event()

    def set_serving(self) -> None:
        """SERVING, unless closed."""
        if not self.closed:
            self.serving = True
            self._wake()

    def close(self) -> None:
        """NOT_SERVING from now on; open ``Watch`` streams send it and end."""
        self.serving = False
        self.closed = True
        self._wake()

    def status(self, service: str) -> int:
        """The ``ServingStatus`` of ``service`` (``""``: the whole server)."""
        if service not in self.names:
            return int(_UNKNOWN)
        return int(_SERVING if self.serving else _NOT_SERVING)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        """The status now; NOT_FOUND for a service this server does not have."""
        if request.service not in self.names:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"service: unknown {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self.status(request.service))

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every service this server has, with its status."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=self.status(name))
                for name in sorted(self.names)
            }
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """The status now, then each change; ends after the NOT_SERVING of a shutdown."""
        last = None
        while True:
            changed = self._changed
            status = self.status(request.service)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self.closed:
                return
            await changed.wait()


class GrpcServer:
    """A ``grpc.aio`` server with the token check, health and reflection; see the module.

    The service registers its own handlers on `server`, then calls `start`, `set_serving`
    once it is ready, `set_not_serving` when it begins to drain, and `stop`.

    Args:
        services: full names of the services it carries (``eventgw.v1.PrepPublisher``).
        options: channel arguments (`eventgw.grpc_options.server_options`).
        auth: the server's name and the token every call must carry (except health and
            reflection); None for a server without internal auth (ingest's public API).
        metrics: where refused calls are counted.
        maximum_concurrent_rpcs: more calls at once are answered RESOURCE_EXHAUSTED.
    """

    def __init__(
        self,
        services: Sequence[str],
        *,
        options: Sequence[ChannelOption],
        auth: tuple[str, SecretStr] | None,
        metrics: Metrics,
        maximum_concurrent_rpcs: int | None = None,
    ) -> None:
        interceptors = [] if auth is None else [TokenInterceptor(auth[0], auth[1], metrics)]
        self.server: grpc.aio.Server = grpc.aio.server(
            options=list(options),
            interceptors=interceptors,
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        )
        self.health = HealthState(services)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*services, HEALTH_SERVICE, REFLECTION_SERVICE], self.server
        )

    def add_port(
        self, host: str, port: int, credentials: grpc.ServerCredentials | None = None
    ) -> int:
        """Listen on ``host:port`` (0: any free port); returns the bound port.

        Plaintext, or TLS with ``credentials`` (ingest's public port, `ingest.tls`).

        Raises:
            OSError: the address cannot be bound.
        """
        address = f"{host}:{port}"
        bound: int = (
            self.server.add_insecure_port(address)
            if credentials is None
            else self.server.add_secure_port(address, credentials)
        )
        if bound == 0:
            raise OSError(f"cannot bind gRPC {host}:{port}")
        return bound

    async def start(self) -> None:
        """Start serving calls (health says NOT_SERVING until `set_serving`)."""
        await self.server.start()

    def set_serving(self) -> None:
        """Health: SERVING (the service is ready)."""
        self.health.set_serving()

    def set_not_serving(self) -> None:
        """Health: NOT_SERVING for good (the service drains); ``Watch`` streams end."""
        self.health.close()

    async def stop(self, grace_s: float | None) -> None:
        """Stop accepting calls; in-flight calls get ``grace_s`` (None: no limit)."""
        self.health.close()
        await self.server.stop(grace_s)
