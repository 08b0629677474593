"""The group consumer (the orchestrator's and the failed-writes processor's) against a real
broker: a fatal error of its librdkafka consumer, a rebalance inside one batched poll, a
close that must not hang, and commits with metadata read back.

The fault matrix (tests/faults, scenario ``spool-full``) found an orchestrator that never
read its lanes again after a broker outage: a commit sent with the member id of before the
outage, after the consumer had rejoined under its static ``group.instance.id``, was
answered FENCED_INSTANCE_ID, which librdkafka makes a fatal error — that consumer instance
never fetches again, while the service stayed up and ready. Here the same fatal error is
provoked on purpose: a second consumer joins with the same ``group.instance.id``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import uuid
from typing import TYPE_CHECKING

import confluent_kafka
import pytest

from eventgw.config.settings import KafkaClusterSettings
from eventgw.kafka.admin import TopicSpec, ensure_topics
from eventgw.kafka.client_config import consumer_config
from eventgw.kafka.group_consumer import Committed, GroupConsumer, TopicPartition
from eventgw.orchestrator.ack_tracker import AckTracker
from eventgw.recovery.replay_intent import decode_intent, encode_intent
from eventgw.recovery.settled_prefix import SettledPrefix

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.kafka import BrokerFactory, TopicFactory

pytestmark = pytest.mark.kafka


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value)
    assert producer.flush(10) == 0


def _fence(config: dict[str, object], topic: str) -> None:
    """Join as a second member with the same group.instance.id: the first is fenced."""
    intruder = confluent_kafka.Consumer(config)
    try:
        intruder.subscribe([topic])
        for _ in range(100):  # up to ~20 s for the join
            intruder.poll(0.2)
            if intruder.assignment():
                return
        raise AssertionError("the intruder never got the partition")
    finally:
        intruder.close()  # a static member does not leave: the group keeps its id


async def _until_assigned(consumer: GroupConsumer) -> None:
    """Poll until the group gave ``consumer`` its partitions (30 s at most)."""
    async with asyncio.timeout(30):
        while not consumer.assigned:
            await consumer.poll_batch(10, 0.1)


async def _read(consumer: GroupConsumer, want: bytes, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if any(r.value == want for r in await consumer.poll_batch(100, 0.2)):
                return


async def test_a_fenced_consumer_is_replaced_and_reads_on(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    cluster = KafkaClusterSettings(bootstrap_servers=kafka_broker.bootstrap)
    config = consumer_config(
        cluster, f"g-{uuid.uuid4().hex}", "test-orchestrator", group_instance_id="orch-0"
    )
    config["heartbeat.interval.ms"] = 300  # the fence is noticed at the next heartbeat
    assigned: list[list[TopicPartition]] = []
    revoked: list[list[TopicPartition]] = []

    async def on_assign(partitions: list[TopicPartition], committed: Committed) -> None:
        assigned.append(partitions)

    async def on_revoke(partitions: list[TopicPartition]) -> Committed:
        revoked.append(partitions)
        return {}

    consumer = GroupConsumer(config, [topic], on_assign, on_revoke)
    await consumer.start()
    try:
        await asyncio.to_thread(_produce, kafka_broker.bootstrap, topic, b"before")
        await _read(consumer, b"before", 60)
        await asyncio.to_thread(_fence, config, topic)
        # librdkafka learns of the fence from a heartbeat or commit answer; until then the
        # fenced consumer still fetches. Give it ten heartbeats to notice.
        async with asyncio.timeout(10):
            for _ in range(15):
                await consumer.poll_batch(100, 0.2)
        await asyncio.to_thread(_produce, kafka_broker.bootstrap, topic, b"after")
        await _read(consumer, b"after", 60)
    finally:
        await consumer.close()
    assert revoked[0] == [(topic, 0)], "the fenced consumer's partitions were given up"
    assert len(assigned) >= 2, "the replacement joined and got the partition again"


class SecondMember:
    """A plain consumer of the same group, polled on a thread of its own (joins at once)."""

    def __init__(self, config: dict[str, object], topic: str) -> None:
        self.consumer = confluent_kafka.Consumer(config)
        self.consumer.subscribe([topic])
        self.assigned = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.consumer.poll(0.05)
            if self.consumer.assignment():
                self.assigned.set()

    def close(self) -> None:
        """Stop polling and close (a static member does not leave: no further rebalance)."""
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


def _member_config(bootstrap: str, group: str, instance: str) -> dict[str, object]:
    cluster = KafkaClusterSettings(bootstrap_servers=bootstrap)
    config = consumer_config(cluster, group, "test-orchestrator", group_instance_id=instance)
    config["heartbeat.interval.ms"] = 100  # a rebalance is noticed within 0.1 s
    return config


async def test_close_returns_within_its_deadline_while_partitions_are_handed_back(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    """librdkafka #4884: ``close()`` while the group hands this member partitions back
    can block forever in the rebalance callback's ``assign``, holding the GIL (seen in
    test_fleets: 20 minutes). Here a second member joins; this one runs the revoke, then
    stops polling, so its new assignment waits in its queue when it closes. On a loaded
    machine this froze the whole test process (gdb: ``Consumer_rebalance_cb`` →
    ``rd_kafka_assign`` waiting, inside ``close()``); quiet, it passed 5 of 5 before the fix."""
    topic = new_topic(partitions=2)
    group = f"g-{uuid.uuid4().hex}"
    revoked: list[list[TopicPartition]] = []

    async def on_assign(partitions: list[TopicPartition], committed: Committed) -> None:
        pass

    async def on_revoke(partitions: list[TopicPartition]) -> Committed:
        revoked.append(partitions)
        return {}

    close_timeout_s = 5.0
    consumer = GroupConsumer(
        _member_config(kafka_broker.bootstrap, group, "orch-0"),
        [topic],
        on_assign,
        on_revoke,
        close_timeout_s=close_timeout_s,
    )
    await consumer.start()
    second: SecondMember | None = None
    try:
        await _until_assigned(consumer)
        assert consumer.assigned == {(topic, 0), (topic, 1)}
        second = SecondMember(_member_config(kafka_broker.bootstrap, group, "orch-1"), topic)
        async with asyncio.timeout(30):
            while not revoked:  # polls that return at once: none waits for the assignment
                await consumer.poll_batch(10, 0)
                await asyncio.sleep(0.01)
            # The coordinator has answered both members' sync: this one's assignment is
            # on its way to (or already in) its queue, which nobody polls now.
            await asyncio.to_thread(second.assigned.wait, 30)
        assert second.assigned.is_set()
    finally:
        started = time.monotonic()
        await consumer.close()
        elapsed_s = time.monotonic() - started
        if second is not None:
            await asyncio.to_thread(second.close)
    assert elapsed_s < close_timeout_s + 1.0, f"close took {elapsed_s:.1f} s"
    assert revoked[-1], "the assignment handed back was revoked again before the close"


class ConsumerWithSlowRead(confluent_kafka.Consumer):
    """A real consumer whose next ``consume()``, once armed, first lets a second member join
    and then waits up to 10 s for its records instead of returning at once.

    librdkafka runs rebalance callbacks inside ``poll()``/``consume()``. In the orchestrator a
    revoke and re-assignment landed inside the ``consume(n, 0)`` that follows a ``poll()``
    only on a loaded machine (test_scale_out run in parallel); the longer wait makes that
    timing certain: the revoke, the re-assignment and the re-read all happen in that call.
    """

    armed: Callable[[], None] | None = None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[confluent_kafka.Message]:
        join, self.armed = self.armed, None
        if join is None:
            return super().consume(num_messages, timeout)
        join()
        return super().consume(num_messages, 10.0)


async def test_a_revoke_and_reassign_inside_one_poll_hands_on_only_the_reread(
    kafka_broker: LocalBroker, new_topic: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, other_topic = new_topic(partitions=1), new_topic(partitions=1)
    group = f"g-{uuid.uuid4().hex}"
    events: list[str] = []

    async def on_assign(partitions: list[TopicPartition], committed: Committed) -> None:
        events.append(f"assign {partitions}")

    async def on_revoke(partitions: list[TopicPartition]) -> Committed:
        events.append(f"revoke {partitions}")
        return {}  # nothing committed: the re-assigned partition is read again from 0

    made: list[ConsumerWithSlowRead] = []

    def make(config: dict[str, object]) -> ConsumerWithSlowRead:
        made.append(ConsumerWithSlowRead(config))
        return made[-1]

    monkeypatch.setattr(confluent_kafka, "Consumer", make)
    consumer = GroupConsumer(
        _member_config(kafka_broker.bootstrap, group, "orch-0"), [topic], on_assign, on_revoke
    )
    await consumer.start()
    monkeypatch.undo()
    second: list[SecondMember] = []
    try:
        async with asyncio.timeout(30):
            while not consumer.assigned:
                assert await consumer.poll_batch(10, 0.1) == []  # the topic is empty yet
        for i in range(10):
            await asyncio.to_thread(_produce, kafka_broker.bootstrap, topic, b"%d" % i)
        # The member that joins reads another topic: the group rebalances (all partitions
        # are revoked, eager protocol) and this member gets its partition back.
        made[0].armed = lambda: second.append(
            SecondMember(_member_config(kafka_broker.bootstrap, group, "orch-1"), other_topic)
        )
        async with asyncio.timeout(20):
            records = await consumer.poll_batch(11, 5.0)
        in_poll = list(events)
    finally:
        await consumer.close()
        for member in second:
            await asyncio.to_thread(member.close)
    assert in_poll[-2:] == [f"revoke [('{topic}', 0)]", f"assign [('{topic}', 0)]"]
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets)), f"offsets went back: {offsets}"
    assert offsets[0] == 0, "the partition was read again from its (absent) commit"
    tracker = AckTracker()
    for r in records:  # what the orchestrator does with a batch: it crashed here
        tracker.track(r.topic, r.partition, r.offset)
    # The failed-writes processor reads through a GroupConsumer too: it crashed here.
    SettledPrefix([(r.topic, r.partition, r.offset) for r in records])


async def test_close_returns_within_its_deadline_when_the_broker_stops_answering(
    private_broker: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The revoke at close commits, and waits for a broker that does not answer (frozen
    with SIGSTOP, as a host under a stalled disk or a network partition would look): before
    close had a deadline, a service then stopped only after librdkafka's timeouts, or never."""
    broker = private_broker("close-frozen")
    topic = f"t-{uuid.uuid4().hex}"
    await asyncio.to_thread(ensure_topics, broker.bootstrap, [TopicSpec(topic, partitions=1)])
    await asyncio.to_thread(_produce, broker.bootstrap, topic, b"one")

    async def on_assign(partitions: list[TopicPartition], committed: Committed) -> None:
        pass

    async def on_revoke(partitions: list[TopicPartition]) -> Committed:
        return {(topic, 0): (1, "")}  # the record read is done: commit past it

    close_timeout_s = 2.0
    config = _member_config(broker.bootstrap, f"g-{uuid.uuid4().hex}", "orch-0")
    consumer = GroupConsumer(config, [topic], on_assign, on_revoke, close_timeout_s=close_timeout_s)
    await consumer.start()
    pid = broker.status()["pid"]
    try:
        await _read(consumer, b"one", 60)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="eventgw.kafka.consumer_close"):
            await consumer.close()
        elapsed_s = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed_s < close_timeout_s + 1.0, f"close took {elapsed_s:.1f} s"
    assert "kafka.consumer_close_overran" in caplog.text


