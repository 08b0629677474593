"""The project-started KRaft Kafka broker and the admin helpers, against real Kafka."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics, list_topics
from eventgw.kafka.jar_cache import KAFKA_VERSION, default_home, ensure_kafka_jars
from eventgw.kafka.local_broker import LocalBroker

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.fixtures.kafka import BrokerFactory, TopicFactory

pytestmark = pytest.mark.kafka


def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0)
    assert producer.flush(timeout=15) == 0, "records still queued after 15 s"


Record = tuple[bytes | None, bytes | None]


def _consume(consumer: Consumer, count: int, timeout_s: float = 30) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        msg = consumer.poll(timeout=0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        records.append((msg.key(), msg.value()))
    return records


def _expected(count: int) -> list[Record]:
    return [(f"k{i}".encode(), f"v{i}".encode()) for i in range(count)]


def test_jar_fetch_is_cached(kafka_libs: Path) -> None:
    started = time.monotonic()
    libs = ensure_kafka_jars(default_home())
    assert time.monotonic() - started < 1.0
    assert libs == kafka_libs
    assert (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()


def test_produce_consume_roundtrip(kafka_broker: LocalBroker, new_topic: TopicFactory) -> None:
    topic = new_topic(partitions=1)
    _produce(kafka_broker.bootstrap, topic, 10)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        assert _consume(consumer, 10) == _expected(10)
    finally:
        consumer.close()


def test_start_reuses_running_broker(kafka_broker: LocalBroker, kafka_libs: Path) -> None:
    before = kafka_broker.status()
    assert before["running"] is True
    assert before["bootstrap"] == "127.0.0.1:19092"

    # Another process (e.g. the CLI) sees the same broker through the pid file, and a second
    # start() returns the running broker instead of launching a new JVM.
    other = LocalBroker(kafka_broker.spec, kafka_libs)
    assert other.is_running()
    other.start(timeout_s=10)
    assert other.status()["pid"] == before["pid"]


@pytest.fixture
def topic_name(kafka_broker: LocalBroker) -> Iterator[str]:
    name = f"ensure-{uuid.uuid4().hex}"
    yield name
    delete_topics(kafka_broker.bootstrap, [name])


def test_ensure_topics_is_idempotent(kafka_broker: LocalBroker, topic_name: str) -> None:
    spec = TopicSpec(topic_name, partitions=2, config={"retention.ms": "600000"})

    assert ensure_topics(kafka_broker.bootstrap, [spec, spec]) == [topic_name]
    assert ensure_topics(kafka_broker.bootstrap, [spec]) == []
    assert topic_name in list_topics(kafka_broker.bootstrap)


def test_delete_topics_ignores_missing(kafka_broker: LocalBroker) -> None:
    assert delete_topics(kafka_broker.bootstrap, [f"absent-{uuid.uuid4().hex}"]) == []


def test_restart_after_kill_keeps_topic_and_records(private_broker: BrokerFactory) -> None:
    broker = private_broker("crash")
    topic = f"durable-{uuid.uuid4().hex}"
    ensure_topics(broker.bootstrap, [TopicSpec(topic, partitions=1)])
    _produce(broker.bootstrap, topic, 5)

    broker.kill()
    assert not broker.is_running()
    assert broker.status()["pid"] is None

    broker.start()
    assert topic in list_topics(broker.bootstrap)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        # assign() from offset 0 reads the log without waiting for a group rebalance.
        consumer.assign([TopicPartition(topic, 0, 0)])
        assert _consume(consumer, 5) == _expected(5)
    finally:
        consumer.close()


def test_stop_is_graceful_and_idempotent(private_broker: BrokerFactory) -> None:
    broker = private_broker("graceful")
    assert broker.status()["running"] is True

    broker.stop()
    assert not broker.is_running()
    broker.stop()  # nothing runs: a no-op
    status = broker.status()
    assert (status["running"], status["pid"]) == (False, None)
