"""Dual failure capture against real brokers killed with SIGKILL, then replay; count everything.

Guarantee under test (docs/design.md, "Guarantees", 1 and 2; docs/failure-handling.md,
"Capture order"): an event reported PUBLISHED, FAILED_WRITES or BACKED_UP is durable; after
the clusters return, the failed-writes processor puts every one of them into its intended
topic. Nothing acknowledged is lost.
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
from eventgw.kafka.admin import TopicSpec, ensure_topics
from tests.fixtures.read_path import read_records
from tests.fixtures.stack import make_settings, start_stack, unique_topics

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from eventgw.kafka.local_broker import LocalBroker
    from tests.fixtures.kafka import BrokerFactory
    from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.kafka

DURABLE = {"PUBLISHED", "FAILED_WRITES", "BACKED_UP"}


class Sender:
    """Posts batches in a loop and records every per-event answer."""

    def __init__(self, url: str, prefix: str, batch: int = 10) -> None:
        self.url = url
        self.prefix = prefix
        self.batch = batch
        self.acked: dict[str, str] = {}  # event_id → status
        self.not_acked: set[str] = set()
        self.sent = 0
        self.stop = asyncio.Event()
        self._progress = asyncio.Condition()

    async def run(self, concurrency: int = 3) -> None:
        async with (
            httpx.AsyncClient(base_url=self.url, timeout=60) as client,
            asyncio.TaskGroup() as tg,
        ):
            for worker in range(concurrency):
                tg.create_task(self._loop(client, worker))

    async def _loop(self, client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            ids = [f"{self.prefix}-{worker}-{n}-{i}" for i in range(self.batch)]
            n += 1
            body = {
                "events": [
                    {
                        "company_id": f"c{i % 7}",
                        "source_name": "flow" if i % 3 == 0 else "api",
                        "event_id": eid,
                        "payload": {"i": i},
                    }
                    for i, eid in enumerate(ids)
                ]
            }
            self.sent += len(ids)
            resp = await client.post("/v1/events", json=body)
            if resp.status_code in (202, 503) and "events" in resp.json():
                for r in resp.json()["events"]:
                    if r["status"] in DURABLE:
                        self.acked[r["event_id"]] = r["status"]
                    else:
                        self.not_acked.add(r["event_id"])
            else:
                self.not_acked.update(ids)
            async with self._progress:
                self._progress.notify_all()
            await asyncio.sleep(0.05)  # pacing, not polling

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(predicate)


def ids_in(bootstrap: str, topics: list[str]) -> Counter[str]:
    """Event ids (with their counts) of every record in ``topics`` now: read by offset up to
    each partition's end, no consumer group and no idle wait."""
    found: Counter[str] = Counter()
    for topic in topics:
        for rec in read_records(bootstrap, topic):
            found[pb.EventData.FromString(rec.value).event_id] += 1
    return found


async def wait_all_replayed(
    bootstrap: str, topics: list[str], want: set[str], timeout_s: float
) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = await asyncio.to_thread(ids_in, bootstrap, topics)
        except confluent_kafka.KafkaException:
            # A broker just restarted answers NOT_LEADER_FOR_PARTITION until its partitions
            # have leaders again: not replayed yet, look again (until the deadline).
            if time.monotonic() > deadline:
                raise
        else:
            if want <= set(found) or time.monotonic() > deadline:
                return found
        await asyncio.sleep(0.5)  # the replay has no event to await from here: look again


async def start_at_once(*brokers: LocalBroker) -> None:
    """Start (or restart) ``brokers`` together: each is seconds of a JVM starting."""
    await asyncio.gather(*(asyncio.to_thread(b.start) for b in brokers))


