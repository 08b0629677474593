"""Bearer tokens on the internal gRPC hops: the server's check and what a client sends.

A client sends ``authorization: Bearer <token>`` with each call (`bearer_metadata`, built
once per client and passed as the call's metadata: no client interceptor on the hot path).
The server checks it in `TokenInterceptor`, once per call or stream, from the call's
headers, before any handler runs and before the request message is read: a call without
the token, or with another, is answered UNAUTHENTICATED and never served (docs/security.md).

The comparison is constant-time: SHA-256 digests of the given and the expected token are
compared with `hmac.compare_digest`, so neither the content nor the length of the token
shows in the time a refusal takes. The health and reflection services are open
(`OPEN_METHOD_PREFIXES`): probes and ``grpcurl list`` carry no token.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Final

import grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from pydantic import SecretStr

    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

__all__ = [
    "AUTHORIZATION",
    "OPEN_METHOD_PREFIXES",
    "Metadata",
    "Refusal",
    "TokenInterceptor",
    "bearer_metadata",
    "check_bearer",
    "token_digest",
]

AUTHORIZATION: Final = "authorization"
"""The metadata key of the token (lower case, as HTTP/2 carries it)."""

OPEN_METHOD_PREFIXES: Final = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
"""Methods served without a token: health (probes) and reflection (service names and
descriptors only, which the repository publishes anyway)."""

_SCHEME: Final = "Bearer "
_WARN_EVERY_S: Final = 60.0  # refusals are logged at most this often (a flood is counted)

Metadata = tuple[tuple[str, str], ...]
"""Call metadata as a client passes it (``metadata=`` of a gRPC call)."""


class Refusal(enum.Enum):
    """Why a call was refused (the ``reason`` label of the refusal counter)."""

    MISSING = "missing"  # no authorization header, or not "Bearer <token>"
    INVALID = "invalid"  # a bearer token, not this server's


def bearer_metadata(token: SecretStr) -> Metadata:
    """The call metadata that presents ``token``; build it once and reuse it."""
    return ((AUTHORIZATION, _SCHEME + token.get_secret_value()),)


def token_digest(token: SecretStr) -> bytes:
    """What `check_bearer` compares against: the SHA-256 digest of ``token``."""
    return hashlib.sha256(token.get_secret_value().encode("ascii")).digest()


def check_bearer(
    metadata: Sequence[tuple[str, str | bytes]] | None, expected_digest: bytes
) -> Refusal | None:
    """Check a call's metadata for the bearer token whose digest is ``expected_digest``.

    Returns:
        None when the token is there and right, else why the call is refused.
    """
    given: str | bytes | None = None
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            given = value
            break
    if not isinstance(given, str) or not given.startswith(_SCHEME):
        return Refusal.MISSING
    # surrogateescape: any string hashes; only the right token matches.
    candidate = hashlib.sha256(given[len(_SCHEME) :].encode("utf-8", "surrogateescape")).digest()
    return None if hmac.compare_digest(candidate, expected_digest) else Refusal.INVALID


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Refuses every call without this server's token, except `OPEN_METHOD_PREFIXES`.

    A refused call gets a handler that answers UNAUTHENTICATED at once: it is a streaming
    handler without a deserializer, so the request is never read or parsed, whatever the
    method. Unknown methods are refused the same way (their existence is not revealed).
    Refusals are counted in ``eventgw_grpc_unauthenticated_total{server, reason}``.

    Args:
        server: the server's name, ``publisher`` or ``orchestrator`` (label and messages).
        token: the token callers must present.
        metrics: where the refusals are counted.
    """

    def __init__(self, server: str, token: SecretStr, metrics: Metrics) -> None:
        self._server = server
        self._digest = token_digest(token)
        counter = metrics.counter(
            "eventgw_grpc_unauthenticated_total",
            "internal gRPC calls refused for a missing or wrong token",
            ["server", "reason"],
        )
        self._counted = {r: counter.labels(server, r.value) for r in Refusal}
        self._unlogged = 0
        self._logged_at = float("-inf")
        detail = (
            f"authorization: calls to the {server} need 'Bearer <internal_auth.{server}_token>'"
        )

        async def refuse(requests: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

        self._refusal = grpc.stream_stream_rpc_method_handler(refuse)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Hand the call on when its token is right (or the method open); else refuse it."""
        method: str = handler_call_details.method
        if not method.startswith(OPEN_METHOD_PREFIXES):
            refusal = check_bearer(handler_call_details.invocation_metadata, self._digest)
            if refusal is not None:
                self._refuse(method, refusal)
                return self._refusal
        return await continuation(handler_call_details)

    def _refuse(self, method: str, refusal: Refusal) -> None:
        self._counted[refusal].inc()
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= _WARN_EVERY_S:
            logger.warning(
                "grpc.unauthenticated server=%s method=%.100r reason=%s refused=%d",
                self._server,
                method,
                refusal.value,
                self._unlogged,
            )
            self._logged_at = now
            self._unlogged = 0
