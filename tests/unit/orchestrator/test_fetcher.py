"""The retry fetcher keeps its memory pause across a rebalance (bounded memory).

Partitions newly assigned to a consumer fetch unpaused. While the retry lane is over its
share of the buffer, the fetcher must pause them again, not only when the share is first
crossed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eventgw.orchestrator.fetcher import RetryFetcher


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


async def run_once(fetcher: RetryFetcher, stop: asyncio.Event) -> None:
    stop.clear()
    await fetcher.run(stop)


async def test_partitions_assigned_while_over_share_are_paused_again() -> None:
    stop = asyncio.Event()
    retry = FakeRetryConsumer(stop)
    d = FakeDispatcher(over_share=True)
    fetcher = RetryFetcher(retry, d, 100)  # type: ignore[arg-type]  # fakes of the protocols
    await run_once(fetcher, stop)
    assert retry.calls == [("pause", [("retry-60s", 0)])]  # crossing the share pauses

    await run_once(fetcher, stop)
    assert len(retry.calls) == 1  # still over: nothing to do

    # A rebalance hands this replica a new partition; it fetches unpaused until re-paused.
    retry.assigned = [("retry-60s", 0), ("retry-60s", 1)]
    fetcher.on_assign()
    await run_once(fetcher, stop)
    assert retry.calls[-1] == ("pause", [("retry-60s", 0), ("retry-60s", 1)])

    d.buffer.over_share = False
    await run_once(fetcher, stop)
    assert retry.calls[-1] == ("resume", [("retry-60s", 0), ("retry-60s", 1)])