async def test_kill_primary_then_fallback_then_replay_loses_nothing(
    private_broker: BrokerFactory, tmp_path: Path
) -> None:
    primary, fallback = await asyncio.gather(
        asyncio.to_thread(private_broker, "primary"), asyncio.to_thread(private_broker, "fallback")
    )
    topics = unique_topics()
    specs = [TopicSpec(n, topics.partitions) for n in topics.all_topics()]
    for b in (primary, fallback):
        await asyncio.to_thread(ensure_topics, b.bootstrap, specs)
    settings = make_settings(
        primary=primary.bootstrap,
        fallback=fallback.bootstrap,
        topics=topics,
        spool_dir=tmp_path / "spool",
        ingest={"class_rules": [{"priority": 30, "source_name": "flow"}]},
    )
    stack = await start_stack(settings, with_recovery=True)
    sender = Sender(stack.http_url, "ev")
    sending = asyncio.create_task(sender.run())
    try:
        await sender.until(lambda: len(sender.acked) >= 100, 60)
        await asyncio.to_thread(primary.kill)  # SIGKILL mid-stream
        await sender.until(lambda: "FAILED_WRITES" in sender.acked.values(), 60)
        await sender.until(lambda: Counter(sender.acked.values())["FAILED_WRITES"] >= 30, 60)
        await asyncio.to_thread(fallback.kill)
        await sender.until(lambda: "BACKED_UP" in sender.acked.values(), 60)
        await sender.until(lambda: Counter(sender.acked.values())["BACKED_UP"] >= 30, 60)
        sender.stop.set()
        async with asyncio.timeout(60):
            await sending
        spool_files = list((tmp_path / "spool").glob("*.egwbak"))
        assert spool_files, "both clusters down: events must be in the local spool"

        await start_at_once(primary, fallback)
        want = set(sender.acked)
        found = await wait_all_replayed(
            primary.bootstrap, [topics.p30, topics.p20], want, timeout_s=120
        )
        missing = want - set(found)
        statuses = Counter(sender.acked.values())
        dupes = sum(c - 1 for c in found.values() if c > 1)
        print(
            f"acked={len(want)} by status={dict(statuses)} not_acked={len(sender.not_acked)} "
            f"duplicates={dupes}"
        )
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
        assert {"PUBLISHED", "FAILED_WRITES", "BACKED_UP"} <= set(statuses)
        # The backup object is removed only after its events are back in Kafka.
        async with asyncio.timeout(30):
            # The disk has no event to await: poll it.
            while list((tmp_path / "spool").glob("*.egwbak")):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        sender.stop.set()
        with contextlib.suppress(Exception):
            await sending
        await stack.stop()


@pytest.mark.s3
async def test_cluster_down_backs_up_to_s3_then_replays_and_deletes_objects(
    private_broker: BrokerFactory, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    primary = private_broker("primary")
    topics = unique_topics()
    await asyncio.to_thread(
        ensure_topics, primary.bootstrap, [TopicSpec(n, 3) for n in topics.all_topics()]
    )
    settings = make_settings(
        primary=primary.bootstrap,  # failed-writes also on primary: no fallback cluster
        topics=topics,
        spool_dir=tmp_path / "unused-spool",
        backup={
            "s3_bucket": s3_bucket,
            "s3_prefix": "eventgw/backup/",
            "s3_endpoint_url": s3_server.endpoint_url,
            "s3_access_key_id": s3_server.access_key_id,
            "s3_secret_access_key": s3_server.secret_access_key,
        },
    )
    stack = await start_stack(settings, with_recovery=True)
    sender = Sender(stack.http_url, "s3")
    sending = asyncio.create_task(sender.run())

    def objects() -> list[str]:
        client = s3_server.client()
        try:
            page = client.list_objects_v2(Bucket=s3_bucket, Prefix="eventgw/backup/")
            return [o["Key"] for o in page.get("Contents", ())]
        finally:
            client.close()

    try:
        await sender.until(lambda: len(sender.acked) >= 50, 60)
        await asyncio.to_thread(primary.kill)
        await sender.until(lambda: Counter(sender.acked.values())["BACKED_UP"] >= 30, 90)
        sender.stop.set()
        async with asyncio.timeout(60):
            await sending
        assert await asyncio.to_thread(objects), "events must be in S3 while Kafka is down"
        assert not list((tmp_path / "unused-spool").glob("*.egwbak"))

        await asyncio.to_thread(primary.start)
        want = set(sender.acked)
        found = await wait_all_replayed(
            primary.bootstrap, [topics.p30, topics.p20], want, timeout_s=120
        )
        missing = want - set(found)
        print(f"acked={len(want)} by status={dict(Counter(sender.acked.values()))}")
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
        async with asyncio.timeout(30):
            # S3 has no event to await: poll it.
            while await asyncio.to_thread(objects):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
    finally:
        sender.stop.set()
        with contextlib.suppress(Exception):
            await sending
        await stack.stop()
