"""IngestPipeline with an in-process publisher over fake producers: what it sends, what it
answers, with either form of the publisher's answer (real Kafka: tests/integration)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.admission import HotAction, HotTenantConfig
from eventgw.config.dynamic import DynamicConfig
from eventgw.config.settings import TopicSettings
from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.clock import FakeClock
from eventgw.core.envelope import Lane, Priority
from eventgw.ingest.hot_tenants import DynamicClassifier
from eventgw.ingest.pipeline import IngestPipeline
from eventgw.ingest.scheduler import Admission, AdmitAll, Scheduler
from eventgw.ingest.validation import ValidEvent
from eventgw.kafka.producer import Delivery, Record
from eventgw.metrics.backend import Metrics
from eventgw.publisher.prep import PrepPublisher
from eventgw.publisher.router import ClusterName, Router

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

NOW_MS = 1_700_000_000_000
TOPICS = TopicSettings()
LANES: tuple[Lane, ...] = ("p30", "p20", "p10", "offload")


class FakeProducer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[pb.EventData] = []

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        out: list[Delivery] = []
        for _key, value, _headers in records:
            self.sent.append(pb.EventData.FromString(value))
            out.append(Delivery(1, len(self.sent) - 1))
        return out


class Config:
    current = DynamicConfig()


class DenyP20:
    """An admission policy that offloads every P20 event and records each question."""

    def __init__(self) -> None:
        self.asked: list[tuple[Priority, int]] = []

    def admit(self, priority: Priority, company_id: str) -> bool:
        raise AssertionError("the pipeline asks once per class and batch (admit_many)")

    def admit_many(self, priority: Priority, n: int) -> int:
        self.asked.append((priority, n))
        return 0 if priority is Priority.P20 else n


class Stack:
    """Pipeline → (bytes) → PrepPublisher, answering as a new or an old publisher would."""

    def __init__(self, admission: Admission | None = None, *, old_publisher: bool = False) -> None:
        self.producers: dict[tuple[ClusterName, Lane], FakeProducer] = {
            ("primary", lane): FakeProducer(lane) for lane in LANES
        }
        self.publisher = _publisher(self.producers)
        self.old_publisher = old_publisher
        self.requests: list[pb.PublishRequest] = []
        classifier = StaticClassifier(
            [ClassRule(Priority.P30, source_name="checkout")], default=Priority.P20
        )
        self.pipeline = IngestPipeline(
            classifier=classifier,
            scheduler=Scheduler(admission or AdmitAll()),
            publish=self.publish,
            topics=TOPICS,
            clock=FakeClock(wall_ms=NOW_MS),
            metrics=Metrics(),
        )

    async def publish(self, raw: bytes) -> pb.PublishResponse:
        request = pb.PublishRequest.FromString(raw)
        self.requests.append(request)
        accept = request.accept_published_batch and not self.old_publisher
        return await self.publisher.publish_response(request.events, accept_published_batch=accept)


def events(n: int, source: str = "api") -> list[ValidEvent]:
    return [ValidEvent(f"c{i % 2}", source, "k", b'{"i": %d}' % i, None) for i in range(n)]


@pytest.mark.parametrize("old_publisher", [False, True], ids=["published_batch", "results"])
async def test_events_are_sent_as_eventdata_and_answered_in_order(old_publisher: bool) -> None:
    stack = Stack(old_publisher=old_publisher)
    batch = events(4)
    outcome = await stack.pipeline.ingest(batch)

    (request,) = stack.requests
    assert request.accept_published_batch
    sent = list(request.events)
    assert [(e.company_id, e.source_name, e.statistic_key, e.payload) for e in sent] == [
        (e.company_id, e.source_name, e.statistic_key, e.payload) for e in batch
    ]
    for e in sent:
        assert e.priority == pb.P20
        assert e.ingested_at_ms == NOW_MS
        assert e.slo_deadline_ms == NOW_MS + 60_000
        assert e.request_id == outcome.request_id
        assert not e.offloaded
        assert uuid.UUID(e.event_id).version == 7
    assert len({e.event_id for e in sent}) == 4

    assert outcome.all_durable_or_rejected
    assert not outcome.all_rejected
    assert outcome.results == [
        (e.event_id, pb.P20, "p20", TOPICS.p20, pb.PUBLISHED, "", "primary") for e in sent
    ]
    assert stack.producers["primary", "p20"].sent == sent


async def test_both_answer_forms_give_the_same_outcome() -> None:
    batch = events(3) + events(2, source="checkout")
    new, old = Stack(), Stack(old_publisher=True)
    a = await new.pipeline.ingest(batch)
    b = await old.pipeline.ingest(batch)
    strip = [r[1:] for r in a.results]  # event ids differ between the two runs
    assert strip == [r[1:] for r in b.results]
    assert strip[-1] == (pb.P30, "p30", TOPICS.p30, pb.PUBLISHED, "", "primary")


async def test_client_event_ids_are_kept() -> None:
    stack = Stack()
    batch = [ValidEvent("acme", "api", "", b"null", "my-key:1"), *events(1)]
    outcome = await stack.pipeline.ingest(batch)
    assert outcome.results[0][0] == "my-key:1"
    assert stack.requests[0].events[0].event_id == "my-key:1"
    assert outcome.results[1][0] != "my-key:1"


async def test_admission_is_asked_once_per_class_and_denied_events_are_offloaded() -> None:
    admission = DenyP20()
    stack = Stack(admission)
    batch = [*events(3), *events(2, source="checkout")]  # three P20, two P30
    outcome = await stack.pipeline.ingest(batch)
    # Once per class and batch, for all its events; P30 is never offloaded, never asked.
    assert admission.asked == [(Priority.P20, 3)]
    sent = stack.requests[0].events
    assert [e.offloaded for e in sent] == [True, True, True, False, False]
    # The class and the deadline do not move when an event is offloaded.
    assert [e.priority for e in sent] == [pb.P20] * 3 + [pb.P30] * 2
    assert [e.slo_deadline_ms - NOW_MS for e in sent] == [60_000] * 3 + [5_000] * 2
    assert [(r[2], r[3]) for r in outcome.results] == [("offload", TOPICS.offload)] * 3 + [
        ("p30", TOPICS.p30)
    ] * 2


async def test_rejected_and_failed_answers_settle_the_outcome() -> None:
    async def publish(raw: bytes) -> pb.PublishResponse:
        request = pb.PublishRequest.FromString(raw)
        response = pb.PublishResponse()
        for e, status in zip(request.events, [pb.REJECTED, pb.FAILED], strict=True):
            response.results.add(event_id=e.event_id, status=status, reason="why")
        return response

    stack = Stack()
    stack.pipeline._publish = publish
    outcome = await stack.pipeline.ingest(events(2))
    assert not outcome.all_durable_or_rejected
    assert not outcome.all_rejected
    # An answer without a topic names the topic the event was meant for.
    assert [(r[3], r[4], r[5]) for r in outcome.results] == [
        (TOPICS.p20, pb.REJECTED, "why"),
        (TOPICS.p20, pb.FAILED, "why"),
    ]


async def test_a_published_batch_of_the_wrong_size_is_an_error_not_a_guess() -> None:
    async def publish(raw: bytes) -> pb.PublishResponse:
        response = pb.PublishResponse()
        response.published_batch.partitions.append(0)
        response.published_batch.offsets.append(0)
        return response

    stack = Stack()
    stack.pipeline._publish = publish
    with pytest.raises(ValueError, match="1 events for 2 sent"):
        await stack.pipeline.ingest(events(2))


class RecordingProducer(FakeProducer):
    """Keeps every record as produced (key, value, headers)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        self.records.extend(records)
        return await super().send(topic, records)


