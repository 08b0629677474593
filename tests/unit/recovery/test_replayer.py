"""Replayer: where captured records go back to, what is parked, and what stays pending."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import TopicSettings
from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.envelope import (
    H_EVENT_ID,
    H_LAST_ERROR,
    H_ORIGINAL_CLUSTER,
    H_ORIGINAL_TOPIC,
    H_RECOVERY_SOURCE,
    Priority,
)
from eventgw.kafka.producer import Delivery, Record
from eventgw.recovery.replayer import Captured, Outcome, Replayer

if TYPE_CHECKING:
    from collections.abc import Sequence

TOPICS = TopicSettings()
TIMED_OUT = Delivery(-1, -1, "Local: Message timed out", "_MSG_TIMED_OUT")
TOO_LARGE = Delivery(-1, -1, "Broker: Message size too large", "MSG_SIZE_TOO_LARGE")
UNKNOWN_TOPIC = Delivery(-1, -1, "Broker: Unknown topic or partition", "UNKNOWN_TOPIC_OR_PART")


class FakeProducer:
    """Confirms every record, except in ``fail``: topic → the Delivery each record gets."""

    def __init__(self, fail: dict[str, Delivery] | None = None) -> None:
        self.fail = fail or {}
        self.sent: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        if topic in self.fail:
            return [self.fail[topic] for _ in records]
        self.sent += [(topic, key, value, dict(headers)) for key, value, headers in records]
        return [Delivery(0, i) for i in range(len(records))]

    def to(self, topic: str) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
        return [(key, value, headers) for t, key, value, headers in self.sent if t == topic]


def replayer(primary: FakeProducer, rollout: FakeProducer | None = None) -> Replayer:
    producers = {"primary": primary} | ({"rollout": rollout} if rollout else {})
    classifier = StaticClassifier([ClassRule(Priority.P30, source_name="checkout")], Priority.P20)
    return Replayer(producers, TOPICS, classifier)


def captured(*values: bytes, source: str = "fw:0:7") -> list[Captured]:
    return [Captured(v, source) for v in values]


def publisher_capture(event_id: str, topic: str, cluster: str = "primary") -> bytes:
    event = pb.EventData(
        event_id=event_id,
        company_id="c",
        priority=pb.P20,
        intended_topic=topic,
        intended_cluster=cluster,
    )
    raw: bytes = event.SerializeToString()
    return raw


async def test_publisher_captures_go_back_to_their_intended_topic_and_cluster() -> None:
    primary, rollout = FakeProducer(), FakeProducer()
    value = publisher_capture("e1", TOPICS.p10, cluster="rollout")
    report = await replayer(primary, rollout).replay(captured(value))
    assert report.outcomes == (Outcome.REPLAYED,)
    [(topic, key, value, _)] = rollout.sent
    assert (topic, key) == (TOPICS.p10, b"c")
    back = pb.EventData.FromString(value)
    assert (back.event_id, back.intended_topic, back.intended_cluster) == ("e1", "", "")
    assert not primary.sent


async def test_client_captures_are_classified_and_keep_their_promise() -> None:
    primary = FakeProducer()
    event = pb.EventData(
        event_id="e2", company_id="c", source_name="checkout", ingested_at_ms=1_000
    )
    report = await replayer(primary).replay(captured(event.SerializeToString()))
    assert report.replayed == 1
    [(topic, _, value, _)] = primary.sent
    back = pb.EventData.FromString(value)
    assert topic == TOPICS.p30
    assert (back.priority, back.slo_deadline_ms) == (pb.P30, 1_000 + 5_000)


async def test_an_undecodable_record_is_parked_in_the_dlq_not_dropped() -> None:
    primary = FakeProducer()
    good = pb.EventData(event_id="e3", company_id="c", priority=pb.P20).SerializeToString()
    garbage = b"\xff\xfe not protobuf"
    report = await replayer(primary).replay(captured(good, garbage))
    assert report.outcomes == (Outcome.REPLAYED, Outcome.PARKED)
    assert report.parked == {"undecodable": 1}
    [(_, value, headers)] = primary.to(TOPICS.dlq)
    assert value == garbage
    assert headers[H_LAST_ERROR].startswith(b"undecodable")
    assert headers[H_RECOVERY_SOURCE] == b"fw:0:7"


async def test_a_topic_that_is_not_a_lane_or_retry_topic_is_never_written_to() -> None:
    primary = FakeProducer()
    stray = publisher_capture("e5", "some.other.topic")
    retry = publisher_capture("e6", TOPICS.retry_120s)
    report = await replayer(primary).replay(captured(stray, retry, source="spool:k1"))
    assert report.outcomes == (Outcome.PARKED, Outcome.REPLAYED)
    assert report.parked == {"unknown_topic": 1}
    assert {t for t, *_ in primary.sent} == {TOPICS.dlq, TOPICS.retry_120s}
    [(key, value, headers)] = primary.to(TOPICS.dlq)
    assert (key, value) == (b"c", stray)  # as captured: it still names where it was meant to go
    assert headers[H_EVENT_ID] == b"e5"
    assert headers[H_ORIGINAL_TOPIC] == b"some.other.topic"
    assert headers[H_ORIGINAL_CLUSTER] == b"primary"
    assert b"some.other.topic" in headers[H_LAST_ERROR]
    assert headers[H_RECOVERY_SOURCE] == b"spool:k1"


async def test_a_permanent_refusal_is_parked_at_once_with_kafkas_error() -> None:
    primary = FakeProducer({TOPICS.p20: UNKNOWN_TOPIC})
    value = publisher_capture("e7", TOPICS.p20)
    report = await replayer(primary).replay(captured(value))
    assert report.outcomes == (Outcome.PARKED,)
    assert report.parked == {"refused": 1}
    [(_, parked, headers)] = primary.to(TOPICS.dlq)
    assert parked == value
    assert b"Unknown topic or partition" in headers[H_LAST_ERROR]
    assert headers[H_ORIGINAL_TOPIC] == TOPICS.p20.encode()


async def test_a_transient_failure_stays_pending_until_the_attempts_are_spent() -> None:
    primary = FakeProducer({TOPICS.p20: TIMED_OUT})
    value = publisher_capture("e8", TOPICS.p20)
    first = await replayer(primary).replay(captured(value))
    assert (first.outcomes, first.pending, first.parked) == ((Outcome.PENDING,), [0], {})
    assert not primary.sent, "nothing parked while attempts remain"
    last = await replayer(primary).replay(captured(value), give_up=True)
    assert (last.outcomes, last.parked) == ((Outcome.PARKED,), {"gave_up": 1})
    [(_, _, headers)] = primary.to(TOPICS.dlq)
    assert b"timed out" in headers[H_LAST_ERROR]


async def test_a_failed_dlq_write_leaves_the_event_pending_and_says_if_it_is_for_good() -> None:
    value = publisher_capture("e9", TOPICS.p20)
    down = FakeProducer({TOPICS.p20: TOO_LARGE, TOPICS.dlq: TIMED_OUT})
    report = await replayer(down).replay(captured(value))
    assert (report.outcomes, report.dlq_refused, report.parked) == ((Outcome.PENDING,), (), {})
    refused = FakeProducer({TOPICS.p20: TOO_LARGE, TOPICS.dlq: TOO_LARGE})
    report = await replayer(refused).replay(captured(value))
    assert (report.outcomes, report.dlq_refused) == ((Outcome.PENDING,), (0,))


async def test_records_not_yet_in_kafka_are_reported_so_their_copies_are_kept() -> None:
    good = pb.EventData(event_id="e4", company_id="c", priority=pb.P20).SerializeToString()
    garbage = b"\xff\xfe not protobuf"
    # The lane is down: the event is pending. The DLQ is down: the undecodable one is too.
    lane_down = await replayer(FakeProducer({TOPICS.p20: TIMED_OUT})).replay(
        captured(good, garbage)
    )
    assert lane_down.pending == [0]
    dlq_down = await replayer(FakeProducer({TOPICS.dlq: TIMED_OUT})).replay(captured(good, garbage))
    assert dlq_down.pending == [1]


class SizeLimitedProducer(FakeProducer):
    """Refuses, as a broker does, every record of a batch that holds a value over its
    topic's limit (``limits``; other topics take anything)."""

    def __init__(self, limits: dict[str, int]) -> None:
        super().__init__()
        self.limits = limits
        self.batches: list[tuple[str, int]] = []

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        self.batches.append((topic, len(records)))
        limit = self.limits.get(topic)
        if limit is not None and any(len(value) > limit for _, value, _ in records):
            return [TOO_LARGE for _ in records]
        return await super().send(topic, records)


