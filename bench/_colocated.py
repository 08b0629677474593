"""Ingest with the prep publisher in the same process (no gRPC hop): the co-located layout.

SYSTEM.md 2.1 allows ingest to call the publisher "in-process when co-located"; the CLI has
no command for that layout yet, so the benchmark starts it with this module:
``python -m bench._colocated``, configured by the same ``EVENTGW_*`` variables as
``eventgw ingest``. It exists only to measure what the gRPC hop between the two costs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from eventgw.cli import logs
from eventgw.cli.runner import run
from eventgw.config.settings import EventGwSettings, load_settings
from eventgw.ingest.service import IngestService
from eventgw.publisher.embedded import EmbeddedPrepPublisher

if TYPE_CHECKING:
    import asyncio


class ColocatedGateway:
    """IngestService whose publish function is an `EmbeddedPrepPublisher` in this process."""

    name = "colocated"

    def __init__(self, settings: EventGwSettings) -> None:
        self.settings = settings

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """Open the producers (downstream first), serve ingest until ``stop``, then flush."""
        publisher = EmbeddedPrepPublisher(self.settings)
        await publisher.init()
        try:
            ingest = IngestService(self.settings, publish=publisher.publish_request)
            await ingest.run(ready, stop)
        finally:
            await publisher.stop()


def main() -> int:
    """Run until SIGTERM/SIGINT."""
    settings = load_settings()
    logs.configure(settings.observability.log_level, settings.observability.log_format)
    return run([ColocatedGateway(settings)])


if __name__ == "__main__":
    sys.exit(main())