async def test_commits_carry_metadata_read_back_on_request_and_on_assignment(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    """What the failed-writes processor needs from the one group member: its replay intent
    goes in the commit's metadata, and comes back both from `committed` (the takeover's
    read-back) and in the next member's ``on_assign`` (the orchestrator's finished runs)."""
    topic = new_topic(partitions=2)
    group = f"g-{uuid.uuid4().hex}"
    intent = encode_intent(1_700_000_000_000)
    seen: list[Committed] = []

    async def on_assign(partitions: list[TopicPartition], committed: Committed) -> None:
        seen.append(committed)

    async def on_revoke(partitions: list[TopicPartition]) -> Committed:
        return {}

    config = _member_config(kafka_broker.bootstrap, group, "recovery-0")
    del config["group.instance.id"]  # as the failed-writes processor: a dynamic member
    first = GroupConsumer(config, [topic], on_assign, on_revoke)
    await first.start()
    try:
        await _until_assigned(first)
        assert seen == [{}], "a new group has committed nothing"
        assert await first.committed([(topic, 0), (topic, 1)], 10) == {}
        await first.commit({(topic, 0): (5, intent), (topic, 1): (3, "")})
        with pytest.raises(ValueError, match=rf"offsets: {topic}\[1\] offset -1 is below 0"):
            await first.commit({(topic, 0): (9, ""), (topic, 1): (-1, "")})
        committed = await first.committed([(topic, 0), (topic, 1)], 10)
    finally:
        await first.close()
    assert committed == {(topic, 0): (5, intent), (topic, 1): (3, "")}, "the bad commit: none"
    assert decode_intent(committed[topic, 0][1]) == 1_700_000_000_000

    second = GroupConsumer(config, [topic], on_assign, on_revoke)
    await second.start()
    try:
        await _until_assigned(second)
    finally:
        await second.close()
    assert seen[1:] == [{(topic, 0): (5, intent), (topic, 1): (3, "")}]
