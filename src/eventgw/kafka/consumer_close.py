"""Leaving a consumer group without librdkafka's close-time hang, and within a deadline.

librdkafka's ``close()`` serves the rebalance events still queued for the application. If an
assignment is among them (a rebalance handed partitions back just before the close),
confluent-kafka's rebalance callback calls ``assign`` from inside ``close()``, and that call
can wait forever (librdkafka issue #4884) — **holding the GIL**, so the whole process
freezes, not just the closing thread (seen: test_fleets stuck for 20 minutes, and this
module's own first version, whose drain stopped as soon as nothing was assigned). The
workaround (the one the issue's maintainers give): unsubscribe, then poll until no
rebalance callback runs and nothing is assigned, so every queued rebalance event is served
by ``poll()``, where ``assign`` works; only then close. After ``unsubscribe`` returns no
new assignment is handed out (librdkafka drops a late SyncGroup answer).

What can still block without the GIL held — the revoke's synchronous commit to a broker
that does not answer (minutes, measured with a frozen broker), librdkafka's own waits — is
bounded by `close_within`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventgw.kafka.stale_reads import RebalanceCounter

__all__ = ["DEFAULT_CLOSE_TIMEOUT_S", "close_within", "leave_group"]

logger = logging.getLogger(__name__)

DEFAULT_CLOSE_TIMEOUT_S = 10.0
"""How long closing a consumer may take before it is given up (left behind) and we move on."""

_DRAIN_POLL_S = 0.05


def leave_group(consumer: Any, rebalances: RebalanceCounter, drain_s: float) -> None:
    """Unsubscribe; poll until a poll runs no rebalance callback and nothing is assigned (at
    most ``drain_s``); close. Blocking: call it on a thread (`close_within`).

    The revoke callback runs in these polls, so the owner drops its partitions and commits
    as on any revoke. Records the polls return are dropped: not handed on, so not committed.
    """
    until = time.monotonic() + drain_s
    try:
        consumer.unsubscribe()
        while time.monotonic() < until:
            generation = rebalances.generation
            consumer.poll(_DRAIN_POLL_S)
            if rebalances.generation == generation and not consumer.assignment():
                break
    finally:
        consumer.close()


async def close_within(close: Callable[[], None], timeout_s: float) -> None:
    """Run ``close`` on a daemon thread; return when it ends, or after ``timeout_s``.

    At the deadline ``kafka.consumer_close_overran`` is logged at WARNING and the thread is
    left behind with its consumer, so a service always stops (what was not committed is read
    again). A failure of ``close`` is logged (``kafka.consumer_close_failed``), not raised.
    Not `asyncio.to_thread`: ``asyncio.run`` waits for the default executor's threads at
    exit, and the interpreter joins them, so a hung close there would still hang the
    process. Nothing bounds a close that blocks while holding the GIL: `leave_group` is what
    keeps librdkafka from doing that.
    """
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def settle(exc: Exception | None) -> None:
        if ended.done():  # cancelled at the deadline: nobody waits any more
            return
        if exc is None:
            ended.set_result(None)
        else:
            ended.set_exception(exc)

    def run() -> None:
        error: Exception | None = None
        try:
            close()
        except Exception as exc:  # noqa: BLE001  (thread boundary: handed to the loop)
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, error)

    started = time.monotonic()
    threading.Thread(target=run, name="eventgw-consumer-close", daemon=True).start()
    try:
        async with asyncio.timeout(timeout_s):
            await ended  # cancelled at the deadline: `settle` then does nothing
    except TimeoutError:
        logger.warning(
            "kafka.consumer_close_overran timeout_s=%.1f (the consumer is left behind)",
            timeout_s,
        )
    except Exception as exc:  # noqa: BLE001  (any failure to close is logged: we move on)
        logger.warning("kafka.consumer_close_failed error=%s", exc)
    else:
        logger.info("kafka.consumer_closed seconds=%.2f", time.monotonic() - started)
