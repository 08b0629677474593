"""TopicScanner against the real broker: it reads by offset, commits nothing, and always ends.

The cases where a naive "read until offset high - 1" loop hangs: transaction markers at the
end of a partition (the last offsets are never delivered), aborted records, a topic that
keeps growing while it is read. Each read here runs inside a short ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import confluent_kafka
import pytest

from eventgw.config.settings import KafkaClusterSettings
from eventgw.kafka.client_config import scanner_config
from eventgw.kafka.scanner import ScanError, TopicScanner

if TYPE_CHECKING:
    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.kafka import TopicFactory

pytestmark = pytest.mark.kafka

READ_DEADLINE_S = 10  # far below the scanner's 30 s stall timeout: an end is found, not waited out


def _scanner(bootstrap: str) -> TopicScanner:
    return TopicScanner(scanner_config(KafkaClusterSettings(bootstrap_servers=bootstrap), "test"))


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 2})
    for value in values:
        producer.produce(topic, value, partition=0)
    assert producer.flush(15) == 0


async def _read_all(scanner: TopicScanner, topic: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    async with asyncio.timeout(READ_DEADLINE_S):
        for partition, (low, high) in (await scanner.watermarks(topic)).items():
            async for batch in scanner.read(topic, partition, low, high):
                out += [(r.offset, r.value) for r in batch]
    return out


async def test_reads_a_range_in_order_with_timestamps(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    base = 1_700_000_000_000
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i in range(10):
        producer.produce(
            topic,
            b"v%d" % i,
            key=b"k",
            partition=0,
            timestamp=base + i * 1000,
            headers=[("h", b"x"), ("empty", None)],
        )
    assert producer.flush(15) == 0
    async with _scanner(kafka_broker.bootstrap) as scanner:
        assert await scanner.watermarks(topic) == {0: (0, 10)}
        records = []
        async for batch in scanner.read(topic, 0, 3, 7):
            records += batch
        assert [r.offset for r in records] == [3, 4, 5, 6]
        assert records[0].timestamp_ms == base + 3000
        assert records[0].headers == [("h", b"x"), ("empty", b"")]
        assert records[0].key == b"k"
        assert await scanner.offsets_for_time(topic, base + 4500) == {0: 5}
        assert await scanner.offsets_for_time(topic, base + 99_000) == {0: 10}  # none: the end


async def test_transaction_markers_and_aborted_records_do_not_hang_a_read(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": uuid.uuid4().hex}
    )
    producer.init_transactions(15)
    for commit, values in ((True, [b"a", b"b"]), (False, [b"x"]), (True, [b"c"])):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value, partition=0)
        assert producer.flush(15) == 0  # the aborted record too reaches the log
        if commit:
            producer.commit_transaction(15)
        else:
            producer.abort_transaction(15)
    async with _scanner(kafka_broker.bootstrap) as scanner:
        # 4 records + 3 markers: the high watermark (7) is never reached by a record.
        assert (await scanner.watermarks(topic))[0][1] == 7
        started = time.monotonic()
        assert [v for _, v in await _read_all(scanner, topic)] == [b"a", b"b", b"c"]
        assert time.monotonic() - started < 5


async def test_a_growing_topic_is_read_up_to_the_end_planned(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=1)
    _produce(kafka_broker.bootstrap, topic, [b"old"] * 5)
    async with _scanner(kafka_broker.bootstrap) as scanner:
        _, high = (await scanner.watermarks(topic))[0]
        seen = 0
        async with asyncio.timeout(READ_DEADLINE_S):
            async for batch in scanner.read(topic, 0, 0, high):
                seen += len(batch)
                await asyncio.to_thread(_produce, kafka_broker.bootstrap, topic, [b"new"] * 3)
        assert seen == 5
        assert not [r async for r in scanner.read(topic, 0, high, high)]  # empty range


async def test_a_missing_topic_and_a_closed_scanner_are_errors(kafka_broker: LocalBroker) -> None:
    async with _scanner(kafka_broker.bootstrap) as scanner:
        with pytest.raises(ScanError, match="does not exist"):
            await scanner.watermarks(f"missing-{uuid.uuid4().hex}")
    with pytest.raises(RuntimeError, match="not open"):
        await scanner.partitions("any")


async def test_a_range_past_the_end_ends_at_the_end_of_the_partition(
    kafka_broker: LocalBroker, new_topic: TopicFactory
) -> None:
    """Offsets that will never come (deleted, compacted) end the read at the partition's end."""
    topic = new_topic(partitions=1)
    _produce(kafka_broker.bootstrap, topic, [b"v"] * 3)
    async with _scanner(kafka_broker.bootstrap) as scanner, asyncio.timeout(READ_DEADLINE_S):
        assert [r.offset async for batch in scanner.read(topic, 0, 1, 50) for r in batch] == [1, 2]


async def test_an_unreachable_broker_is_an_error_not_a_hang() -> None:
    config = scanner_config(KafkaClusterSettings(bootstrap_servers="127.0.0.1:1"), "t")
    async with TopicScanner(config, stall_timeout_s=1.0) as scanner:

        async def read() -> None:
            async with asyncio.timeout(READ_DEADLINE_S):
                async for _ in scanner.read("t", 0, 0, 10):
                    pass

        with pytest.raises(ScanError, match=r"t\[0\]: no progress for 1s before offset 10"):
            await read()
