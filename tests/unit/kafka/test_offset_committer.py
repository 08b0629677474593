"""`OffsetCommitter`: each partition through the member that owns it, on wake or on a timer,
one commit at a time; a failure is retried with the next round, never marked committed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from eventgw.kafka.consumer import ConsumerError
from eventgw.kafka.offset_committer import OffsetCommitter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from eventgw.kafka.group_consumer import Committed, TopicPartition


class Source:
    """Positions that advance by hand; remembers what was marked committed."""

    def __init__(self) -> None:
        self.positions: dict[TopicPartition, int] = {}
        self.marked: dict[TopicPartition, int] = {}

    def committable(self) -> Committed:
        return {tp: (o, f"m{o}") for tp, o in self.positions.items() if o > self.marked.get(tp, -1)}

    def mark_committed(self, positions: Mapping[TopicPartition, int]) -> None:
        self.marked.update(positions)


class Member:
    """A group member owning ``assigned``; ``fail`` makes its next commits raise."""

    def __init__(self, *assigned: TopicPartition) -> None:
        self.assigned = set(assigned)
        self.commits: list[Committed] = []
        self.fail = 0
        self.committed = asyncio.Event()

    async def commit(self, offsets: Committed) -> None:
        if self.fail:
            self.fail -= 1
            raise ConsumerError("commit failed: REBALANCE_IN_PROGRESS")
        self.commits.append(dict(offsets))
        self.committed.set()


async def test_each_partition_goes_through_the_member_that_owns_it() -> None:
    source, urgent, bulk = Source(), Member(("p30", 0)), Member(("p10", 0))
    committer = OffsetCommitter(source, [urgent, bulk], name="test")
    source.positions = {("p30", 0): 4, ("p10", 0): 9, ("gone", 0): 2}
    await committer.commit()
    assert urgent.commits == [{("p30", 0): (4, "m4")}]
    assert bulk.commits == [{("p10", 0): (9, "m9")}]
    assert source.marked == {("p30", 0): 4, ("p10", 0): 9}, "nobody owns gone[0]: not marked"
    assert committer.commits == 2


async def test_a_failed_commit_is_not_marked_and_goes_again_next_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, member = Source(), Member(("t", 0))
    member.fail = 1
    committer = OffsetCommitter(source, [member], name="recovery")
    source.positions = {("t", 0): 3}
    await committer.commit()
    assert (source.marked, committer.failures) == ({}, 1)
    assert "recovery.commit_failed" in caplog.text
    await committer.commit()
    assert member.commits == [{("t", 0): (3, "m3")}]
    assert (source.marked, committer.commits) == ({("t", 0): 3}, 1)


async def test_run_commits_on_wake_and_returns_on_close_without_committing() -> None:
    source, member = Source(), Member(("t", 0))
    committer = OffsetCommitter(source, [member], name="test")
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        source.positions = {("t", 0): 1}
        committer.wake()
        await member.committed.wait()
        source.positions = {("t", 0): 2}
        committer.close()
    assert member.commits == [{("t", 0): (1, "m1")}], "the drain commits, not run()"
    await committer.commit()
    assert member.commits[-1] == {("t", 0): (2, "m2")}


async def test_run_commits_every_interval_without_a_wake() -> None:
    source, member = Source(), Member(("t", 0))
    committer = OffsetCommitter(source, [member], name="test", interval_s=0.01)
    source.positions = {("t", 0): 7}
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(committer.run())
        await member.committed.wait()
        committer.close()
    assert member.commits == [{("t", 0): (7, "m7")}]


@pytest.mark.parametrize("interval_s", [0.0, -1.0])
def test_the_interval_must_be_positive(interval_s: float) -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0 or None"):
        OffsetCommitter(Source(), [Member()], name="test", interval_s=interval_s)


def test_a_committer_needs_a_member() -> None:
    with pytest.raises(ValueError, match="targets: at least one group member"):
        OffsetCommitter(Source(), [], name="test")
