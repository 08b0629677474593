"""The client library reads the door's hint from trailing metadata without trusting it."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from eventgw.client.ingest_client import _retry_after_ms


def refusal(*metadata: tuple[str, str | bytes]) -> aio.AioRpcError:
    return aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, aio.Metadata(), aio.Metadata(*metadata), "door"
    )


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("250", 250),
        ("0", 0),
        ("60000", 60_000),
        ("999999999", 60_000),  # clamped to a minute
        ("9" * 5000, 60_000),  # clamped, not converted (int() refuses over 4300 digits)
        ("²", None),  # str.isdigit() accepts it, int() does not: it raised ValueError
        ("\u0661\u0662", None),  # Arabic-Indic digits: not ours to interpret
        ("-5", None),
        ("", None),
        ("1e3", None),
    ],
)
def test_the_retry_hint_is_ascii_digits_clamped_to_a_minute(value: str, hint: int | None) -> None:
    assert _retry_after_ms(refusal(("retry-after-ms", value))) == hint


def test_no_hint_is_none() -> None:
    assert _retry_after_ms(refusal()) is None
