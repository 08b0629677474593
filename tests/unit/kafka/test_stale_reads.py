"""`drop_stale_reads`: what one batched read across a rebalance may hand on."""

from __future__ import annotations

from typing import Any

from eventgw.kafka.consumer import consume_available
from eventgw.kafka.stale_reads import RebalanceCounter, drop_stale_reads
from tests.unit.kafka.test_group_consumer import Message


def _offsets(messages: list[Any]) -> list[tuple[str | None, int | None]]:
    return [(m.topic(), m.offset()) for m in messages]


def test_a_read_before_its_partition_left_is_dropped() -> None:
    before = [Message("a", 0, 5)]
    after = [Message("a", 0, 3), Message("a", 0, 4), Message("a", 0, 5)]
    kept = drop_stale_reads(before, after, {("a", 0)})
    assert _offsets(kept) == [("a", 3), ("a", 4), ("a", 5)]


def test_reads_of_partitions_that_stayed_are_kept() -> None:
    before = [Message("b", 0, 9)]
    after = [Message("a", 0, 3), Message("b", 0, 10)]
    kept = drop_stale_reads(before, after, {("a", 0)})
    assert _offsets(kept) == [("b", 9), ("a", 3), ("b", 10)]


def test_a_partition_whose_offsets_go_back_keeps_only_its_reads_from_the_restart() -> None:
    # The guard behind librdkafka's own purge: stale reads inside the second read itself.
    after = [Message("a", 0, 5), Message("b", 1, 1), Message("a", 0, 6), Message("a", 0, 6)]
    after += [Message("a", 0, 7), Message("b", 1, 2)]
    kept = drop_stale_reads([], after, set())
    assert _offsets(kept) == [("b", 1), ("a", 6), ("a", 7), ("b", 2)]


def test_messages_without_a_partition_and_errors_are_kept() -> None:
    event = Message(None, None, None)
    error = Message("a", 0, 2)
    error._error = "partition EOF"
    after = [Message("a", 0, 3), event, error, Message("a", 0, 1)]
    kept = drop_stale_reads([], after, set())
    assert kept == [event, error, after[3]]


class ConsumerRebalancingInConsume:
    """A stand-in consumer whose ``consume()`` runs a rebalance, as librdkafka runs the
    callbacks inside it: ``t[0]`` revoked (and assigned again when ``reassign``), then read
    again from its commit, 3."""

    def __init__(self, counter: RebalanceCounter, *, reassign: bool) -> None:
        self._counter = counter
        self._reassign = reassign

    def poll(self, timeout: float) -> Message:
        return Message("t", 0, 5)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self._counter.left([("t", 0)])
        if not self._reassign:
            return []
        self._counter.assigned()
        return [Message("t", 0, o) for o in (3, 4, 5)]


def test_a_read_across_a_revoke_and_reassign_hands_on_only_the_reread() -> None:
    counter = RebalanceCounter()
    consumer = ConsumerRebalancingInConsume(counter, reassign=True)
    assert _offsets(consume_available(consumer, 10, 0.1, counter)) == [("t", 3), ("t", 4), ("t", 5)]
    assert counter.generation == 2


def test_a_read_of_a_partition_revoked_for_good_is_dropped() -> None:
    counter = RebalanceCounter()
    consumer = ConsumerRebalancingInConsume(counter, reassign=False)
    assert consume_available(consumer, 10, 0.1, counter) == []


def test_without_a_rebalance_the_read_is_handed_on_as_it_is() -> None:
    class Steady:
        def poll(self, timeout: float) -> Message:
            return Message("t", 0, 5)

        def consume(self, num_messages: int, timeout: float) -> list[Message]:
            return [Message("t", 0, 6)]

    counter = RebalanceCounter()
    counter.left([("t", 0)])  # an earlier rebalance, before this read
    assert _offsets(consume_available(Steady(), 10, 0.1, counter)) == [("t", 5), ("t", 6)]
    assert _offsets(consume_available(Steady(), 1, 0.1, counter)) == [("t", 5)]
    assert _offsets(consume_available(Steady(), 10, 0.1)) == [("t", 5), ("t", 6)], "no group"
