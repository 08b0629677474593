"""Replayer: where captured records go back to, and what counts as "not yet in Kafka"."""

from __future__ import annotations

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import TopicSettings
from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.envelope import H_LAST_ERROR, Priority
from eventgw.kafka.producer import Delivery
from eventgw.recovery.replayer import Replayer

TOPICS = TopicSettings()


class FakeProducer:
    def __init__(self, fail_topics: frozenset[str] = frozenset()) -> None:
        self.fail_topics = fail_topics
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []

    async def send(self, topic, records):
        if topic in self.fail_topics:
            return [Delivery(-1, -1, "broker down") for _ in records]
        self.sent += [(topic, key, value, headers) for key, value, headers in records]
        return [Delivery(0, i) for i in range(len(records))]


def replayer(primary: FakeProducer, rollout: FakeProducer | None = None) -> Replayer:
    producers = {"primary": primary} | ({"rollout": rollout} if rollout else {})
    classifier = StaticClassifier([ClassRule(Priority.P30, source_name="checkout")], Priority.P20)
    return Replayer(producers, TOPICS, classifier)


async def test_publisher_captures_go_back_to_their_intended_topic_and_cluster() -> None:
    primary, rollout = FakeProducer(), FakeProducer()
    event = pb.EventData(
        event_id="e1",
        company_id="c",
        priority=pb.P10,
        intended_topic="t-x",
        intended_cluster="rollout",
    )
    assert await replayer(primary, rollout).replay([event.SerializeToString()]) == 0
    [(topic, key, value, _)] = rollout.sent
    assert (topic, key) == ("t-x", b"c")
    back = pb.EventData.FromString(value)
    assert (back.event_id, back.intended_topic, back.intended_cluster) == ("e1", "", "")
    assert not primary.sent


async def test_client_captures_are_classified_and_keep_their_promise() -> None:
    primary = FakeProducer()
    event = pb.EventData(
        event_id="e2", company_id="c", source_name="checkout", ingested_at_ms=1_000
    )
    assert await replayer(primary).replay([event.SerializeToString()]) == 0
    [(topic, _, value, _)] = primary.sent
    back = pb.EventData.FromString(value)
    assert topic == TOPICS.p30
    assert (back.priority, back.slo_deadline_ms) == (pb.P30, 1_000 + 5_000)


async def test_an_undecodable_record_is_parked_in_the_dlq_not_dropped() -> None:
    primary = FakeProducer()
    good = pb.EventData(event_id="e3", company_id="c", priority=pb.P20).SerializeToString()
    garbage = b"\xff\xfe not protobuf"
    assert await replayer(primary).replay([good, garbage]) == 0
    by_topic = {topic: (value, dict(headers)) for topic, _, value, headers in primary.sent}
    assert set(by_topic) == {TOPICS.p20, TOPICS.dlq}
    value, headers = by_topic[TOPICS.dlq]
    assert value == garbage
    assert headers[H_LAST_ERROR].startswith(b"undecodable")


async def test_records_not_yet_in_kafka_are_counted_so_the_source_is_kept() -> None:
    good = pb.EventData(event_id="e4", company_id="c", priority=pb.P20).SerializeToString()
    garbage = b"\xff\xfe not protobuf"
    # The lane is down: 1 not in Kafka. The DLQ is down: the undecodable one is not either.
    assert await replayer(FakeProducer(frozenset({TOPICS.p20}))).replay([good, garbage]) == 1
    assert await replayer(FakeProducer(frozenset({TOPICS.dlq}))).replay([good, garbage]) == 1