def _publisher(producers: Mapping[tuple[ClusterName, Lane], FakeProducer]) -> PrepPublisher:
    return PrepPublisher(
        producers=producers,
        failed_writes=FakeProducer("fw"),
        failed_writes_topic=TOPICS.failed_writes,
        failed_writes_cluster="fallback",
        backup=None,  # type: ignore[arg-type]  # nothing fails here
        router=Router(TOPICS, rollout_enabled=False),
        config=Config(),
        metrics=Metrics(),
    )


async def test_colocated_records_equal_the_records_of_the_grpc_path() -> None:
    """`publish_prepared` (co-located) writes byte for byte what the gRPC path writes."""
    batch = [*events(5), *events(3, source="checkout")]
    ids = [f"id-{i}" for i in range(len(batch))]
    batch = [
        ValidEvent(e.company_id, e.source_name, e.statistic_key, e.payload, i)
        for e, i in zip(batch, ids, strict=True)
    ]
    written = {}
    answers = {}
    for mode in ("grpc", "colocated"):
        producers: dict[tuple[ClusterName, Lane], RecordingProducer] = {
            ("primary", lane): RecordingProducer(lane) for lane in LANES
        }
        publisher = _publisher(producers)

        async def over_grpc(raw: bytes, publisher: PrepPublisher = publisher) -> pb.PublishResponse:
            request = pb.PublishRequest.FromString(raw)
            return await publisher.publish_response(
                request.events, accept_published_batch=request.accept_published_batch
            )

        pipeline = IngestPipeline(
            classifier=StaticClassifier(
                [ClassRule(Priority.P30, source_name="checkout")], default=Priority.P20
            ),
            scheduler=Scheduler(AdmitAll()),
            publish=over_grpc if mode == "grpc" else None,
            publish_prepared=publisher.publish_prepared if mode == "colocated" else None,
            topics=TOPICS,
            clock=FakeClock(wall_ms=NOW_MS),
            metrics=Metrics(),
        )
        outcome = await pipeline.ingest(batch)
        written[mode] = {lane: p.records for (_, lane), p in producers.items()}
        # request_id differs per call; everything else in the answer must not
        answers[mode] = outcome.results
    for lane in LANES:
        grpc_records, colocated_records = written["grpc"][lane], written["colocated"][lane]
        assert len(grpc_records) == len(colocated_records)
        for (k1, v1, h1), (k2, v2, h2) in zip(grpc_records, colocated_records, strict=True):
            e1, e2 = pb.EventData.FromString(v1), pb.EventData.FromString(v2)
            e1.request_id = e2.request_id = ""  # one per ingest call
            assert (k1, e1, h1) == (k2, e2, h2)
    assert len(written["colocated"]["p20"]) == 5
    assert len(written["colocated"]["p30"]) == 3
    assert answers["grpc"] == answers["colocated"]


