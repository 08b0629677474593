"""DLQ records from a hostile topic: every tool path reads them without an exception.

A DLQ (or parking lot, retry topic, redrive log) may hold anything. Found while fuzzing:
a deadline past the year 9999 (``iso_utc``), an attempt header of ``"²"`` (``str.isdigit``
accepts it, ``int`` does not), a deeply nested JSON payload (``dlq show``'s preview) and a
deeply nested redrive-log entry each raised, so one record stopped ``eventgw dlq list``.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.dlq_output import payload_preview, show_doc, show_text, table_row
from eventgw.config.settings import TopicSettings
from eventgw.core.envelope import (
    H_ATTEMPT,
    H_CLASS,
    H_EVENT_ID,
    H_LAST_ERROR,
    H_ORIGINAL_TOPIC,
    H_REDRIVEN,
    Priority,
)
from eventgw.dlq.lanes import (
    NotRedrivable,
    lane_topics,
    parse_source_marker,
    redrive_record,
    redrive_target,
)
from eventgw.dlq.record import DlqRecord, iso_utc, parse_count
from eventgw.dlq.redrive_log import LogEntry, decode_entry
from eventgw.dlq.selection import Selection
from eventgw.kafka.scanner import ScannedRecord

T = TopicSettings()
LANES = lane_topics(T)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DEEP = b"[" * 100_000 + b"]" * 100_000


def scanned(value: bytes, headers: list[tuple[str, bytes]], ts: int = 1) -> DlqRecord:
    return DlqRecord.from_scanned(ScannedRecord(T.dlq, 0, 5, ts, b"acme", value, headers))


@pytest.mark.parametrize(
    "ms", [2**62, 2**63 - 1, 253_402_300_800_000, 10**18], ids=["2**62", "i64", "y10000", "1e18"]
)
def test_a_time_past_the_year_9999_is_shown_as_a_number(ms: int) -> None:
    assert iso_utc(ms) == f"{ms} ms (not a time)"
    assert iso_utc(-1) == "-"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        ("4", 4),
        ("0012", 12),
        ("²", None),
        ("\u0661", None),
        ("9" * 11, None),
        ("", None),
        (None, None),
    ],
)
def test_counts_are_ascii_digits_and_bounded(raw: str | None, count: int | None) -> None:
    assert parse_count(raw) == count


def test_an_undecodable_record_with_hostile_headers_lists_and_shows() -> None:
    record = scanned(b"\xff", [(H_ATTEMPT, "²".encode()), (H_CLASS, b"P\xff")], ts=2**62)
    assert record.attempt is None
    assert record.priority is None
    assert str(2**62) in table_row(record, None, LANES), "the time, as the number it is"
    assert f"{2**62} ms (not a time)" in json.dumps(record.summary())
    assert "(undecodable" in show_text(record, None, 100)
    json.dumps(show_doc(record, None, 100))


def test_a_deeply_nested_payload_is_previewed_as_text() -> None:
    assert payload_preview(DEEP, 20) == (
        "text",
        "[" * 20 + f"\n… ({len(DEEP) - 20} more characters)",
    )


def test_a_marker_with_superscript_digits_is_no_marker() -> None:
    assert parse_source_marker("dlq:²:7".encode()) is None
    assert parse_source_marker(b"dlq:1:" + b"9" * 5000) is None
    assert parse_source_marker(b"dlq:1:7") == ("dlq", 1, 7)


def test_a_deeply_nested_log_entry_is_ignored() -> None:
    value = b'{"state":"done","event_id":"e","target":"t","at_ms":1,"x":' + DEEP + b"}"
    assert decode_entry(value) is None


events = st.builds(
    pb.EventData,
    event_id=st.text(max_size=40),
    company_id=st.text(max_size=20),
    payload=st.one_of(st.binary(max_size=64), st.just(DEEP[:3000] + DEEP[-3000:])),
    priority=st.sampled_from([0, 10, 20, 30, -1, 77]),
    ingested_at_ms=I64,
    slo_deadline_ms=I64,
    attempt=st.integers(min_value=0, max_value=2**32 - 1),
)
header_values = st.one_of(
    st.binary(max_size=30), st.sampled_from([b"\xc2\xb2", b"P30", b"9" * 40, b"dlq:1:2"])
)
headers = st.lists(
    st.tuples(
        st.sampled_from(
            [H_ATTEMPT, H_CLASS, H_EVENT_ID, H_LAST_ERROR, H_ORIGINAL_TOPIC, H_REDRIVEN, "x"]
        ),
        header_values,
    ),
    max_size=8,
)
values = st.one_of(events.map(lambda e: e.SerializeToString()), st.binary(max_size=80))
SELECTION = Selection(
    companies=frozenset({"acme"}),
    classes=frozenset({Priority.P30}),
    error_contains="time",
    since_ms=0,
    until_ms=2**62,
)


@settings(max_examples=300, deadline=None)
@given(
    value=values,
    hdrs=headers,
    ts=st.integers(min_value=-1, max_value=2**63 - 1),
    log_value=st.one_of(st.binary(max_size=80), st.builds(
        lambda at, p, o: json.dumps(
            {"state": "done", "event_id": "e", "target": T.p20, "at_ms": at,
             "target_partition": p, "target_offset": o}
        ).encode(),
        I64, I64, I64,
    )),
)  # fmt: skip
def test_every_tool_path_reads_any_record(
    value: bytes, hdrs: list[tuple[str, bytes]], ts: int, log_value: bytes
) -> None:
    record = scanned(value, hdrs, ts)
    entry: LogEntry | None = decode_entry(log_value)
    json.dumps(record.summary())
    table_row(record, entry, LANES)
    show_text(record, entry, 200)
    json.dumps(show_doc(record, entry, 200))
    SELECTION.matches(record)
    for _, header in hdrs:
        parse_source_marker(header)
    if record.decodable:
        assert redrive_target(record, T) in LANES
        _, lane_value, lane_headers = redrive_record(record)
        assert pb.EventData.FromString(lane_value).attempt == 0
        assert all(isinstance(v, bytes) for _, v in lane_headers)
    else:
        with pytest.raises(NotRedrivable):
            redrive_target(record, T)
