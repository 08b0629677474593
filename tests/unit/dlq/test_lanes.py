"""Decoding DLQ records, choosing the redrive lane and building the lane record."""

from __future__ import annotations

import pytest

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import TopicSettings
from eventgw.core.envelope import (
    H_ATTEMPT,
    H_CLASS,
    H_DEADLINE_MS,
    H_EVENT_ID,
    H_REDRIVEN,
    Headers,
    Lane,
    Priority,
    header_value,
)
from eventgw.dlq.lanes import (
    NotRedrivable,
    parse_source_marker,
    redrive_record,
    redrive_target,
    source_marker,
)
from eventgw.dlq.record import DlqRecord, decode_event, iso_utc
from eventgw.kafka.scanner import ScannedRecord
from tests.fixtures.dlq import dead_letter, make_event, undecodable_dead_letter

TOPICS = TopicSettings()


def _dlq_record(key: bytes, value: bytes, headers: Headers, *, offset: int = 7) -> DlqRecord:
    return DlqRecord.from_scanned(
        ScannedRecord(TOPICS.dlq, 2, offset, 1_700_000_000_000, key, value, headers)
    )


def _dead(
    priority: Priority = Priority.P20, origin: str = TOPICS.p20, attempt: int = 4
) -> DlqRecord:
    event = make_event("ev-1", priority, attempt=attempt, ingested_at_ms=1_000)
    return _dlq_record(*dead_letter(event, origin_topic=origin, error="boom\nline 2"))


def test_a_dead_letter_decodes_with_every_listing_field() -> None:
    record = _dead()
    assert record.decodable
    assert (record.event_id, record.company, record.priority) == ("ev-1", "acme", Priority.P20)
    assert record.attempt == 5  # the orchestrator counts the last attempt
    assert record.last_error == "boom\nline 2"
    assert record.origin_topic == TOPICS.p20
    assert record.redriven_from is None
    assert record.coordinate == "2:7"
    doc = record.summary()
    assert doc["class"] == "P20"
    assert doc["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert doc["deadline"] == iso_utc(1_000 + 60_000)
    assert doc["decodable"] is True


def test_an_undecodable_record_is_listed_from_its_headers_and_key() -> None:
    record = _dlq_record(*undecodable_dead_letter(b"\xff\xfenot protobuf", origin_topic=TOPICS.p30))
    assert not record.decodable
    assert record.event_id is None
    assert record.company == "acme"
    assert record.priority is None
    assert record.attempt is None
    assert record.last_error == "undecodable: not an eventgw EventData"
    assert record.summary()["class"] is None


def test_header_fallbacks_when_the_value_is_not_an_event() -> None:
    headers = [(H_EVENT_ID, b"ev-9"), (H_CLASS, b"P30"), (H_ATTEMPT, b"3")]
    record = _dlq_record(b"", b"{json}", headers)
    assert (record.event_id, record.priority, record.attempt) == ("ev-9", Priority.P30, 3)
    assert record.company is None
    odd = _dlq_record(b"", b"{json}", [(H_CLASS, b"urgent"), (H_ATTEMPT, b"x")])
    assert (odd.priority, odd.attempt) == (None, None)


def test_an_empty_or_idless_value_is_not_an_event() -> None:
    assert decode_event(b"") is None
    assert decode_event(pb.EventData(company_id="acme").SerializeToString()) is None
    assert iso_utc(-1) == "-"


def test_target_is_the_original_lane_topic() -> None:
    assert redrive_target(_dead(Priority.P20, origin=TOPICS.offload), TOPICS) == TOPICS.offload
    assert redrive_target(_dead(Priority.P10, origin=TOPICS.p30), TOPICS) == TOPICS.p30


@pytest.mark.parametrize(
    ("priority", "lane"),
    [(Priority.P30, "p30"), (Priority.P20, "p20"), (Priority.P10, "p10")],
)
def test_target_is_the_class_lane_when_the_origin_is_not_a_lane(
    priority: Priority, lane: Lane
) -> None:
    for origin in (TOPICS.retry_60s, "some.other.topic"):
        assert redrive_target(_dead(priority, origin=origin), TOPICS) == TOPICS.lane_topic(lane)


def test_target_of_an_unknown_class_is_p10_as_the_orchestrator_serves_it() -> None:
    event = make_event("ev-1", Priority.P20)
    event.priority = 0  # type: ignore[assignment]  # PRIORITY_UNSPECIFIED
    record = _dlq_record(*dead_letter(event, origin_topic="gone"))
    assert redrive_target(record, TOPICS) == TOPICS.p10


def test_an_undecodable_record_cannot_be_redriven() -> None:
    record = _dlq_record(*undecodable_dead_letter(b"\xff", origin_topic=TOPICS.p30))
    with pytest.raises(NotRedrivable, match="2:7: not an EventData"):
        redrive_target(record, TOPICS)
    with pytest.raises(NotRedrivable):
        redrive_record(record)


def test_the_lane_record_resets_attempt_keeps_class_and_deadline_and_is_marked() -> None:
    record = _dead(Priority.P30, origin=TOPICS.p30, attempt=9)
    assert record.event is not None
    key, value, headers = redrive_record(record)
    event = pb.EventData.FromString(value)
    assert key == b"acme"
    assert event.attempt == 0
    assert event.priority == Priority.P30
    assert event.slo_deadline_ms == record.event.slo_deadline_ms == 1_000 + 5_000
    assert event.ingested_at_ms == 1_000
    assert event.payload == record.event.payload
    assert record.event.attempt == 10  # the record read stays as it was
    assert header_value(headers, H_ATTEMPT) == b"0"
    assert header_value(headers, H_CLASS) == b"P30"
    assert header_value(headers, H_DEADLINE_MS) == b"6000"
    assert header_value(headers, H_EVENT_ID) == b"ev-1"
    assert header_value(headers, H_REDRIVEN) == f"{TOPICS.dlq}:2:7".encode()
    assert [name for name, _ in headers].count(H_REDRIVEN) == 1


def test_a_record_without_key_is_keyed_by_its_company() -> None:
    event = make_event("ev-1", company="globex")
    _, value, headers = dead_letter(event, origin_topic=TOPICS.p20)
    assert redrive_record(_dlq_record(b"", value, headers))[0] == b"globex"


def test_source_markers_round_trip() -> None:
    marker = source_marker("events.public.events-express-v1-dlq", 3, 12)
    assert parse_source_marker(marker) == ("events.public.events-express-v1-dlq", 3, 12)
    for bad in (b"", b"topic", b"topic:1", b"topic:x:1", b":1:2"):
        assert parse_source_marker(bad) is None