async def test_a_size_refusal_is_believed_only_for_a_record_sent_alone() -> None:
    """One large record must not take its batch-mates down with it (they are tried alone)."""
    primary = SizeLimitedProducer({TOPICS.p20: 80})
    small = publisher_capture("small", TOPICS.p20)
    large = pb.EventData.FromString(publisher_capture("large", TOPICS.p20))
    large.payload = b"x" * 100
    report = await replayer(primary).replay(captured(small, large.SerializeToString()))
    assert report.outcomes == (Outcome.REPLAYED, Outcome.PARKED)
    assert report.parked == {"refused": 1}
    # The batch, then each refused record alone, then the DLQ.
    assert primary.batches == [(TOPICS.p20, 2), (TOPICS.p20, 1), (TOPICS.p20, 1), (TOPICS.dlq, 1)]


class CoBatchingProducer(SizeLimitedProducer):
    """Like librdkafka, puts sends that overlap in time into one batch per topic: a large
    record refused by the broker takes every record sent alongside it down too."""

    def __init__(self, limits: dict[str, int]) -> None:
        super().__init__(limits)
        self.open: dict[str, list[bytes]] = {}

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        batch = self.open.setdefault(topic, [])
        batch += [value for _, value, _ in records]
        await asyncio.sleep(0.01)  # linger: a concurrent send joins this batch
        limit = self.limits.get(topic)
        refused = limit is not None and any(len(value) > limit for value in batch)
        self.open.pop(topic, None)
        if refused:
            return [TOO_LARGE for _ in records]
        return await FakeProducer.send(self, topic, records)


