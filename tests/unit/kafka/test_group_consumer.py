"""Tests for eventgw.kafka.group_consumer that need no broker: the rebalance callbacks and
the pure rule of which reads across a rebalance are handed on."""

from __future__ import annotations

import asyncio
from typing import Any

import confluent_kafka
import pytest

from eventgw.kafka.group_consumer import (
    Committed,
    GroupConsumer,
    TopicPartition,
)


class CommitsReader:
    """The part of a confluent-kafka Consumer the assign callback uses."""

    def __init__(self) -> None:
        self.asked: list[list[Any]] = []

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.asked.append(partitions)
        return [confluent_kafka.TopicPartition(p.topic, p.partition, 7) for p in partitions]


async def test_an_assignment_that_arrives_while_closing_is_ignored() -> None:
    """close() may finish a rebalance: reading those partitions' commits then waited for a
    broker handle being destroyed (a replica moving fleets stalled for tens of seconds)."""
    seen: list[tuple[list[TopicPartition], Committed]] = []

    async def on_assign(tps: list[TopicPartition], committed: Committed) -> None:
        seen.append((tps, committed))

    async def on_revoke(tps: list[TopicPartition]) -> Committed:
        return {}

    group = GroupConsumer({}, ["t"], on_assign, on_revoke)
    group._loop = asyncio.get_running_loop()
    reader = CommitsReader()
    partitions = [confluent_kafka.TopicPartition("t", 0)]
    await asyncio.to_thread(group._assign_cb, reader, partitions)
    assert seen == [([("t", 0)], {("t", 0): (7, "")})]
    assert group.assigned == {("t", 0)}

    group._closing = True
    await asyncio.to_thread(group._assign_cb, reader, [confluent_kafka.TopicPartition("t", 1)])
    assert len(reader.asked) == 1, "no commit read for the late assignment"
    assert len(seen) == 1, "the owner never hears of it"
    assert group.assigned == {("t", 0)}


class Message:
    """The part of a confluent-kafka Message that the consumer reads."""

    def __init__(self, topic: str | None, partition: int | None, offset: int | None) -> None:
        self._tp = (topic, partition, offset)
        self._error: object = None

    def topic(self) -> str | None:
        return self._tp[0]

    def partition(self) -> int | None:
        return self._tp[1]

    def offset(self) -> int | None:
        return self._tp[2]

    def error(self) -> object:
        return self._error

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> None:
        return None


class RebalancingConsumer:
    """A stand-in whose ``consume()`` runs a revoke and re-assignment of ``t[0]`` (as
    librdkafka runs rebalance callbacks inside it) and then reads from the commit, 3."""

    def __init__(self, group: GroupConsumer) -> None:
        self._group = group

    def poll(self, timeout: float) -> Message:
        return Message("t", 0, 5)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        partitions = [confluent_kafka.TopicPartition("t", 0)]
        self._group._revoke_cb(self, partitions)
        self._group._assign_cb(self, partitions)
        return [Message("t", 0, o) for o in (3, 4, 5, 6)]

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        return [confluent_kafka.TopicPartition(p.topic, p.partition, 3) for p in partitions]


async def test_a_poll_across_a_revoke_and_reassign_hands_on_only_what_followed() -> None:
    events: list[str] = []

    async def on_assign(tps: list[TopicPartition], committed: Committed) -> None:
        events.append("assign")

    async def on_revoke(tps: list[TopicPartition]) -> Committed:
        events.append("revoke")
        return {}

    group = GroupConsumer({}, ["t"], on_assign, on_revoke)
    group._loop = asyncio.get_running_loop()
    group._consumer = RebalancingConsumer(group)  # type: ignore[assignment]  # a stand-in
    records = await group.poll_batch(10, 0.1)
    assert events == ["revoke", "assign"]
    assert [r.offset for r in records] == [3, 4, 5, 6]
    assert group.generation == 2
    assert group.assigned == {("t", 0)}


async def test_a_revoke_whose_hook_fails_still_counts_and_releases_the_partitions() -> None:
    async def on_assign(tps: list[TopicPartition], committed: Committed) -> None:
        pass

    async def on_revoke(tps: list[TopicPartition]) -> Committed:
        raise RuntimeError("owner failed")

    group = GroupConsumer({}, ["t"], on_assign, on_revoke)
    group._loop = asyncio.get_running_loop()
    group.assigned.add(("t", 0))
    partitions = [confluent_kafka.TopicPartition("t", 0)]
    with pytest.raises(RuntimeError, match="owner failed"):
        await asyncio.to_thread(group._revoke_cb, CommitsReader(), partitions)
    assert group.assigned == set()
    assert group.generation == 1


def test_close_timeout_must_be_positive() -> None:
    async def on_assign(tps: list[TopicPartition], committed: Committed) -> None:
        pass

    async def on_revoke(tps: list[TopicPartition]) -> Committed:
        return {}

    with pytest.raises(ValueError, match="close_timeout_s"):
        GroupConsumer({}, ["t"], on_assign, on_revoke, close_timeout_s=0)


async def test_a_commit_below_offset_0_is_refused_naming_the_partition() -> None:
    async def on_assign(tps: list[TopicPartition], committed: Committed) -> None:
        pass

    async def on_revoke(tps: list[TopicPartition]) -> Committed:
        return {}

    group = GroupConsumer({}, ["t"], on_assign, on_revoke)
    with pytest.raises(ValueError, match=r"offsets: t\[3\] offset -2 is below 0"):
        await group.commit({("t", 0): (5, ""), ("t", 3): (-2, "")})
    with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
        await group.committed([("t", 0)], 0)
