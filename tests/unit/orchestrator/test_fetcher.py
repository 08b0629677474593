"""The retry consumer keeps its memory pause across a rebalance (bounded memory).

Partitions newly assigned to a consumer fetch unpaused. While the retry lane is over its
share of the buffer, the orchestrator must pause them again, not only when the share is
first crossed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eventgw.config.settings import EventGwSettings
from eventgw.orchestrator.service import OrchestratorService


class FakeRetryConsumer:
    def __init__(self, stop: asyncio.Event) -> None:
        self.assigned: list[tuple[str, int]] = [("retry-60s", 0)]
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []
        self._stop = stop

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[Any]:
        self._stop.set()  # one loop iteration per run
        return []

    async def pause(self, partitions: list[tuple[str, int]]) -> None:
        self.calls.append(("pause", list(partitions)))

    async def resume(self, partitions: list[tuple[str, int]]) -> None:
        self.calls.append(("resume", list(partitions)))


class FakeBuffer:
    def __init__(self, over_share: bool) -> None:
        self.over_share = over_share

    def should_pause(self, lane: str) -> bool:
        assert lane == "retry"
        return self.over_share


class FakeDispatcher:
    def __init__(self, over_share: bool) -> None:
        self.buffer = FakeBuffer(over_share)

    def add_records(self, records: list[Any]) -> int:
        return len(records)


async def run_once(
    service: OrchestratorService, retry: FakeRetryConsumer, stop: asyncio.Event, d: FakeDispatcher
) -> None:
    stop.clear()
    await service._retry_loop(retry, d, stop)  # type: ignore[arg-type]


async def test_partitions_assigned_while_over_share_are_paused_again() -> None:
    service = OrchestratorService(EventGwSettings())
    stop = asyncio.Event()
    retry = FakeRetryConsumer(stop)
    d = FakeDispatcher(over_share=True)
    await run_once(service, retry, stop, d)
    assert retry.calls == [("pause", [("retry-60s", 0)])]  # crossing the share pauses

    await run_once(service, retry, stop, d)
    assert len(retry.calls) == 1  # still over: nothing to do

    # A rebalance hands this replica a new partition; it fetches unpaused until re-paused.
    retry.assigned = [("retry-60s", 0), ("retry-60s", 1)]
    await service._on_retry_assign([("retry-60s", 1)])
    await run_once(service, retry, stop, d)
    assert retry.calls[-1] == ("pause", [("retry-60s", 0), ("retry-60s", 1)])

    d.buffer.over_share = False
    await run_once(service, retry, stop, d)
    assert retry.calls[-1] == ("resume", [("retry-60s", 0), ("retry-60s", 1)])
