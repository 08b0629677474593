"""The replay intent in commit metadata and the recovery-source header: exact, or nothing."""

from __future__ import annotations

import pytest

from eventgw.recovery.replay_intent import (
    INTENT_PREFIX,
    decode_intent,
    encode_intent,
    parse_source,
    source_of,
)


def test_an_intent_round_trips() -> None:
    assert decode_intent(encode_intent(1_733_380_000_123)) == 1_733_380_000_123
    assert decode_intent(encode_intent(0)) == 0


@pytest.mark.parametrize("bad", [-1, 10**15])
def test_an_intent_that_is_not_a_wall_time_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="sent_from_ms"):
        encode_intent(bad)


@pytest.mark.parametrize(
    "metadata",
    [
        "",  # a commit made before intents existed
        "something else",
        INTENT_PREFIX,  # no digits
        INTENT_PREFIX + "12a",
        INTENT_PREFIX + "-5",
        INTENT_PREFIX + "1" * 16,  # too long to be a time
        INTENT_PREFIX + "١٢٣",  # non-ASCII digits
        "eventgw-replay-intent/2 sent_from_ms=5",  # a version this code does not know
    ],
)
def test_metadata_that_is_not_exactly_an_intent_holds_none(metadata: str) -> None:
    assert decode_intent(metadata) is None


def test_a_source_names_its_partition_and_offset_in_its_topic_only() -> None:
    value = source_of("fw", 3, 1234).encode()
    assert value == b"fw:3:1234"
    assert parse_source(value, "fw") == (3, 1234)
    assert parse_source(value, "f") is None, "another topic whose name is a prefix"
    assert parse_source(b"fw-2:3:1234", "fw") is None
    assert parse_source(b"spool:k-1", "spool") is None, "a backup object: no offset"
    for bad in (b"fw:3", b"fw::1", b"fw:x:1", b"fw:3:-1", b"fw:3:1:2", b"fw:3:" + b"9" * 20):
        assert parse_source(bad, "fw") is None, bad
