"""How ``eventgw dlq`` prints: table rows, JSON fields, one record in full, payload previews."""

from __future__ import annotations

import json

from eventgw.cli.dlq_output import (
    TABLE_HEADER,
    clip,
    entry_doc,
    payload_preview,
    show_doc,
    show_text,
    table_row,
)
from eventgw.config.settings import TopicSettings
from eventgw.core.envelope import Headers, Priority
from eventgw.dlq.lanes import lane_topics
from eventgw.dlq.record import DlqRecord
from eventgw.dlq.redrive_log import LogEntry
from eventgw.kafka.scanner import ScannedRecord
from tests.fixtures.dlq import dead_letter, make_event, undecodable_dead_letter

T = TopicSettings()
LANES = lane_topics(T)
DONE = LogEntry("done", "ev-1", T.p20, 1_700_000_000_000, target_partition=1, target_offset=9)
INTENT = LogEntry("intent", "ev-1", T.p20, 1_700_000_000_000, target_from={0: 3})


def _record(key: bytes, value: bytes, headers: Headers) -> DlqRecord:
    return DlqRecord.from_scanned(
        ScannedRecord(T.dlq, 1, 42, 1_700_000_000_123, key, value, headers)
    )


def decodable(error: str = "Timeout calling billing\n  traceback line") -> DlqRecord:
    event = make_event("0194b1e2-7c3a-7d11-8e4f-000000000001", Priority.P20, attempt=4)
    return _record(*dead_letter(event, origin_topic=T.offload, error=error))


def undecodable() -> DlqRecord:
    return _record(*undecodable_dead_letter(b"\xff\x00binary", origin_topic=T.p30))


def test_table_rows_line_up_under_the_header() -> None:
    row = table_row(decodable(), DONE, LANES)
    assert row.index("0194b1e2") == TABLE_HEADER.index("EVENT ID")
    assert row.index("offload") == TABLE_HEADER.index("ORIGIN")
    assert row.index("done") == TABLE_HEADER.index("REDRIVE")
    assert row.startswith("1:42         2023-11-14 22:13:20 P20   acme")
    assert row.endswith("Timeout calling billing   traceback line")  # one line
    bad = table_row(undecodable(), None, LANES)
    assert "(undecodable)" in bad
    assert " ?     acme" in bad
    long = table_row(decodable("x" * 200), None, LANES)
    assert long.endswith("x" * 59 + "…")


def test_clip_and_entry_docs() -> None:
    assert clip("abcdef", 4) == "abc…"
    assert clip("abc", 4) == "abc"
    assert entry_doc(None) is None
    assert entry_doc(DONE) == {
        "state": "done",
        "target": T.p20,
        "at": "2023-11-14T22:13:20.000Z",
        "target_partition": 1,
        "target_offset": 9,
    }
    assert entry_doc(INTENT) == {
        "state": "intent",
        "target": T.p20,
        "at": "2023-11-14T22:13:20.000Z",
    }


def test_payload_previews() -> None:
    assert payload_preview(b'{"a":[1,2]}', 100) == ("JSON", '{\n  "a": [\n    1,\n    2\n  ]\n}')
    assert payload_preview(b"plain words", 5) == ("text", "plain\n… (6 more characters)")
    assert payload_preview(b"\xff\x00\x01", 2) == ("binary", "ff 00 … (1 more bytes)")


def test_show_text_of_an_event() -> None:
    text = show_text(decodable(), INTENT, 100)
    assert f"record     {T.dlq} 1:42" in text
    assert "written    2023-11-14T22:13:20.123Z" in text
    assert "unfinished redrive to" in text
    assert "  eventgw-last-error      Timeout calling billing\n" in text
    assert "\n                            traceback line" in text  # continuation aligned
    assert "  priority         P20" in text
    assert "  attempt          5" in text
    assert "payload    12 bytes, JSON" in text
    assert '"order": 42' in text


def test_show_text_and_doc_of_an_undecodable_record() -> None:
    text = show_text(undecodable(), None, 100)
    assert "redrive    not redriven" in text
    assert "(undecodable: the value is not an eventgw EventData)" in text
    assert "value      8 bytes, binary\n  ff 00 62 69 6e 61 72 79" in text
    doc = show_doc(undecodable(), None, 100)
    json.dumps(doc)  # JSON-ready
    assert doc["event"] is None
    assert doc["payload"]["kind"] == "binary"
    assert doc["redrive"] is None
    done = show_doc(decodable(), DONE, 100)
    assert done["event"]["priority"] == "P20"
    assert done["redrive"]["state"] == "done"
    assert "redriven to" in show_text(decodable(), DONE, 100)
