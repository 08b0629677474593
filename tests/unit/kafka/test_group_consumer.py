"""Tests for eventgw.kafka.group_consumer that need no broker: the rebalance callbacks."""

from __future__ import annotations

import asyncio
from typing import Any

import confluent_kafka

from eventgw.kafka.group_consumer import Committed, GroupConsumer, TopicPartition


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