async def test_a_small_record_replayed_beside_another_loops_large_one_is_not_parked() -> None:
    """The topic loop and the backup loop share one replayer: their sends to a topic must
    not share a producer batch, or a small record is refused for the other's large one."""
    primary = CoBatchingProducer({TOPICS.p20: 80})
    shared = replayer(primary)
    large = pb.EventData.FromString(publisher_capture("large", TOPICS.p20))
    large.payload = b"x" * 100
    small_report, large_report = await asyncio.gather(
        shared.replay(captured(publisher_capture("small", TOPICS.p20))),
        shared.replay(captured(large.SerializeToString())),
    )
    assert small_report.outcomes == (Outcome.REPLAYED,)
    assert small_report.parked == {}
    assert large_report.outcomes == (Outcome.PARKED,)


async def test_a_parked_client_capture_carries_the_class_it_was_given() -> None:
    primary = FakeProducer({TOPICS.p30: UNKNOWN_TOPIC})
    event = pb.EventData(event_id="e10", company_id="c", source_name="checkout", ingested_at_ms=7)
    report = await replayer(primary).replay(captured(event.SerializeToString()))
    assert report.parked == {"refused": 1}
    [(_, value, headers)] = primary.to(TOPICS.dlq)
    back = pb.EventData.FromString(value)
    assert (back.event_id, back.priority, back.slo_deadline_ms) == ("e10", pb.P30, 7 + 5_000)
    assert headers[H_ORIGINAL_TOPIC] == TOPICS.p30.encode()


# -- hostile captures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"ingested_at_ms": 2**63 - 1},  # + SLO overflowed int64: the setter raised
        {"ingested_at_ms": -1},
        {"ingested_at_ms": 10**15},
        {"ingested_at_ms": 1_000, "slo_deadline_ms": -(2**63)},
        {"priority": pb.P20, "intended_topic": TOPICS.p20, "slo_deadline_ms": 2**63 - 1},
    ],
    ids=["ingested-int64-max", "ingested-negative", "ingested-15-digits", "deadline-int64-min",
         "publisher-capture-deadline-int64-max"],
)  # fmt: skip
async def test_an_event_whose_times_are_not_times_is_parked_as_invalid(
    fields: dict[str, Any],
) -> None:
    primary = FakeProducer()
    event = pb.EventData(event_id="bad-time", company_id="c", source_name="api", **fields)
    good = pb.EventData(event_id="ok", company_id="c", priority=pb.P20, ingested_at_ms=5)
    report = await replayer(primary).replay(
        captured(event.SerializeToString(), good.SerializeToString())
    )
    assert report.outcomes == (Outcome.PARKED, Outcome.REPLAYED)
    assert report.parked == {"invalid": 1}
    [(_, value, headers)] = primary.to(TOPICS.dlq)
    assert value == event.SerializeToString(), "parked as captured"
    assert headers[H_LAST_ERROR].startswith(b"invalid: ")
    assert [pb.EventData.FromString(v).event_id for _, v, _ in primary.to(TOPICS.p20)] == ["ok"]


