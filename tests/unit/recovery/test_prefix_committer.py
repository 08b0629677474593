"""Commits follow progress: each settled prefix is committed while the batch goes on, one
commit at a time, once more at the end; a failed commit is retried with the next progress.
"""

from __future__ import annotations

import asyncio

from eventgw.core.clock import FakeClock
from eventgw.kafka.consumer import ConsumerError
from eventgw.recovery.prefix_committer import PrefixCommitter
from eventgw.recovery.replay_intent import decode_intent
from eventgw.recovery.settled_prefix import SettledPrefix

FW = "failed-writes"


class FakeConsumer:
    """Records commits; ``fail`` makes the next ones raise; ``gate`` holds a commit open.

    Owns partitions 0 and 1 of ``FW`` (`assigned`)."""

    def __init__(self) -> None:
        self.assigned = {(FW, 0), (FW, 1)}
        self.commits: list[dict[tuple[str, int], int]] = []
        self.metadata: list[dict[tuple[str, int], str]] = []
        self.fail = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def commit(self, offsets: dict[tuple[str, int], tuple[int, str]]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConsumerError("commit failed: REBALANCE_IN_PROGRESS")
        self.commits.append({tp: offset for tp, (offset, _) in offsets.items()})
        self.metadata.append({tp: metadata for tp, (_, metadata) in offsets.items()})


async def settle_one_by_one(committer: PrefixCommitter, indexes: list[int]) -> None:
    for i in indexes:
        committer.settled([i])
        await asyncio.sleep(0)  # the committer runs between chunks, as the real loop lets it
        await asyncio.sleep(0)


async def test_each_advance_is_committed_while_the_batch_goes_on() -> None:
    consumer = FakeConsumer()
    committer = PrefixCommitter(
        consumer, SettledPrefix([(FW, 0, o) for o in range(100, 104)]), FakeClock()
    )
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        await settle_one_by_one(committer, [0, 2])  # 2 waits for 1
        assert consumer.commits == [{(FW, 0): 101}], "committed before the batch ended"
        await settle_one_by_one(committer, [1, 3])
        committer.close()
    assert consumer.commits == [{(FW, 0): 101}, {(FW, 0): 103}, {(FW, 0): 104}]
    assert committer.commits == 3


async def test_nothing_unsettled_is_ever_committed() -> None:
    consumer = FakeConsumer()
    committer = PrefixCommitter(
        consumer, SettledPrefix([(FW, 0, 0), (FW, 0, 1), (FW, 1, 0)]), FakeClock()
    )
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        await settle_one_by_one(committer, [1])  # partition 0's head (offset 0) is pending
        committer.close()
    assert consumer.commits == [], "a record above an unsettled one is not committed"


async def test_a_failed_commit_is_retried_with_the_next_progress() -> None:
    consumer = FakeConsumer()
    consumer.fail = 1
    committer = PrefixCommitter(consumer, SettledPrefix([(FW, 0, 0), (FW, 0, 1)]), FakeClock())
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        await settle_one_by_one(committer, [0])
        assert consumer.commits == []
        await settle_one_by_one(committer, [1])
        committer.close()
    assert consumer.commits == [{(FW, 0): 2}]
    assert (committer.commits, committer.failures) == (1, 1)


async def test_progress_and_close_during_a_commit_are_committed_after_it() -> None:
    """One commit in flight at a time; what arrives meanwhile goes in the next one."""
    consumer = FakeConsumer()
    consumer.gate = asyncio.Event()
    committer = PrefixCommitter(
        consumer, SettledPrefix([(FW, 0, o) for o in range(3)]), FakeClock()
    )
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        committer.settled([0])
        await consumer.entered.wait()  # the first commit (of 1) is in flight
        committer.settled([1])
        committer.settled([2])
        committer.close()
        consumer.gate.set()
    assert consumer.commits == [{(FW, 0): 1}, {(FW, 0): 3}], "coalesced, nothing left behind"


async def test_each_commit_carries_the_replay_intent_of_its_partition() -> None:
    """The intent is the first send of a record past the position, or the time of the
    commit when none was sent: a restart reads the lanes back from there."""
    clock = FakeClock(wall_ms=1_000_000)
    consumer = FakeConsumer()
    committer = PrefixCommitter(
        consumer, SettledPrefix([(FW, 0, o) for o in range(4)] + [(FW, 1, 0)]), clock
    )
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        committer.sending([0, 1, 4])  # at 1,000,000
        clock.advance(1.0)
        committer.sending([2, 3])  # at 1,001,000
        clock.advance(1.0)
        await settle_one_by_one(committer, [0, 2, 4])  # 1 pending; 2 confirmed above it
        committer.close()
    assert consumer.commits == [{(FW, 0): 1}, {(FW, 1): 1}]
    intents = [{tp: decode_intent(m) for tp, m in ms.items()} for ms in consumer.metadata]
    # Partition 0: offsets 1 (pending, sent first at 1,000,000) and 2, 3 are past position 1.
    # Partition 1: nothing past its position: the commit's own time.
    assert intents == [{(FW, 0): 1_000_000}, {(FW, 1): 1_002_000}]


async def test_a_record_replayed_earlier_keeps_its_older_intent_past_the_position() -> None:
    """Skipped by the read-back and left past the position by a pending record before it:
    the commit's intent goes back to when its copy was found from, so a second kill still
    finds it."""
    clock = FakeClock(wall_ms=2_000_000)
    consumer = FakeConsumer()
    committer = PrefixCommitter(consumer, SettledPrefix([(FW, 0, o) for o in range(3)]), clock)
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        committer.replayed_earlier([(2, 1_500_000)])  # found from the last owner's intent
        committer.sending([0, 1])  # at 2,000,000
        await settle_one_by_one(committer, [0])  # 1 pending
        committer.close()
    assert consumer.commits == [{(FW, 0): 1}]
    assert decode_intent(consumer.metadata[0][FW, 0]) == 1_500_000
