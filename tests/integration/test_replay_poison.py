"""Replay never stalls: a captured event that cannot be replayed is parked, the rest go on.

A fault run found one captured event whose topic was gone (in the failed-writes topic and
as a spool object) blocking everything captured after it. Here such "poison" events come
first and ordinary captures after them, against the real broker: every ordinary event must
reach its lane, every poison one the DLQ (with its error and origin), counted in
``eventgw_recovery_parked_total``; backup objects are deleted once settled.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.backup.spool import SpoolStore
from eventgw.config.settings import KafkaClusterSettings, LaneTuning
from eventgw.core.envelope import (
    H_LAST_ERROR,
    H_ORIGINAL_CLUSTER,
    H_ORIGINAL_TOPIC,
    H_RECOVERY_SOURCE,
    event_headers,
)
from eventgw.core.lifecycle import run_services
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from eventgw.kafka.client_config import producer_config
from eventgw.kafka.producer import BatchProducer
from eventgw.recovery.service import RecoveryService
from tests.fixtures.stack import make_settings, read_topic, unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from eventgw.config.settings import EventGwSettings, TopicSettings
    from eventgw.kafka.local_broker import LocalBroker
    from eventgw.kafka.producer import Record
    from tests.fixtures.stack import ReadRecord

pytestmark = pytest.mark.kafka

NORMAL = 1000  # ordinary captures after the poison: more than one poll batch (500)
WAIT_S = 60.0  # for every ordinary event to reach its lane


def capture(event_id: str, intended_topic: str, payload: bytes = b"{}") -> Record:
    """A failed-writes record as the publisher captures it (value, headers, intent)."""
    event = pb.EventData(
        event_id=event_id,
        company_id="acme",
        source_name="api",
        priority=pb.P20,
        payload=payload,
        intended_topic=intended_topic,
        intended_cluster="primary",
    )
    headers = event_headers(event)
    headers.append((H_ORIGINAL_TOPIC, intended_topic.encode()))
    headers.append((H_LAST_ERROR, b"captured by the test"))
    return b"acme", event.SerializeToString(), headers


async def produce(settings: EventGwSettings, topic: str, records: list[Record]) -> None:
    cluster = KafkaClusterSettings(bootstrap_servers=settings.kafka.primary.bootstrap_servers)
    tuning = LaneTuning(linger_ms=5, batch_size=1 << 20, delivery_timeout_ms=10_000)
    producer = BatchProducer("test-captures", producer_config(cluster, tuning, "test-captures"))
    producer.start()
    try:
        deliveries = await producer.send(topic, records)
        assert all(d.ok for d in deliveries), [d.error for d in deliveries if not d.ok][:3]
    finally:
        await producer.close(10)


@contextlib.asynccontextmanager
async def running_recovery(settings: EventGwSettings) -> AsyncIterator[RecoveryService]:
    recovery = RecoveryService(settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_services([recovery], stop, ready))
    try:
        async with asyncio.timeout(60):
            await ready.wait()
        yield recovery
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await task


@contextlib.asynccontextmanager
async def topics_on(
    bootstrap: str, config: Mapping[str, Mapping[str, str]], missing: frozenset[str] = frozenset()
) -> AsyncIterator[TopicSettings]:
    """Fresh topics (``config``: per-topic settings by field name); ``missing`` not created."""
    topics = unique_topics()
    names = {k: v for k, v in topics.model_dump().items() if k != "partitions"}
    specs = [TopicSpec(n, 3, config.get(k, {})) for k, n in names.items() if k not in missing]
    await asyncio.to_thread(ensure_topics, bootstrap, specs)
    try:
        yield topics
    finally:
        await asyncio.to_thread(delete_topics, bootstrap, [s.name for s in specs])


async def read_ids(bootstrap: str, topic: str, expect: int, timeout_s: float) -> list[str]:
    records = await asyncio.to_thread(
        read_topic, bootstrap, topic, expect=expect, timeout_s=timeout_s, idle_s=0.5
    )
    return [pb.EventData.FromString(r.value).event_id for r in records]


async def read_dlq(bootstrap: str, topics: TopicSettings, expect: int) -> dict[str, ReadRecord]:
    records = await asyncio.to_thread(
        read_topic, bootstrap, topics.dlq, expect=expect, timeout_s=30, idle_s=0.5
    )
    return {pb.EventData.FromString(r.value).event_id: r for r in records}


def parked(recovery: RecoveryService, source: str, reason: str) -> float:
    labels = {"source": source, "reason": reason}
    value = recovery.metrics.registry.get_sample_value("eventgw_recovery_parked_total", labels)
    return value or 0.0


async def test_a_capture_whose_topic_is_gone_is_parked_and_later_captures_replay(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    """Failed-writes topic: an intended lane missing from Kafka, and a topic we do not know."""
    bootstrap = kafka_broker.bootstrap
    async with topics_on(bootstrap, {}, missing=frozenset({"offload"})) as topics:
        settings = make_settings(primary=bootstrap, topics=topics, spool_dir=tmp_path / "spool")
        retired = f"{topics.p20}-retired"  # a lane of an older deployment: not ours any more
        poison = [capture("gone-lane", topics.offload), capture("retired-topic", retired)]
        normal = [capture(f"ok-{i}", topics.p20) for i in range(NORMAL)]
        await produce(settings, topics.failed_writes, poison)
        async with running_recovery(settings) as recovery:
            await produce(settings, topics.failed_writes, normal)
            in_lane = await read_ids(bootstrap, topics.p20, NORMAL, WAIT_S)
            assert {f"ok-{i}" for i in range(NORMAL)} <= set(in_lane), (
                f"{NORMAL - len(set(in_lane))} ordinary captures never replayed"
            )
            dlq = await read_dlq(bootstrap, topics, expect=2)
            assert set(dlq) == {"gone-lane", "retired-topic"}
            gone, stray = dlq["gone-lane"].headers, dlq["retired-topic"].headers
            assert b"Unknown topic" in gone[H_LAST_ERROR]
            assert gone[H_ORIGINAL_TOPIC] == topics.offload.encode()
            assert b"not a lane or retry topic" in stray[H_LAST_ERROR]
            assert stray[H_ORIGINAL_TOPIC] == retired.encode()
            for headers in (gone, stray):
                assert headers[H_ORIGINAL_CLUSTER] == b"primary"
                assert headers[H_RECOVERY_SOURCE].startswith(f"{topics.failed_writes}:".encode())
            assert parked(recovery, "topic", "refused") == 1
            assert parked(recovery, "topic", "unknown_topic") == 1
        assert len(in_lane) == NORMAL, "a retry repeated events Kafka had already confirmed"


async def test_a_spool_object_with_such_an_event_does_not_block_newer_objects(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    spool_dir = tmp_path / "spool"
    async with topics_on(bootstrap, {}) as topics:
        settings = make_settings(primary=bootstrap, topics=topics, spool_dir=spool_dir)
        retired = f"{topics.p20}-retired"

        def value(event_id: str, topic: str) -> bytes:
            return capture(event_id, topic)[1]

        async with SpoolStore(spool_dir, max_bytes=1 << 30) as spool:
            first = await spool.put(
                [value("a-0", topics.p20), value("poison", retired), value("a-1", topics.p20)]
            )
            await spool.put([value(f"b-{i}", topics.p20) for i in range(NORMAL)])
        async with running_recovery(settings) as recovery:
            want = {"a-0", "a-1"} | {f"b-{i}" for i in range(NORMAL)}
            in_lane = await read_ids(bootstrap, topics.p20, len(want), WAIT_S)
            assert want <= set(in_lane), (
                f"{len(want - set(in_lane))} backed-up events never replayed"
            )
            dlq = await read_dlq(bootstrap, topics, expect=1)
            assert set(dlq) == {"poison"}
            headers = dlq["poison"].headers
            assert b"not a lane or retry topic" in headers[H_LAST_ERROR]
            assert headers[H_ORIGINAL_TOPIC] == retired.encode()
            assert headers[H_RECOVERY_SOURCE] == f"spool:{first}".encode()
            assert parked(recovery, "backup", "unknown_topic") == 1
            async with asyncio.timeout(30):
                # Deleted once settled; the directory has no event to await: poll it.
                while list(spool_dir.glob("*.egwbak")):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)


async def test_a_record_too_large_for_its_lane_is_parked_and_one_too_large_for_the_dlq_is_kept(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    """Kafka refuses the record for good: parked at once. If the DLQ refuses it as well, it
    moves to the backup store (never dropped, never blocking the topic)."""
    bootstrap = kafka_broker.bootstrap
    spool_dir = tmp_path / "spool"
    small = {
        "p20": {"max.message.bytes": str(64 << 10)},
        "dlq": {"max.message.bytes": str(256 << 10)},
    }
    async with topics_on(bootstrap, small) as topics:
        settings = make_settings(primary=bootstrap, topics=topics, spool_dir=spool_dir)
        poison = [
            capture("too-large", topics.p20, payload=b'"' + b"x" * (100 << 10) + b'"'),
            # Same key, same partition, same batch as the large ones: the broker refuses that
            # whole batch, yet this one is not too large and must reach its lane.
            capture("batch-mate", topics.p20),
            capture("too-large-for-dlq", topics.p20, payload=b'"' + b"x" * (300 << 10) + b'"'),
        ]
        normal = [capture(f"ok-{i}", topics.p20) for i in range(NORMAL)]
        await produce(settings, topics.failed_writes, poison)
        async with running_recovery(settings) as recovery:
            await produce(settings, topics.failed_writes, normal)
            want = {"batch-mate"} | {f"ok-{i}" for i in range(NORMAL)}
            in_lane = await read_ids(bootstrap, topics.p20, len(want), WAIT_S)
            assert want <= set(in_lane), f"{len(want - set(in_lane))} captures never replayed"
            dlq = await read_dlq(bootstrap, topics, expect=1)
            assert set(dlq) == {"too-large"}
            headers = dlq["too-large"].headers
            assert b"Message size too large" in headers[H_LAST_ERROR]
            assert headers[H_ORIGINAL_TOPIC] == topics.p20.encode()
            assert headers[H_RECOVERY_SOURCE].startswith(f"{topics.failed_writes}:".encode())
            assert parked(recovery, "topic", "refused") == 1
            # The one neither topic takes is in the backup store, retried there with backoff.
            async with SpoolStore(spool_dir, max_bytes=1 << 30) as spool:
                [key] = await spool.list_keys()
                [kept] = await spool.get(key)
            assert pb.EventData.FromString(kept).event_id == "too-large-for-dlq"
            moved = recovery.metrics.registry.get_sample_value(
                "eventgw_recovery_moved_to_backup_total"
            )
            assert moved == 1