def test_pipeline_needs_exactly_one_publisher() -> None:
    common = {
        "classifier": StaticClassifier([], default=Priority.P20),
        "scheduler": Scheduler(AdmitAll()),
        "topics": TOPICS,
        "clock": FakeClock(wall_ms=NOW_MS),
        "metrics": Metrics(),
    }
    with pytest.raises(ValueError, match="exactly one"):
        IngestPipeline(**common)  # type: ignore[arg-type]
    publisher = _publisher({("primary", lane): FakeProducer(lane) for lane in LANES})

    async def publish(raw: bytes) -> pb.PublishResponse:
        return pb.PublishResponse()

    with pytest.raises(ValueError, match="exactly one"):
        IngestPipeline(**common, publish=publish, publish_prepared=publisher.publish_prepared)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ["demote", "offload"])
async def test_a_hot_tenant_keeps_its_original_deadline(action: HotAction) -> None:
    """Demoted or offloaded for its rate, an event keeps the promise of its static class."""
    config = HotTenantConfig(max_rate_per_company=1.0, window_s=1.0, action=action)
    stack = Stack()
    clock = FakeClock(wall_ms=NOW_MS)
    stack.pipeline._dynamic = DynamicClassifier(config, clock)
    batch = events(2, source="checkout")  # P30 by the static rules: c0 and c1, hot at once
    await stack.pipeline.ingest(batch)
    sent = stack.requests[0].events
    assert [e.priority for e in sent] == [pb.P20, pb.P20]  # P30 is demoted, never offloaded
    assert [e.slo_deadline_ms - NOW_MS for e in sent] == [5_000, 5_000]  # P30's promise
    assert not any(e.offloaded for e in sent)

    await stack.pipeline.ingest(events(2))  # P20 by the static rules, same hot companies
    sent = stack.requests[1].events
    if action == "demote":
        assert [(e.priority, e.offloaded) for e in sent] == [(pb.P10, False)] * 2
    else:
        assert [(e.priority, e.offloaded) for e in sent] == [(pb.P20, True)] * 2
    assert [e.slo_deadline_ms - NOW_MS for e in sent] == [60_000, 60_000]  # P20's promise
