"""Handler loading and the mapping of what a handler raises to its task result."""

from __future__ import annotations

import functools
import math

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.processor import Reject, Retry
from eventgw.processor.handlers import (
    MAX_ERROR_CHARS,
    check_handler,
    load_handler,
    log_event,
    noop,
    outcome_of,
)


async def async_handler(event: pb.EventData) -> None:
    """Used by load_handler tests."""


def sync_handler(event: pb.EventData) -> None:
    """A synchronous function: refused, it would block the loop."""


class AsyncCallable:
    async def __call__(self, event: pb.EventData) -> None:
        return None


class Holder:
    handle = AsyncCallable()


NOT_CALLABLE = 42


# --- load_handler -----------------------------------------------------------------------


def test_load_handler_returns_the_builtin_handlers() -> None:
    assert load_handler("eventgw.processor.handlers:log_event") is log_event
    assert load_handler("eventgw.processor.handlers:noop") is noop


def test_load_handler_follows_dotted_attributes() -> None:
    assert load_handler(f"{__name__}:Holder.handle") is Holder.handle


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("eventgw.processor.handlers", "expected 'package.module:function'"),
        (":noop", "expected 'package.module:function'"),
        ("eventgw.processor.handlers:", "expected 'package.module:function'"),
        ("no_such_module_xyz:handle", "cannot import module 'no_such_module_xyz'"),
        ("eventgw.processor.handlers:missing", "has no attribute 'missing'"),
        (f"{__name__}:NOT_CALLABLE", "is not callable"),
        (f"{__name__}:sync_handler", "must be an async function"),
    ],
)
def test_load_handler_names_the_problem(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match="handler") as info:
        load_handler(spec)
    assert spec in str(info.value)
    assert problem in str(info.value)


def test_check_handler_accepts_async_callables_and_partials() -> None:
    obj = AsyncCallable()
    assert check_handler(obj) is obj
    part = functools.partial(async_handler)
    assert check_handler(part) is part
    with pytest.raises(ValueError, match="must be an async function"):
        check_handler(functools.partial(sync_handler))


async def test_builtin_handlers_return_none() -> None:
    event = pb.EventData(event_id="e1", priority=pb.P20, payload=b"{}")
    await log_event(event)  # must not raise: returning is ACK
    await noop(event)


# --- outcome_of -------------------------------------------------------------------------


def test_return_is_ack() -> None:
    assert outcome_of(None).kind == pb.ACK
    assert outcome_of(None).delay_ms == 0
    assert outcome_of(None).error == ""


def test_retry_is_nack_with_delay_in_ms_and_reason() -> None:
    outcome = outcome_of(Retry(delay=3, reason="downstream busy"))
    assert (outcome.kind, outcome.delay_ms, outcome.error) == (pb.NACK, 3000, "downstream busy")


def test_retry_without_reason_still_says_why() -> None:
    outcome = outcome_of(Retry(delay=0.25))
    assert (outcome.kind, outcome.delay_ms) == (pb.NACK, 250)
    assert outcome.error == "retry requested after 0.25s"


def test_retry_delay_saturates_at_uint32() -> None:
    assert outcome_of(Retry(delay=10**12)).delay_ms == 2**32 - 1


@pytest.mark.parametrize("delay", [-1, math.nan, math.inf])
def test_retry_refuses_bad_delays(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        Retry(delay=delay)


def test_reject_is_reject_with_reason() -> None:
    outcome = outcome_of(Reject("payload is not an order"))
    assert (outcome.kind, outcome.delay_ms, outcome.error) == (
        pb.REJECT,
        0,
        "payload is not an order",
    )


def test_any_other_exception_is_nack_now_with_its_text() -> None:
    outcome = outcome_of(KeyError("order_id"))
    assert (outcome.kind, outcome.delay_ms) == (pb.NACK, 0)
    assert outcome.error == "KeyError: 'order_id'"
    assert outcome_of(RuntimeError()).error == "RuntimeError"


def test_errors_are_bounded() -> None:
    outcome = outcome_of(ValueError("x" * 10_000))
    assert len(outcome.error) == MAX_ERROR_CHARS
    assert outcome.error.endswith("...")
