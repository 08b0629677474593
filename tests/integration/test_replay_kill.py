"""``kill -9`` of the failed-writes processor mid-replay repeats at most 1 % of what was in flight.

The fault matrix found a kill mid-replay duplicating 14.4 % of the events in flight: a
polled batch (up to 500 records) was committed only once every record of it was settled,
so a kill repeated all of it. Committing each partition up to its first unsettled record
as the batch goes (docs/delivery-semantics.md, "Replayed failed writes") still repeated
what Kafka had confirmed and the commit had not recorded — above all, everything confirmed
above a record that waits for a lane that is down (retried with backoff for minutes). Now
the restarted processor reads the lanes back from the last commit's replay intent and
skips the records it finds there (eventgw.recovery.takeover).

Here: a backlog in one failed-writes partition, every record replayable but one, early in
the last poll batch, meant for the rollout cluster, which is down. The real processor (a
subprocess, real Kafka) replays the rest — the ~500 records of that batch above it are
confirmed and cannot be committed — and retries that one; it is killed while it waits.
Restarted with the rollout cluster back, it replays what was left. Counted in the lanes:
every event is there (nothing lost), and duplicates are at most 1 % of those in flight
(494 before the read-back: every record confirmed above the pending one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import TYPE_CHECKING

import confluent_kafka
import httpx
import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from eventgw.config.settings import KafkaClusterSettings, LaneTuning
from eventgw.core.envelope import event_headers
from eventgw.kafka.admin import TopicSpec, delete_topics, ensure_topics
from eventgw.kafka.client_config import producer_config
from eventgw.kafka.producer import BatchProducer
from tests.fixtures.procs import Component, component_env, wait_http_ready
from tests.fixtures.read_path import group_lag, read_records
from tests.fixtures.stack import unique_topics

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from eventgw.config.settings import TopicSettings
    from eventgw.kafka.local_broker import LocalBroker
    from eventgw.kafka.producer import Record

pytestmark = pytest.mark.kafka

BACKLOG = 2000  # captured events in one failed-writes partition: four poll batches of 500
STUCK = BACKLOG - 495  # the one meant for the rollout cluster (down until the restart)
AFTER_STUCK = BACKLOG - STUCK - 1  # confirmed above it, not committable: what a kill exposes


def capture(i: int, topics: TopicSettings) -> Record:
    """Captured event ``i`` as the publisher writes it to the failed-writes topic."""
    lane = (topics.p30, topics.p20, topics.p10)[i % 3]
    event = pb.EventData(
        event_id=f"e-{i}",
        company_id=f"c-{i % 7}",
        source_name="api",
        priority=pb.P20,
        payload=b"{}",
        intended_topic=lane,
        intended_cluster="rollout" if i == STUCK else "primary",
    )
    return event.company_id.encode(), event.SerializeToString(), event_headers(event)


async def write_backlog(bootstrap: str, topics: TopicSettings) -> None:
    cluster = KafkaClusterSettings(bootstrap_servers=bootstrap)
    tuning = LaneTuning(linger_ms=5, batch_size=1 << 20, delivery_timeout_ms=10_000)
    producer = BatchProducer("test-backlog", producer_config(cluster, tuning, "test-backlog"))
    producer.start()
    try:
        records = [capture(i, topics) for i in range(BACKLOG)]
        deliveries = await producer.send(topics.failed_writes, records, partition=0)
        assert all(d.ok for d in deliveries), [d.error for d in deliveries if not d.ok][:3]
        assert [d.offset for d in deliveries] == list(range(BACKLOG))
    finally:
        await producer.close(10)


def lanes(topics: TopicSettings) -> list[str]:
    return [topics.p30, topics.p20, topics.p10]


def written(bootstrap: str, names: list[str]) -> int:
    """Records in ``names`` (sum of high - low watermarks). Blocking."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "count"})
    try:
        total = 0
        for name in names:
            meta = consumer.list_topics(name, timeout=10).topics[name]
            for p in meta.partitions:
                tp = confluent_kafka.TopicPartition(name, p)
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                total += high - low
        return total
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed position in partition 0 of ``topic`` (0 if none). Blocking."""
    return BACKLOG - group_lag(bootstrap, group, [topic])[f"{topic}[0]"]


async def wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Re-read Kafka state every 0.1 s (no change notification) until ``check()`` holds."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await asyncio.to_thread(check):  # noqa: ASYNC110  (Kafka state: no event)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s}s: {what}") from None


def scrape(port: int, name: str) -> float:
    """The unlabelled metric ``name`` on the processor's status port (0 if absent). Blocking.

    A counter is exported from its creation, so absent means a processor without it; the
    assertion on its value fails then.
    """
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


async def test_kill_9_mid_replay_repeats_at_most_1_percent_of_what_was_in_flight(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = unique_topics()
    names = [n for k, n in topics.model_dump().items() if k != "partitions"]
    specs = [TopicSpec(n, 1 if n == topics.failed_writes else 3) for n in names]
    await asyncio.to_thread(ensure_topics, bootstrap, specs)
    group = f"test-replay-kill-{topics.failed_writes[-10:]}"
    port = free_port()
    env = component_env(
        bootstrap,
        topics,
        EVENTGW_KAFKA__ROLLOUT__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",  # down
        EVENTGW_RECOVERY__METRICS_PORT=str(port),
        EVENTGW_RECOVERY__GROUP_ID=group,
        EVENTGW_RECOVERY__DELIVERY_TIMEOUT_MS="1000",
        EVENTGW_RECOVERY__MAX_ATTEMPTS="100",  # the stuck one stays pending, never parked
        EVENTGW_RECOVERY__BACKOFF_INITIAL_S="0.2",
        EVENTGW_RECOVERY__BACKOFF_MAX_S="0.5",
        EVENTGW_BACKUP__SPOOL_DIR=str(tmp_path / "spool"),
    )
    recovery = Component("failed-writes", env, tmp_path)
    started = time.monotonic()
    try:
        await write_backlog(bootstrap, topics)
        await recovery.start()
        await wait_http_ready(f"http://127.0.0.1:{port}/readyz", recovery)
        await wait_until(
            lambda: written(bootstrap, lanes(topics)) >= BACKLOG - 1,
            "every replayable event in its lane",
            60,
        )
        # Commits follow the acks within milliseconds; give them a moment, bounded. The old
        # batch commit never got here (its batch waits for the stuck event): the count below
        # shows what that costs.
        with contextlib.suppress(AssertionError):
            await wait_until(
                lambda: committed(bootstrap, group, topics.failed_writes) >= STUCK,
                "committed up to the stuck event",
                5,
            )
        at_kill = await asyncio.to_thread(committed, bootstrap, group, topics.failed_writes)
        in_flight = BACKLOG - at_kill  # read and not committed: what a kill may replay again
        await recovery.kill9()

        # The rollout cluster is back (here: the same broker); the restart replays the rest.
        recovery.env = {**env, "EVENTGW_KAFKA__ROLLOUT__BOOTSTRAP_SERVERS": bootstrap}
        await recovery.start()
        await wait_http_ready(f"http://127.0.0.1:{port}/readyz", recovery)
        await wait_until(
            lambda: committed(bootstrap, group, topics.failed_writes) == BACKLOG,
            "the failed-writes partition committed to its end",
            60,
        )
        skipped = await asyncio.to_thread(scrape, port, "eventgw_recovery_read_back_skipped_total")
        ids: Counter[str] = Counter()
        for name in lanes(topics):
            for r in await asyncio.to_thread(read_records, bootstrap, name):
                ids[pb.EventData.FromString(r.value).event_id] += 1
    finally:
        await recovery.stop()
        await asyncio.to_thread(delete_topics, bootstrap, names)

    lost = {f"e-{i}" for i in range(BACKLOG)} - set(ids)
    duplicates = sum(ids.values()) - len(ids)
    print(
        f"\nreplay kill: backlog={BACKLOG} committed_at_kill={at_kill} in_flight={in_flight} "
        f"duplicates={duplicates} lost={len(lost)} read_back_skipped={skipped:.0f} "
        f"took={time.monotonic() - started:.1f}s"
    )
    assert not lost, f"{len(lost)} captured events never reached their lane: {sorted(lost)[:5]}"
    assert ids[f"e-{STUCK}"] == 1, "the stuck event was replayed once its cluster was back"
    assert at_kill == STUCK, f"committed {at_kill}, not up to the pending event {STUCK}"
    # The target (docs/faults.md): duplicates at most 1 % of the events in flight. Without
    # the read-back, the restart repeated every event confirmed above the pending one
    # (AFTER_STUCK = 494; the whole-batch commit before that, the batch: 499).
    assert duplicates <= in_flight // 100, (
        f"{duplicates} duplicates of {in_flight} in flight (target: at most 1 %)"
    )
    assert skipped >= AFTER_STUCK - in_flight // 100, "the restart found them in the lanes"
