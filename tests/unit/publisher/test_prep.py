"""PrepPublisher's durability decisions with fake producers and stores (pure logic only;
the real-Kafka proof is tests/integration/test_failure_capture.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.backup.store import DEFAULT_BATCH_BYTES, BackupUnavailable
from eventgw.config.dynamic import DynamicConfig, GateRule
from eventgw.config.settings import TopicSettings
from eventgw.core.envelope import LANES, Lane, lane_headers
from eventgw.core.errors import InvalidEvent
from eventgw.kafka.producer import Delivery, Record
from eventgw.metrics.backend import Metrics
from eventgw.publisher.prep import PreparedEvent, PrepPublisher
from eventgw.publisher.router import ClusterName, Router

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence


class FakeProducer:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.sent: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        if self.fail:
            return [Delivery(-1, -1, "broker down") for _ in records]
        out: list[Delivery] = []
        for key, value, headers in records:
            self.sent.append((topic, key, value, dict(headers)))
            out.append(Delivery(0, len(self.sent) - 1))
        return out


class FakeStore:
    name = "spool"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.objects: dict[str, list[bytes]] = {}

    async def put(self, records: Sequence[bytes]) -> str:
        if self.fail:
            raise BackupUnavailable(store="spool", operation="put", key=None, reason="disk gone")
        key = f"k{len(self.objects)}"
        self.objects[key] = list(records)
        return key

    # The rest of BackupStore: the publisher only writes, so a call here is a bug in it.

    async def list_keys(self) -> list[str]:
        raise AssertionError("the publisher never lists the backup store")

    def read(
        self, key: str, *, batch_bytes: int = DEFAULT_BATCH_BYTES
    ) -> AsyncGenerator[list[bytes], None]:
        raise AssertionError("the publisher never reads the backup store")

    async def delete(self, key: str) -> None:
        raise AssertionError("the publisher never deletes from the backup store")

    async def close(self) -> None:
        raise AssertionError("the publisher does not own the backup store")


class Config:
    def __init__(self, current: DynamicConfig) -> None:
        self.current = current


class Setup(TypedDict, total=False):
    """What ``make`` takes: which writes fail, and the dynamic config."""

    lane_fail: bool
    fw_fail: bool
    store_fail: bool
    config: DynamicConfig


def make(
    lane_fail: bool = False,
    fw_fail: bool = False,
    store_fail: bool = False,
    config: DynamicConfig | None = None,
) -> tuple[PrepPublisher, dict[tuple[ClusterName, Lane], FakeProducer], FakeProducer, FakeStore]:
    topics = TopicSettings()
    producers: dict[tuple[ClusterName, Lane], FakeProducer] = {
        ("primary", lane): FakeProducer(lane, fail=lane_fail) for lane in LANES
    }
    fw = FakeProducer("fw", fail=fw_fail)
    store = FakeStore(fail=store_fail)
    pub = PrepPublisher(
        producers=producers,
        failed_writes=fw,
        failed_writes_topic=topics.failed_writes,
        failed_writes_cluster="fallback",
        backup=store,
        router=Router(topics, rollout_enabled=False),
        config=Config(config or DynamicConfig()),
        metrics=Metrics(),
    )
    return pub, producers, fw, store


def ev(
    i: int,
    priority: int = 20,
    *,
    offloaded: bool = False,
    payload: bytes = b"",
    slo_deadline_ms: int = 0,
) -> pb.EventData:
    return pb.EventData(
        event_id=f"e{i}",
        company_id=f"c{i}",
        source_name="api",
        priority=priority,  # type: ignore[arg-type]  # pb.Priority values are ints
        offloaded=offloaded,
        payload=payload,
        slo_deadline_ms=slo_deadline_ms,
    )


async def test_published_events_report_topic_partition_offset() -> None:
    pub, producers, _, _ = make()
    results = await pub.publish_with_result([ev(1, 30), ev(2, 10), ev(3, 20, offloaded=True)])
    assert [r.status for r in results] == [pb.PUBLISHED] * 3
    assert [r.topic for r in results] == [
        TopicSettings().p30,
        TopicSettings().p10,
        TopicSettings().offload,
    ]
    assert producers["primary", "p30"].sent[0][1] == b"c1"


async def test_lane_failure_goes_to_failed_writes_with_intended_topic() -> None:
    pub, _, fw, store = make(lane_fail=True)
    results = await pub.publish_with_result([ev(1), ev(2)])
    assert [r.status for r in results] == [pb.FAILED_WRITES] * 2
    assert results[0].cluster == "fallback"
    _topic, _key, value, headers = fw.sent[0]
    data = pb.EventData.FromString(value)
    assert data.intended_topic == TopicSettings().p20
    assert data.intended_cluster == "primary"
    assert headers["eventgw-original-topic"] == TopicSettings().p20.encode()
    assert headers["eventgw-last-error"] == b"broker down"
    assert not store.objects


async def test_both_topics_failing_goes_to_backup_store() -> None:
    pub, _, _, store = make(lane_fail=True, fw_fail=True)
    results = await pub.publish_with_result([ev(1), ev(2)])
    assert [r.status for r in results] == [pb.BACKED_UP] * 2
    (values,) = store.objects.values()
    assert [pb.EventData.FromString(v).intended_topic for v in values] == [TopicSettings().p20] * 2


async def test_all_three_failing_reports_failed_never_success() -> None:
    pub, _, _, _ = make(lane_fail=True, fw_fail=True, store_fail=True)
    results = await pub.publish_with_result([ev(1)])
    assert results[0].status == pb.FAILED
    assert "not durable" in results[0].reason


async def test_gating_rejects_only_matching_events_and_writes_nothing_for_them() -> None:
    config = DynamicConfig(gating=(GateRule(action="block", company_id="c1", reason="banned"),))
    pub, producers, _, _ = make(config=config)
    results = await pub.publish_with_result([ev(1), ev(2)])
    assert results[0].status == pb.REJECTED
    assert results[0].reason == "banned"
    assert results[1].status == pb.PUBLISHED
    assert [s[1] for s in producers["primary", "p20"].sent] == [b"c2"]


async def test_gating_by_source_reads_each_events_source_name() -> None:
    """publish_response reads ``source_name`` only when gating or the rollout needs it."""
    config = DynamicConfig(gating=(GateRule(action="block", source_name="batch-*"),))
    pub, producers, _, _ = make(config=config)
    blocked = ev(2)
    blocked.source_name = "batch-import"
    results = await pub.publish_with_result([ev(1), blocked, ev(3)])
    assert [r.status for r in results] == [pb.PUBLISHED, pb.REJECTED, pb.PUBLISHED]
    assert [s[1] for s in producers["primary", "p20"].sent] == [b"c1", b"c3"]


async def test_each_record_has_its_own_lane_headers_when_classes_share_them() -> None:
    """The headers after the event id are built once per (class, deadline, attempt): each
    record still carries exactly `lane_headers` of its own event."""
    pub, producers, _, _ = make()
    events = [ev(1, slo_deadline_ms=100), ev(2, slo_deadline_ms=100), ev(3, slo_deadline_ms=200)]
    events[1].attempt = 2
    events.append(ev(4, 30, slo_deadline_ms=100))
    await pub.publish_with_result(events)
    sent = producers["primary", "p20"].sent + producers["primary", "p30"].sent
    assert [headers for _, _, _, headers in sent] == [
        dict(lane_headers(e.event_id, e.priority, e.slo_deadline_ms, e.attempt)) for e in events
    ]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (pb.EventData(company_id="c", priority=pb.P20), "events[1].event_id"),
        (pb.EventData(event_id="x", priority=pb.P20), "events[1].company_id"),
        (
            pb.EventData(
                event_id="x",
                company_id="c",
                priority=7,  # type: ignore[arg-type]  # not a class: the refusal under test
            ),
            "events[1].priority",
        ),
    ],
)
async def test_invalid_event_rejects_whole_request_before_writing(
    event: pb.EventData, field: str
) -> None:
    pub, producers, _, _ = make()
    with pytest.raises(InvalidEvent) as info:
        await pub.publish_with_result([ev(0), event])
    assert info.value.field == field
    assert not any(p.sent for p in producers.values())


async def test_missing_priority_takes_the_default_class() -> None:
    pub, _, _, _ = make()
    results = await pub.publish_with_result([pb.EventData(event_id="x", company_id="c")])
    assert results[0].topic == TopicSettings().p20


# --- published_batch: the compact answer (PublishRequest.accept_published_batch) -------------


async def test_accepted_published_batch_answers_partitions_and_offsets_per_event() -> None:
    pub, producers, _, _ = make()
    response = await pub.publish_response([ev(1), ev(2), ev(3)], accept_published_batch=True)
    assert response.HasField("published_batch")
    assert not response.results
    batch = response.published_batch
    assert (batch.cluster, batch.topic) == ("primary", TopicSettings().p20)
    assert list(batch.partitions) == [0, 0, 0]
    assert list(batch.offsets) == [0, 1, 2]  # the fake producer's offsets, in event order
    assert [s[1] for s in producers["primary", "p20"].sent] == [b"c1", b"c2", b"c3"]


async def test_published_batch_says_the_same_as_the_results_it_replaces() -> None:
    events = [ev(1), ev(2), ev(3)]
    pub, _, _, _ = make()
    batch = (await pub.publish_response(events, accept_published_batch=True)).published_batch
    pub, _, _, _ = make()
    results = await pub.publish_with_result(events)
    assert [
        (r.event_id, r.status, r.cluster, r.topic, r.partition, r.offset, r.reason) for r in results
    ] == [
        (e.event_id, pb.PUBLISHED, batch.cluster, batch.topic, p, o, "")
        for e, p, o in zip(events, batch.partitions, batch.offsets, strict=True)
    ]


async def test_without_accept_published_batch_every_event_gets_a_result() -> None:
    pub, _, _, _ = make()
    response = await pub.publish_response([ev(1), ev(2)])
    assert not response.HasField("published_batch")
    assert [r.status for r in response.results] == [pb.PUBLISHED] * 2


@pytest.mark.parametrize(
    ("events", "setup", "statuses"),
    [
        ([ev(1, 30), ev(2, 20)], {}, [pb.PUBLISHED, pb.PUBLISHED]),  # two lanes
        ([ev(1), ev(2, offloaded=True)], {}, [pb.PUBLISHED, pb.PUBLISHED]),  # two lanes
        ([ev(1), ev(2)], {"lane_fail": True}, [pb.FAILED_WRITES] * 2),
        (
            [ev(1), ev(2)],
            {"config": DynamicConfig(gating=(GateRule(action="block", company_id="c1"),))},
            [pb.REJECTED, pb.PUBLISHED],
        ),
    ],
    ids=["two-classes", "offloaded", "capture", "gating"],
)
async def test_anything_but_one_fully_published_group_is_answered_per_event(
    events: list[pb.EventData], setup: Setup, statuses: list[int]
) -> None:
    pub, _, _, _ = make(**setup)
    response = await pub.publish_response(events, accept_published_batch=True)
    assert not response.HasField("published_batch")
    assert [r.status for r in response.results] == statuses
    assert [r.event_id for r in response.results] == [e.event_id for e in events]


def prepared(i: int, lane: Lane = "p20") -> PreparedEvent:
    """What a co-located ingest hands over: the record it built for event ``i``."""
    event = ev(i, payload=b'{"n":%d}' % i, slo_deadline_ms=1_000 + i)
    record: Record = (event.company_id.encode(), event.SerializeToString(), [("h", b"v")])
    return event.event_id, event.company_id, event.source_name, lane, record


@pytest.mark.parametrize(
    ("fails", "status"),
    [
        ({"lane_fail": True}, pb.FAILED_WRITES),
        ({"lane_fail": True, "fw_fail": True}, pb.BACKED_UP),
        ({"lane_fail": True, "fw_fail": True, "store_fail": True}, pb.FAILED),
    ],
)
async def test_co_located_records_take_the_same_dual_failure_capture(
    fails: Setup, status: int
) -> None:
    """publish_prepared: a failed write is captured as the event it was, with its intent."""
    pub, _, fw, store = make(**fails)
    response = await pub.publish_prepared([prepared(1), prepared(2)])
    assert not response.HasField("published_batch")
    assert [(r.event_id, r.status) for r in response.results] == [("e1", status), ("e2", status)]
    captured = [pb.EventData.FromString(v) for _, _, v, _ in fw.sent] or [
        pb.EventData.FromString(v) for values in store.objects.values() for v in values
    ]
    if status == pb.FAILED:
        assert not captured  # nothing took them: the sender is told to retry
        return
    assert [(e.event_id, e.payload, e.slo_deadline_ms) for e in captured] == [
        ("e1", b'{"n":1}', 1_001),
        ("e2", b'{"n":2}', 1_002),
    ]
    assert {(e.intended_cluster, e.intended_topic) for e in captured} == {
        ("primary", TopicSettings().p20)
    }


async def test_co_located_records_are_published_as_given() -> None:
    pub, producers, _, _ = make()
    response = await pub.publish_prepared([prepared(1), prepared(2, lane="p30")])
    assert [r.status for r in response.results] == [pb.PUBLISHED] * 2
    [(_, key, value, headers)] = producers["primary", "p30"].sent
    assert (key, headers) == (b"c2", {"h": b"v"})
    assert value == prepared(2)[4][1]  # the bytes ingest built, not a re-serialization
