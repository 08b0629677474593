"""A restart skips what the killed run replayed and did not commit; without an intent it
cannot, and replays it again (the duplicates the read-back exists to avoid).

The real topic loop, replayer, committer and takeover; Kafka is `InMemoryKafka` (the lanes)
and a fake group consumer. The integration test (tests/integration/test_replay_kill.py) does
the same with the real processor, ``kill -9`` and the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import EventGwSettings
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import H_RECOVERY_SOURCE, event_headers, header_value
from eventgw.kafka.consumer import ConsumedRecord
from eventgw.kafka.testing import InMemoryKafka, SimulatedCrash
from eventgw.recovery import service as recovery_service
from eventgw.recovery.replay_intent import decode_intent, encode_intent
from eventgw.recovery.replayer import Replayer
from eventgw.recovery.service import RecoveryService
from eventgw.recovery.takeover import Takeover, written_topics
from tests.unit.recovery.test_backup_loop import FakeConsumer, FakeStore, takeover

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Mapping

    from eventgw.kafka.scanner import Scanner

SETTINGS = EventGwSettings()
TOPICS = SETTINGS.topics
BACKLOG = 250  # three chunks: 100, 100, 50


def captured(n: int) -> list[ConsumedRecord]:
    out: list[ConsumedRecord] = []
    for i in range(n):
        event = pb.EventData(
            event_id=f"e-{i}",
            company_id=f"c-{i % 5}",
            priority=pb.P20,
            intended_topic=TOPICS.p20,
        )
        out.append(
            ConsumedRecord(
                TOPICS.failed_writes, 0, i, b"k", event.SerializeToString(), event_headers(event)
            )
        )
    return out


async def run(
    svc: RecoveryService, consumer: FakeConsumer, kafka: InMemoryKafka, *, until_end: bool
) -> None:
    replayer = Replayer({"primary": kafka}, TOPICS, SETTINGS.ingest.classifier())
    stop = asyncio.Event()
    loop = asyncio.create_task(
        svc._topic_loop(
            consumer,  # type: ignore[arg-type]  # fakes
            replayer,
            FakeStore({}),
            takeover(svc, kafka),
            stop,
        )
    )

    def finished() -> bool:
        return consumer.stored.get((TOPICS.failed_writes, 0), (0, ""))[0] == BACKLOG

    try:
        async with asyncio.timeout(10):
            while not (until_end and finished()) and not loop.done():  # noqa: ASYNC110  (fakes)
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await loop


async def kill_mid_replay(kafka: InMemoryKafka, clock: FakeClock, on_send: int = 3) -> FakeConsumer:
    """Run 1: chunk ``on_send`` reaches its lane, then the process dies (before its commit)."""
    consumer = FakeConsumer(captured(BACKLOG))
    kafka.crash_on_send = on_send
    kafka.crash_after_write = True
    svc = RecoveryService(SETTINGS, clock=clock)
    with pytest.raises(ExceptionGroup) as info:
        await run(svc, consumer, kafka, until_end=False)
    assert info.group_contains(SimulatedCrash)
    rendered = svc.metrics.render().decode()
    assert 'eventgw_recovery_read_back_incomplete_total{reason="no_commit"} 1.0' in rendered
    kafka.crash_on_send = None
    return consumer


def lane_ids(kafka: InMemoryKafka) -> Counter[str]:
    return Counter(pb.EventData.FromString(r.value).event_id for r in kafka.records(TOPICS.p20))


def setup() -> tuple[InMemoryKafka, FakeClock]:
    clock = FakeClock(wall_ms=1_733_000_000_000)
    kafka = InMemoryKafka(clock)
    for topic in written_topics(TOPICS, "primary"):
        kafka.create_topic(topic, partitions=3)
    return kafka, clock


async def test_a_restart_skips_what_the_killed_run_replayed_and_did_not_commit() -> None:
    assert recovery_service.REPLAY_CHUNK == 100
    kafka, clock = setup()
    first = await kill_mid_replay(kafka, clock)
    position, _ = first.stored[TOPICS.failed_writes, 0]
    assert position < BACKLOG, "the kill left replayed records uncommitted"
    assert sum(lane_ids(kafka).values()) == BACKLOG, "every record reached its lane once"
    sources = {header_value(r.headers, H_RECOVERY_SOURCE) for r in kafka.records(TOPICS.p20)}
    assert sources == {f"{TOPICS.failed_writes}:0:{i}".encode() for i in range(BACKLOG)}

    clock.advance(3.0)
    second = FakeConsumer(captured(BACKLOG)[position:])  # the group resumes at its commit
    second.stored = dict(first.stored)
    svc = RecoveryService(SETTINGS, clock=clock)
    await run(svc, second, kafka, until_end=True)

    ids = lane_ids(kafka)
    assert set(ids) == {f"e-{i}" for i in range(BACKLOG)}, "nothing lost"
    assert max(ids.values()) == 1, "nothing replayed twice"
    assert second.stored[TOPICS.failed_writes, 0][0] == BACKLOG
    rendered = svc.metrics.render().decode()
    assert f"eventgw_recovery_read_back_skipped_total {float(BACKLOG - position)}" in rendered
    assert "eventgw_recovery_read_back_incomplete_total{" not in rendered


async def test_without_an_intent_the_restart_replays_them_again_and_counts_it() -> None:
    kafka, clock = setup()
    first = await kill_mid_replay(kafka, clock)
    position, _ = first.stored[TOPICS.failed_writes, 0]
    second = FakeConsumer(captured(BACKLOG)[position:])
    second.stored = {(TOPICS.failed_writes, 0): (position, "")}  # committed by an old version
    svc = RecoveryService(SETTINGS, clock=clock)
    await run(svc, second, kafka, until_end=True)

    ids = lane_ids(kafka)
    assert set(ids) == {f"e-{i}" for i in range(BACKLOG)}
    assert sum(ids.values()) - len(ids) == BACKLOG - position, "the uncommitted ones, again"
    rendered = svc.metrics.render().decode()
    assert 'eventgw_recovery_read_back_incomplete_total{reason="no_intent"} 1.0' in rendered


async def test_a_read_back_opens_only_the_clusters_the_taken_records_are_meant_for() -> None:
    """A configured cluster nothing goes to (down, or not deployed) costs no metadata timeout;
    the primary one is always read (the DLQ is there)."""
    kafka, clock = setup()
    opened: list[set[str]] = []

    @contextlib.asynccontextmanager
    async def scanners(names: Collection[str]) -> AsyncIterator[Mapping[str, Scanner]]:
        opened.append(set(names))
        yield {"primary": kafka}

    svc = RecoveryService(SETTINGS, clock=clock)
    takeover = Takeover(scanners, TOPICS, SETTINGS.recovery, svc.metrics, clock)
    consumer = FakeConsumer([])
    consumer.stored = {(TOPICS.failed_writes, 0): (0, encode_intent(clock.wall_ms()))}
    records = captured(3)
    replayer = Replayer({"primary": kafka, "rollout": kafka}, TOPICS, SETTINGS.ingest.classifier())
    assert await takeover.already_replayed(consumer, records, replayer.cluster_of) == []
    rollout = pb.EventData(
        event_id="e-r", company_id="c", intended_topic=TOPICS.p10, intended_cluster="rollout"
    )
    moved = [ConsumedRecord(TOPICS.failed_writes, 0, 9, b"k", rollout.SerializeToString(), [])]
    assert await takeover.already_replayed(consumer, moved, replayer.cluster_of) == []
    assert opened == [{"primary"}, {"primary", "rollout"}]


async def test_a_run_killed_before_its_first_commit_left_an_intent_ahead() -> None:
    """The write-ahead: a partition without an intent gets one (its position committed again)
    before anything of it is sent, so even the first chunk is found after a kill."""
    kafka, clock = setup()
    first = await kill_mid_replay(kafka, clock, on_send=1)
    assert first.commits == [{(TOPICS.failed_writes, 0): 0}], "only the write-ahead"
    assert decode_intent(first.metadata[0][TOPICS.failed_writes, 0]) == clock.wall_ms()
    assert sum(lane_ids(kafka).values()) == 100, "the first chunk reached its lane"

    second = FakeConsumer(captured(BACKLOG))
    second.stored = dict(first.stored)
    svc = RecoveryService(SETTINGS, clock=clock)
    await run(svc, second, kafka, until_end=True)
    ids = lane_ids(kafka)
    assert set(ids) == {f"e-{i}" for i in range(BACKLOG)}
    assert max(ids.values()) == 1, "the first chunk was not sent again"
