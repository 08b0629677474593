"""Selections: parsing of every option value, filters, and the offsets a scan reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventgw.core.envelope import H_CLASS, H_LAST_ERROR, Priority
from eventgw.dlq.record import DlqRecord
from eventgw.dlq.selection import (
    Coordinate,
    OffsetRange,
    Selection,
    parse_classes,
    parse_coordinate,
    parse_coordinates,
    parse_duration_s,
    parse_instant,
    parse_offset_range,
    parse_positive_int,
    parse_rate,
    parse_time_range,
)
from tests.fixtures.dlq import make_event

NOW_MS = int(datetime(2025, 1, 31, 12, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172_800), ("1w", 604_800)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "-5m", "1.5h", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s(text)


def test_instants_iso_relative_and_now() -> None:
    assert parse_instant("2025-01-31T11:00:00Z", NOW_MS) == NOW_MS - 3_600_000
    assert parse_instant("2025-01-31T13:00:00+02:00", NOW_MS) == NOW_MS - 3_600_000
    assert parse_instant("2025-01-31T11:00:00", NOW_MS) == NOW_MS - 3_600_000  # no zone: UTC
    assert parse_instant("2025-01-31", NOW_MS) == NOW_MS - 12 * 3_600_000
    assert parse_instant("1h", NOW_MS) == NOW_MS - 3_600_000
    assert parse_instant("30m", NOW_MS) == NOW_MS - 1_800_000
    assert parse_instant("now", NOW_MS) == NOW_MS


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "1 hour", "", "ago"])
def test_bad_instants_name_the_formats(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_instant(text, NOW_MS)


def test_time_range() -> None:
    assert parse_time_range("2h", "1h", NOW_MS) == (NOW_MS - 7_200_000, NOW_MS - 3_600_000)
    assert parse_time_range(None, None, NOW_MS) == (None, None)
    with pytest.raises(ValueError, match="range is empty"):
        parse_time_range("1h", "2h", NOW_MS)


def test_coordinates() -> None:
    assert parse_coordinate(" 2:1500 ") == Coordinate(2, 1500)
    assert parse_coordinates(["0:5,1:7", "0:5", "3:0"]) == {
        Coordinate(0, 5),
        Coordinate(1, 7),
        Coordinate(3, 0),
    }
    assert str(Coordinate(1, 7)) == "1:7"


@pytest.mark.parametrize("text", ["1500", "2:", ":5", "a:1", "1:-2", "1:2:3", "-1:2"])
def test_bad_coordinates(text: str) -> None:
    with pytest.raises(ValueError, match="<partition>:<offset>"):
        parse_coordinate(text)


def test_offset_ranges() -> None:
    assert parse_offset_range("0:100-200") == OffsetRange(0, 100, 200)
    assert parse_offset_range("0:100-") == OffsetRange(0, 100, None)
    assert parse_offset_range("1:7") == OffsetRange(1, 7, 7)
    assert str(OffsetRange(0, 100, None)) == "0:100-"
    with pytest.raises(ValueError, match="before first"):
        parse_offset_range("0:200-100")
    for bad in ("0-100", "0:a-b", "0:-5", "x:1-2"):
        with pytest.raises(ValueError, match="<partition>:<first>-<last>"):
            parse_offset_range(bad)


def test_classes_limits_and_rates() -> None:
    assert parse_classes(["P30,p20", "10"]) == {Priority.P30, Priority.P20, Priority.P10}
    with pytest.raises(ValueError, match="unknown SLO class 'P40'"):
        parse_classes(["P40"])
    assert parse_positive_int("25") == 25
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(ValueError, match=">= 1"):
            parse_positive_int(bad)
    assert parse_rate("0.5") == 0.5
    for bad in ("0", "-3", "inf", "nan", "fast"):
        with pytest.raises(ValueError, match="events per second"):
            parse_rate(bad)


def _record(
    partition: int = 0,
    offset: int = 0,
    *,
    ts: int = NOW_MS,
    company: str = "acme",
    priority: Priority = Priority.P20,
    error: str = "Timeout calling billing",
) -> DlqRecord:
    event = make_event(f"e-{partition}-{offset}", priority, company=company)
    headers = [(H_LAST_ERROR, error.encode())]
    return DlqRecord("dlq", partition, offset, ts, company.encode(), b"", headers, event)


def test_empty_selection_matches_everything() -> None:
    selection = Selection()
    assert selection.is_everything
    assert selection.matches(_record())
    assert Selection(limit=5).is_everything


def test_filters_and_combine() -> None:
    s = Selection(
        companies=frozenset({"acme", "globex"}),
        classes=frozenset({Priority.P20}),
        error_contains="TIMEOUT",
        since_ms=NOW_MS - 1000,
        until_ms=NOW_MS,
    )
    assert not s.is_everything
    assert s.matches(_record())
    assert s.matches(_record(company="globex", ts=NOW_MS - 1000))  # both ends included
    assert not s.matches(_record(company="initech"))
    assert not s.matches(_record(priority=Priority.P30))
    assert not s.matches(_record(error="connection refused"))
    assert not s.matches(_record(ts=NOW_MS - 1001))
    assert not s.matches(_record(ts=NOW_MS + 1))


def test_an_undecodable_record_matches_no_class_filter_but_its_company_key() -> None:
    undecodable = DlqRecord("dlq", 0, 0, NOW_MS, b"acme", b"\xff", [(H_CLASS, b"")], None)
    assert not Selection(classes=frozenset({Priority.P10})).matches(undecodable)
    assert Selection(companies=frozenset({"acme"})).matches(undecodable)
    assert not Selection(error_contains="x").matches(undecodable)  # no last error


def test_coordinates_and_ranges_restrict() -> None:
    s = Selection(coordinates=frozenset({Coordinate(0, 3), Coordinate(1, 9)}))
    assert s.matches(_record(0, 3))
    assert not s.matches(_record(0, 4))
    r = Selection(offset_ranges=(OffsetRange(0, 10, 12), OffsetRange(1, 5, None)))
    assert [o for o in range(8, 15) if r.matches(_record(0, o))] == [10, 11, 12]
    assert r.matches(_record(1, 10_000))
    assert not r.matches(_record(2, 11))


def test_invalid_selections_are_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        Selection(since_ms=2, until_ms=1)
    with pytest.raises(ValueError, match="limit"):
        Selection(limit=0)


MARKS = {0: (0, 100), 1: (50, 60), 2: (7, 7)}


def test_ranges_cover_to_the_high_watermarks_and_skip_empty_partitions() -> None:
    assert Selection().partition_ranges(MARKS) == {0: (0, 100), 1: (50, 60)}


def test_ranges_start_at_the_time_index() -> None:
    assert Selection(since_ms=1).partition_ranges(MARKS, {0: 40, 1: 60, 2: 7}) == {0: (40, 100)}


def test_ranges_of_coordinates_span_only_them() -> None:
    s = Selection(coordinates=frozenset({Coordinate(0, 5), Coordinate(0, 20), Coordinate(3, 1)}))
    assert s.partition_ranges(MARKS) == {0: (5, 21)}
    beyond = Selection(coordinates=frozenset({Coordinate(0, 500)}))
    assert beyond.partition_ranges(MARKS) == {}


def test_ranges_of_offset_ranges_are_clipped_to_what_exists() -> None:
    s = Selection(offset_ranges=(OffsetRange(0, 90, 200), OffsetRange(1, 0, None)))
    assert s.partition_ranges(MARKS) == {0: (90, 100), 1: (50, 60)}
    both = Selection(offset_ranges=(OffsetRange(0, 10, 12), OffsetRange(0, 30, 31)))
    assert both.partition_ranges(MARKS) == {0: (10, 32)}
