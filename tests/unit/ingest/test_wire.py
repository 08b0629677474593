"""Tests for eventgw.ingest.wire: the spliced PublishRequest is what protobuf would write."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.ingest.wire import RequestWriter, class_fields, identity_fields, ingest_response

_text = st.text(max_size=40) | st.sampled_from(["", "acme", "é" * 100, "a" * 20_000])
_payload = st.binary(max_size=300) | st.sampled_from([b"", b"null", b"x" * 16_383, b"x" * 70_000])
_event = st.fixed_dictionaries(
    {
        "event_id": _text,
        "company_id": _text,
        "source_name": _text,
        "statistic_key": _text,
        "payload": _payload,
        "priority": st.sampled_from([0, 10, 20, 30]),
        "slo_deadline_ms": st.integers(0, 2**62) | st.just(1_700_000_060_000),
        "offloaded": st.booleans(),
    }
)


def _write(
    events: list[dict[str, Any]], request_id: str, ingested_at_ms: int, accept: bool
) -> bytes:
    writer = RequestWriter()
    for e in events:
        writer.add(
            e["event_id"],
            identity_fields(e["company_id"], e["source_name"], e["statistic_key"]),
            e["payload"],
            class_fields(
                e["priority"], ingested_at_ms, e["slo_deadline_ms"], request_id, e["offloaded"]
            ),
        )
    return writer.to_bytes(accept_published_batch=accept)


@settings(max_examples=200)
@given(
    events=st.lists(_event, max_size=5),
    request_id=_text,
    ingested_at_ms=st.integers(0, 2**62),
    accept=st.booleans(),
)
def test_spliced_request_equals_protobufs_own_serialization(
    events: list[dict[str, Any]], request_id: str, ingested_at_ms: int, accept: bool
) -> None:
    expected = pb.PublishRequest(accept_published_batch=accept)
    for e in events:
        expected.events.add(**e, ingested_at_ms=ingested_at_ms, request_id=request_id)
    raw = _write(events, request_id, ingested_at_ms, accept)
    assert raw == expected.SerializeToString()
    assert pb.PublishRequest.FromString(raw) == expected


def test_a_typical_batch_round_trips() -> None:
    events = [
        {
            "event_id": f"0190a8c2-0000-7000-8000-{i:012d}",
            "company_id": "acme",
            "source_name": "api",
            "statistic_key": "opened",
            "payload": b'{"n": %d}' % i,
            "priority": 20,
            "slo_deadline_ms": 1_700_000_060_000,
            "offloaded": i % 2 == 1,
        }
        for i in range(500)
    ]
    parsed = pb.PublishRequest.FromString(_write(events, "req-1", 1_700_000_000_000, True))
    assert parsed.accept_published_batch
    assert [e.event_id for e in parsed.events] == [e["event_id"] for e in events]
    assert [e.offloaded for e in parsed.events] == [e["offloaded"] for e in events]
    assert {e.request_id for e in parsed.events} == {"req-1"}


def test_an_empty_writer_is_an_empty_request() -> None:
    assert RequestWriter().to_bytes(accept_published_batch=False) == b""


_result = st.tuples(
    _text,
    st.sampled_from([0, 10, 20, 30]),
    st.sampled_from(["", "p20", "offload"]),
    _text,
    st.sampled_from([0, 1, 2, 3, 4, 5]),
    _text,
    st.sampled_from(["", "primary", "fallback"]),
)


@settings(max_examples=200)
@given(
    request_id=_text, results=st.lists(_result, max_size=6), hint=st.sampled_from([0, 1, 70_000])
)
def test_spliced_ingest_response_equals_protobufs_own_serialization(
    request_id: str, results: list[tuple[str, int, str, str, int, str, str]], hint: int
) -> None:
    expected = pb.IngestResponse(request_id=request_id, retry_after_ms=hint)
    for event_id, priority, lane, topic, status, reason, cluster in results:
        expected.results.add(
            event_id=event_id,
            priority=priority,
            lane=lane,
            topic=topic,
            status=status,
            reason=reason,
            cluster=cluster,
        )
    raw = ingest_response(request_id, results, hint)
    assert raw == expected.SerializeToString()
    assert pb.IngestResponse.FromString(raw) == expected
