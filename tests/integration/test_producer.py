"""eventgw's producers against a real broker: what a record carries, and a broker that stops
answering (SIGSTOP).

librdkafka's idempotent producer polls with a zero timeout for as long as a partition has a
request in flight and records waiting past ``linger.ms``: 0.7-0.85 of a core per producer
while the broker is slow (docs/design.md, "Producers"). `producer_config` turns it off and
keeps one request in flight; these tests prove the producer then waits without spinning, and
that the records still arrive once, in the order they were produced.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING

import confluent_kafka
import pytest

from eventgw.config.settings import KafkaClusterSettings, LaneTuning
from eventgw.kafka.admin import TopicSpec, ensure_topics
from eventgw.kafka.client_config import producer_config
from eventgw.kafka.producer import BatchProducer

if TYPE_CHECKING:
    from eventgw.kafka.local_broker import LocalBroker
    from eventgw.kafka.producer import Delivery, Record
    from tests.fixtures.kafka import BrokerFactory, TopicFactory

pytestmark = pytest.mark.kafka

_TICKS = os.sysconf("SC_CLK_TCK")


def _librdkafka_broker_cpu_s() -> float:
    """CPU seconds used so far by this process's librdkafka broker threads (``rdk:broker*``)."""
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith("rdk:broker"):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
    return total


def _records(start: int, n: int) -> list[Record]:
    return [(b"one-key", str(i).encode(), []) for i in range(start, start + n)]


async def test_a_producer_waits_for_a_stopped_broker_without_spinning_and_keeps_order(
    private_broker: BrokerFactory,
) -> None:
    broker = private_broker("stopped")
    pid = broker.status()["pid"]
    assert isinstance(pid, int)
    ensure_topics(broker.bootstrap, [TopicSpec("lane", partitions=3)])
    config = producer_config(
        KafkaClusterSettings(bootstrap_servers=broker.bootstrap),
        LaneTuning(linger_ms=1, batch_size=128 << 10),  # P30's lane: the shortest linger
        "test-producer",
    )
    producer = BatchProducer("test", config)
    producer.start()
    sends: list[asyncio.Task[list[Delivery]]] = []
    try:
        assert all(d.ok for d in await producer.send("lane", _records(0, 100)))
        os.kill(pid, signal.SIGSTOP)
        try:
            cpu_before, wall_before = _librdkafka_broker_cpu_s(), time.monotonic()
            # 20 batches of 100 records over two seconds, all waiting for the broker.
            for i in range(20):
                sends.append(
                    asyncio.create_task(producer.send("lane", _records(100 + 100 * i, 100)))
                )
                await asyncio.sleep(0.1)
            cores = (_librdkafka_broker_cpu_s() - cpu_before) / (time.monotonic() - wall_before)
        finally:
            os.kill(pid, signal.SIGCONT)
        deliveries = [d for batch in await asyncio.gather(*sends) for d in batch]
    finally:
        await producer.close(10)
    # The idempotent producer measured 0.7-0.85 here; waiting on poll() costs ~0.
    assert cores < 0.1, f"librdkafka's broker threads used {cores:.2f} of a core while waiting"
    assert all(d.ok for d in deliveries), {d.error for d in deliveries if not d.ok}
    # One key, one partition: the offsets follow the order the records were produced in.
    assert len({d.partition for d in deliveries}) == 1
    offsets = [d.offset for d in deliveries]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets) == 2000


async def test_a_record_carries_its_key_value_headers_and_partition(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    """`BatchProducer.send` passes produce() its arguments by position (cheaper than keywords):
    each one must land where it belongs, with the partition and offset its Delivery reports."""
    topic = new_topic(partitions=3)
    config = producer_config(
        KafkaClusterSettings(bootstrap_servers=kafka_broker.bootstrap),
        LaneTuning(linger_ms=1, batch_size=128 << 10),
        "test-producer",
    )
    producer = BatchProducer("test", config)
    producer.start()
    records: list[Record] = [
        (b"key-%d" % i, b"value-%d" % i, [("h-one", b"%d" % i), ("h-two", b"x")]) for i in range(5)
    ]
    try:
        deliveries = await asyncio.wait_for(producer.send(topic, records, partition=2), 30)
    finally:
        await producer.close(10)
    assert all(d.ok for d in deliveries), [d.error for d in deliveries]
    assert [d.partition for d in deliveries] == [2] * 5
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": topic,
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 2, 0)])
        got: list[confluent_kafka.Message] = []
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            got += consumer.consume(5 - len(got), timeout=1.0)
    finally:
        consumer.close()
    assert [(m.key(), m.value(), m.headers(), m.partition(), m.offset()) for m in got] == [
        (key, value, headers, 2, d.offset)
        for (key, value, headers), d in zip(records, deliveries, strict=True)
    ]
