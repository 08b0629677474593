"""The redrive log: entry codec, merge rule, and reading back what was appended."""

from __future__ import annotations

import pytest

from eventgw.dlq.redrive_log import (
    LogEntry,
    RedriveLog,
    decode_entry,
    encode_entry,
    log_key,
    merge,
)
from eventgw.kafka.testing import InMemoryKafka

LOG = "redrive-log"
INTENT = LogEntry("intent", "ev-1", "lane", 100, target_from={0: 5, 1: 9})
DONE = LogEntry("done", "ev-1", "lane", 90, target_partition=1, target_offset=12)


def test_entries_round_trip_as_json() -> None:
    key, value, headers = encode_entry("dlq:0:1", INTENT)
    assert (key, headers) == (b"dlq:0:1", [])
    assert value.startswith(b"{")
    assert b'"target_partition"' not in value
    assert decode_entry(value) == INTENT
    assert decode_entry(encode_entry("k", DONE)[1]) == DONE


@pytest.mark.parametrize("value", [b"", b"null", b"{}", b'{"state":"maybe"}', b"\xff"])
def test_foreign_values_are_not_entries(value: bytes) -> None:
    assert decode_entry(value) is None


def test_done_wins_whatever_the_order_then_the_latest() -> None:
    assert merge(None, INTENT) is INTENT
    assert merge(INTENT, DONE) is DONE
    assert merge(DONE, INTENT) is DONE
    later = LogEntry("intent", "ev-1", "lane", 200)
    assert merge(INTENT, later) is later
    assert merge(later, INTENT) is later


def test_keys_name_the_source_record() -> None:
    assert log_key("events.dlq", 2, 15) == "events.dlq:2:15"


async def test_load_keeps_the_standing_entry_per_key_of_one_source_topic() -> None:
    kafka = InMemoryKafka()
    kafka.create_topic(LOG, partitions=2)
    log = RedriveLog(LOG, kafka, kafka)
    assert await log.append({}) == {}
    confirmed = await log.append({"dlq:0:1": INTENT, "dlq:0:2": INTENT, "park:0:1": DONE})
    assert all(confirmed.values())
    await log.append({"dlq:0:1": DONE})
    kafka.append(LOG, 0, b"dlq:0:3", b"garbage", [])
    assert await log.load("dlq") == {"dlq:0:1": DONE, "dlq:0:2": INTENT}
    assert await log.load("park") == {"park:0:1": DONE}


async def test_append_reports_what_was_not_confirmed() -> None:
    kafka = InMemoryKafka()
    kafka.create_topic(LOG)
    kafka.failing_topics.add(LOG)
    assert await RedriveLog(LOG, kafka, kafka).append({"dlq:0:1": DONE}) == {"dlq:0:1": False}


async def test_a_read_only_log_refuses_to_append() -> None:
    kafka = InMemoryKafka()
    kafka.create_topic(LOG)
    with pytest.raises(RuntimeError, match="read-only"):
        await RedriveLog(LOG, kafka).append({"dlq:0:1": DONE})
