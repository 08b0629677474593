"""The token check of the internal gRPC hops (eventgw.grpc_auth), without a network."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from pydantic import SecretStr

from eventgw.grpc_auth import (
    Refusal,
    TokenInterceptor,
    bearer_metadata,
    check_bearer,
    token_digest,
)
from eventgw.metrics.backend import Metrics

TOKEN = SecretStr("t" * 43)
DIGEST = token_digest(TOKEN)


def test_the_token_a_client_presents_passes_the_check() -> None:
    assert check_bearer(bearer_metadata(TOKEN), DIGEST) is None
    assert check_bearer((("x-other", "1"), *bearer_metadata(TOKEN)), DIGEST) is None


@pytest.mark.parametrize(
    ("metadata", "refusal"),
    [
        (None, Refusal.MISSING),
        ((), Refusal.MISSING),
        ((("x-api-key", "t" * 43),), Refusal.MISSING),
        ((("authorization", "t" * 43),), Refusal.MISSING),  # no scheme
        ((("authorization", "Basic " + "t" * 43),), Refusal.MISSING),
        ((("authorization", b"Bearer " + b"t" * 43),), Refusal.MISSING),  # not a text header
        ((("authorization", "Bearer " + "t" * 42),), Refusal.INVALID),  # shorter
        ((("authorization", "Bearer " + "t" * 44),), Refusal.INVALID),  # longer
        ((("authorization", "Bearer " + "u" + "t" * 42),), Refusal.INVALID),
        ((("authorization", "Bearer \udcff"),), Refusal.INVALID),  # any string, no crash
        ((("authorization", "Bearer "),), Refusal.INVALID),
    ],
)
def test_anything_else_is_refused_with_its_reason(
    metadata: tuple[tuple[str, str | bytes], ...] | None, refusal: Refusal
) -> None:
    assert check_bearer(metadata, DIGEST) is refusal


def test_only_the_first_authorization_header_counts() -> None:
    wrong_first = (("authorization", "Bearer wrong"), *bearer_metadata(TOKEN))
    assert check_bearer(wrong_first, DIGEST) is Refusal.INVALID


def test_the_digest_compared_has_a_fixed_length_whatever_the_token() -> None:
    """Digests of equal length are compared: a refusal's time says nothing of the length."""
    assert len(token_digest(SecretStr("a" * 32))) == len(token_digest(SecretStr("b" * 400))) == 32


@dataclass(frozen=True)
class Details:
    """What grpc.aio hands an interceptor (grpc.HandlerCallDetails)."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class Continuation:
    """The server's handler lookup: records whether the call was handed on."""

    def __init__(self) -> None:
        self.handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
        self.calls: list[str] = []

    async def __call__(self, details: Details) -> grpc.RpcMethodHandler:
        self.calls.append(details.method)
        return self.handler


def refusals(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics.render().decode().splitlines():
        if line.startswith("eventgw_grpc_unauthenticated_total{"):
            labels, _, value = line.rpartition(" ")
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


async def test_the_interceptor_hands_on_authenticated_calls_only() -> None:
    metrics = Metrics()
    interceptor = TokenInterceptor("publisher", TOKEN, metrics)
    go_on = Continuation()
    method = "/eventgw.v1.PrepPublisher/Publish"
    handler = await interceptor.intercept_service(go_on, Details(method, bearer_metadata(TOKEN)))
    assert handler is go_on.handler
    refusal = await interceptor.intercept_service(go_on, Details(method, ()))
    wrong = bearer_metadata(SecretStr("w" * 43))
    assert await interceptor.intercept_service(go_on, Details(method, wrong)) is refusal
    assert go_on.calls == [method], "refused calls never reach the service's handler"
    # The refusal reads nothing: a streaming handler without a deserializer.
    assert refusal.request_streaming
    assert refusal.request_deserializer is None
    assert refusals(metrics) == {"missing": 1.0, "invalid": 1.0}


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ],
)
async def test_health_and_reflection_need_no_token(method: str) -> None:
    metrics = Metrics()
    go_on = Continuation()
    interceptor = TokenInterceptor("orchestrator", TOKEN, metrics)
    assert await interceptor.intercept_service(go_on, Details(method, ())) is go_on.handler
    assert refusals(metrics) == {"missing": 0.0, "invalid": 0.0}


async def test_an_unknown_method_without_a_token_is_refused_like_any_other() -> None:
    go_on = Continuation()
    interceptor = TokenInterceptor("orchestrator", TOKEN, Metrics())
    refusal = await interceptor.intercept_service(go_on, Details("/no.Such/Method", ()))
    assert refusal is not go_on.handler
    assert go_on.calls == []