NO_ID = pb.EventData(company_id="c", priority=pb.P20, intended_topic=TOPICS.p20)


@pytest.mark.parametrize("value", [b"", NO_ID.SerializeToString()], ids=["tombstone", "no-id"])
async def test_a_capture_without_an_event_id_is_parked_as_invalid(value: bytes) -> None:
    """A tombstone parses as an empty EventData; replayed, it would be an event of nobody."""
    primary = FakeProducer()
    good = pb.EventData(event_id="ok", company_id="c", priority=pb.P20, ingested_at_ms=5)
    report = await replayer(primary).replay(captured(value, good.SerializeToString()))
    assert report.outcomes == (Outcome.PARKED, Outcome.REPLAYED)
    assert report.parked == {"invalid": 1}
    [(_, parked, headers)] = primary.to(TOPICS.dlq)
    assert parked == value, "parked as captured"
    assert headers[H_LAST_ERROR] == b"invalid: no event_id"
    assert [pb.EventData.FromString(v).event_id for _, v, _ in primary.to(TOPICS.p20)] == ["ok"]


I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
hostile_events = st.builds(
    pb.EventData,
    event_id=st.text(max_size=20),
    company_id=st.text(max_size=20),
    source_name=st.sampled_from(["api", "checkout", "", "x" * 300]),
    priority=st.sampled_from([0, 10, 20, 30, -5, 99]),
    ingested_at_ms=I64,
    slo_deadline_ms=I64,
    attempt=st.integers(min_value=0, max_value=2**32 - 1),
    offloaded=st.booleans(),
    intended_topic=st.sampled_from(["", TOPICS.p30, TOPICS.retry_60s, TOPICS.dlq, "other"]),
    intended_cluster=st.sampled_from(["", "primary", "rollout", "mars"]),
)
hostile_values = st.one_of(
    hostile_events.map(lambda e: e.SerializeToString()),
    st.binary(max_size=100),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(hostile_values, min_size=1, max_size=8))
def test_any_captured_bytes_are_replayed_or_parked_and_nothing_raises(values: list[bytes]) -> None:
    primary = FakeProducer()
    report = asyncio.run(replayer(primary).replay(captured(*values)))
    assert len(report.outcomes) == len(values)
    assert Outcome.PENDING not in report.outcomes, "Kafka took everything: nothing is left"
    assert sum(report.parked.values()) == report.outcomes.count(Outcome.PARKED)
    lanes = {TOPICS.p30, TOPICS.p20, TOPICS.p10, TOPICS.offload, TOPICS.retry_60s}
    for topic, _, value, _ in primary.sent:
        assert topic in lanes | {TOPICS.dlq}
        if topic != TOPICS.dlq:
            event = pb.EventData.FromString(value)
            assert 0 <= event.slo_deadline_ms < 10**15


def test_the_cluster_of_a_capture_is_where_its_replay_would_be_written() -> None:
    r = replayer(FakeProducer(), FakeProducer())
    to_rollout = pb.EventData(
        event_id="e", company_id="c", intended_topic=TOPICS.p20, intended_cluster="rollout"
    )
    assert r.cluster_of(to_rollout.SerializeToString()) == "rollout"
    to_primary = pb.EventData(event_id="e", company_id="c", intended_topic=TOPICS.p20)
    assert r.cluster_of(to_primary.SerializeToString()) == "primary"
    client_capture = pb.EventData(event_id="e", company_id="c", source_name="checkout")
    assert r.cluster_of(client_capture.SerializeToString()) == "primary"
    # Parked ones go to the DLQ, on the primary cluster.
    unknown = pb.EventData(
        event_id="e", company_id="c", intended_topic="not-ours", intended_cluster="rollout"
    )
    assert r.cluster_of(unknown.SerializeToString()) == "primary"
    assert r.cluster_of(b"") == "primary", "a tombstone: invalid, parked"
    assert r.cluster_of(b"\xff\xff") == "primary", "undecodable: parked"
