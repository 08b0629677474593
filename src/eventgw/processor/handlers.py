"""The user handler contract: its signature, the exceptions that steer a result, and loading.

A handler is an async callable ``async def handle(event: EventData) -> None`` where
``EventData`` — import it as ``from eventgw.processor import EventData`` — is the event's
``eventgw.v1.EventData`` protobuf message (fields ``event_id``, ``company_id``,
``source_name``, ``statistic_key``, ``payload`` — the client's JSON as UTF-8 bytes —,
``priority``, ``ingested_at_ms``, ``slo_deadline_ms``, ``attempt``, ...). Treat the event as
read-only: it is the worker's copy of the leased task.

How the handler's outcome becomes the task's result (docs/dispatch-protocol.md, "Results"):

=========================  =======  =========================================================
handler                    result   what the orchestrator does
=========================  =======  =========================================================
returns                    ACK      done
raises ``Retry(delay_s)``  NACK     retry after ``delay_ms`` (memory below 60 s, else the
                                    retry topics), DLQ past ``max_attempts``
raises ``Reject(reason)``  REJECT   straight to the DLQ with ``reason``
raises anything else       NACK     ``delay_ms=0``, ``error`` = exception type and text
=========================  =======  =========================================================

Handlers are never given a deadline by the worker: one that runs past its lease is not
cancelled, but its result may reach the orchestrator stale (the task was served again).
Handlers must be idempotent per ``event_id``: delivery is at-least-once.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeAlias, cast

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb

logger = logging.getLogger(__name__)

EventData: TypeAlias = pb.EventData
"""What a handler receives: the ``eventgw.v1.EventData`` protobuf message of one event.

Its public name; the class is generated into ``eventgw._proto``, which is internal.
"""

Handler: TypeAlias = Callable[[EventData], Awaitable[None]]
"""``async def handle(event: EventData) -> None``; see the module docstring."""

MAX_ERROR_CHARS: Final = 1000
"""Errors are cut to this length: they travel in every result and land in DLQ headers."""

_MAX_DELAY_MS: Final = 2**32 - 1  # TaskResult.delay_ms is a uint32


class Retry(Exception):
    """Raise from a handler to retry the event later: the task is NACKed with a delay.

    Args:
        delay: seconds to wait before the event is served again (finite, >= 0). The
            orchestrator keeps delays below 60 s in memory and sends longer ones to the
            retry topics; ``attempt`` grows by one either way.
        reason: why, for the DLQ and the logs (``error`` of the result).

    Raises:
        ValueError: ``delay`` is negative, NaN or infinite.
    """

    def __init__(self, delay: float, reason: str = "") -> None:
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delay: must be a finite number of seconds >= 0, got {delay!r}")
        super().__init__(reason or f"retry requested after {delay:g}s")
        self.delay = float(delay)
        self.reason = reason


class Reject(Exception):
    """Raise from a handler when the event can never succeed: it goes straight to the DLQ.

    Args:
        reason: why the event is invalid; stored with it in the DLQ.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result kind of one handler call, before it is addressed to a task."""

    kind: pb.ResultKind
    delay_ms: int = 0
    error: str = ""


ACKED: Final = Outcome(pb.ACK)
RELEASED: Final = Outcome(pb.RELEASE)


def _error_text(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def outcome_of(exc: Exception | None) -> Outcome:
    """Map what a handler raised (None: it returned) to its result; see the module table."""
    if exc is None:
        return ACKED
    if isinstance(exc, Retry):
        delay_ms = min(_MAX_DELAY_MS, round(exc.delay * 1000))
        return Outcome(pb.NACK, delay_ms, _error_text(str(exc)))
    if isinstance(exc, Reject):
        return Outcome(pb.REJECT, 0, _error_text(exc.reason or type(exc).__name__))
    text = str(exc)
    return Outcome(
        pb.NACK, 0, _error_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    )


def _is_async_callable(obj: object) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    # An instance whose __call__ is async counts too (as starlette's is_async_callable).
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(obj.__call__)
    )


def check_handler(handler: object, name: str = "handler") -> Handler:
    """Return ``handler`` typed as a handler, or raise ValueError if it is not async."""
    if not callable(handler):
        raise ValueError(f"{name}: {handler!r} is not callable")
    if not _is_async_callable(handler):
        raise ValueError(
            f"{name}: must be an async function (async def handle(event) -> None); a "
            "synchronous handler would block every other task of the worker"
        )
    return cast("Handler", handler)


def load_handler(spec: str) -> Handler:
    """Import the handler named ``"package.module:function"`` (the function may be dotted).

    Raises:
        ValueError: naming ``spec`` and the problem — bad format, module not importable,
            attribute missing, or not an async callable.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"handler {spec!r}: expected 'package.module:function'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"handler {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"handler {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return check_handler(obj, f"handler {spec!r}")


async def log_event(event: EventData) -> None:
    """Demo handler: logs the event id and class at DEBUG and ACKs (never the payload)."""
    logger.debug(
        "processor.event event_id=%s class=%s company_id=%s attempt=%d",
        event.event_id,
        pb.Priority.Name(event.priority),
        event.company_id,
        event.attempt,
    )


async def noop(event: EventData) -> None:
    """Benchmark handler: ACKs at once, so a run measures the gateway, not the handler."""
