"""The Service protocol and `run_services`, which runs several services to a clean stop.

Shutdown is a normal code path: the CLI turns SIGTERM/SIGINT into the ``stop`` event; every
service then closes intake, drains in-flight work within its own deadline and returns.
Services are started in the order given (downstream first) and each waits for its
predecessor to be ready, so an upstream service never serves before what it feeds exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)


class Service(Protocol):
    """A long-running component.

    ``run`` opens its resources, sets ``ready`` once it is serving, and returns after it
    has drained once ``stop`` is set. An exception ends every service of the group.
    """

    name: str

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None: ...


async def run_services(
    services: Sequence[Service], stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run ``services`` (downstream first) until ``stop``; sets ``ready`` when all are ready.

    Stop order is the reverse of start order: each service gets its own stop event, set
    only after every service started after it has returned (upstream stops first).
    Raises:
        ExceptionGroup: with the error of any service that failed; the others are stopped.
    """
    stops = [asyncio.Event() for _ in services]
    readies = [asyncio.Event() for _ in services]
    failed = asyncio.Event()

    async def one(i: int, service: Service) -> None:
        try:
            await service.run(readies[i], stops[i])
        except BaseException:
            failed.set()
            raise
        finally:
            readies[i].set()
        logger.info("service.stopped name=%s", service.name)

    async def shutdown() -> None:
        await wait_any(stop, failed)
        for i in reversed(range(len(tasks))):
            stops[i].set()
            await asyncio.wait({tasks[i]})  # its own error, if any, surfaces via the group

    tasks: list[asyncio.Task[None]] = []
    async with asyncio.TaskGroup() as tg:
        for i, service in enumerate(services):
            tasks.append(tg.create_task(one(i, service), name=service.name))
            await wait_any(readies[i], failed)
            if failed.is_set():
                break
            logger.info("service.ready name=%s", service.name)
        if ready is not None and not failed.is_set():
            ready.set()
        tg.create_task(shutdown(), name="shutdown")


async def wait_any(*events: asyncio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, returning early (without error) when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
