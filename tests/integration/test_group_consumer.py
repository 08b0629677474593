"""The orchestrator's group consumer outlives a fatal error of its librdkafka consumer.

The fault matrix (tests/faults, scenario ``spool-full``) found an orchestrator that never
read its lanes again after a broker outage: a commit sent with the member id of before the
outage, after the consumer had rejoined under its static ``group.instance.id``, was
answered FENCED_INSTANCE_ID, which librdkafka makes a fatal error — that consumer instance
never fetches again, while the service stayed up and ready. Here the same fatal error is
provoked on purpose: a second consumer joins with the same ``group.instance.id``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import confluent_kafka
import pytest

from eventgw.config.settings import KafkaClusterSettings
from eventgw.kafka.client_config import consumer_config
from eventgw.kafka.group_consumer import Committed, GroupConsumer, TopicPartition

if TYPE_CHECKING:
    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.kafka import TopicFactory

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
