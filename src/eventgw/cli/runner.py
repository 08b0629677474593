"""Run services under asyncio with SIGTERM/SIGINT turned into the ``stop`` event."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import uvloop

from eventgw.core.lifecycle import Service, run_services

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)


def run(services: Sequence[Service]) -> int:
    """Run ``services`` (downstream first) until a signal; returns a process exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_services(services, stop)

    code = 0
    try:
        uvloop.run(main())
    except* OSError as group:
        # Start-up failures such as a port in use: one clear line, not a traceback.
        for exc in group.exceptions:
            logger.error("service.failed error=%s", exc)
        code = 1
    return code
