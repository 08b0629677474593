"""Tests for eventgw.metrics.statsd_lines: line format, deltas, sanitizing, datagram packing."""

from __future__ import annotations

import pytest

from eventgw.metrics.backend import Metrics
from eventgw.metrics.statsd_lines import (
    MAX_DATAGRAM_BYTES,
    Reading,
    StatKind,
    format_number,
    pack_datagrams,
    read_registry,
    render_lines,
    root_prefix,
    sanitize,
)

C, G = StatKind.COUNTER, StatKind.GAUGE


def sample_metrics() -> Metrics:
    """One counter, two gauges (one negative) and a histogram (test_statsd uses it too)."""
    m = Metrics()
    m.counter("eventgw_ingest_events_total", "events", ["status"]).labels("accepted").inc(3)
    m.gauge("eventgw_publisher_in_flight_events", "in flight", ["lane"]).labels("p/10").set(-2)
    m.gauge("eventgw_recovery_backup_objects", "objects").set(7)
    h = m.histogram("eventgw_ingest_request_duration_seconds", "latency")
    h.observe(0.25)
    h.observe(0.5)
    return m


# --- sanitizing and keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eventgw_ingest_events_total", "eventgw_ingest_events_total"),
        ("p/10", "p_10"),
        ("a.b:c|d\ne f", "a_b_c_d_e_f"),
        ("keep-dash_and_UNDERSCORE9", "keep-dash_and_UNDERSCORE9"),
        ("café", "caf_"),
        ("", "_"),
    ],
)
def test_sanitize_replaces_everything_outside_the_safe_set(text: str, expected: str) -> None:
    assert sanitize(text) == expected


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("eventgw", "eventgw."),
        ("eventgw.prep_publisher", "eventgw.prep_publisher."),
        ("event gw..prep/pub.", "event_gw.prep_pub."),
        ("", ""),
    ],
)
def test_root_keeps_dots_as_separators_and_sanitizes_each_part(root: str, expected: str) -> None:
    assert root_prefix(root) == expected


def test_registry_reading_keeps_total_gauges_count_and_sum_but_no_buckets_or_created() -> None:
    readings = read_registry(sample_metrics().registry.collect())
    assert readings == [
        Reading("eventgw_ingest_events_total.accepted", C, 3.0),
        Reading("eventgw_publisher_in_flight_events.p_10", G, -2.0),
        Reading("eventgw_recovery_backup_objects", G, 7.0),
        Reading("eventgw_ingest_request_duration_seconds.count", C, 2.0),
        Reading("eventgw_ingest_request_duration_seconds.sum", C, 0.75),
    ]


def test_label_values_follow_declaration_order_and_histogram_labels_follow_the_suffix() -> None:
    m = Metrics()
    m.counter("eventgw_publisher_events_total", "x", ["lane", "status"]).labels(
        "p30", "failed writes"
    ).inc()
    m.histogram("eventgw_processor_handler_duration_seconds", "x", ["result"]).labels(
        "ack"
    ).observe(1)
    keys = [r.key for r in read_registry(m.registry.collect())]
    assert keys == [
        "eventgw_publisher_events_total.p30.failed_writes",
        "eventgw_processor_handler_duration_seconds.count.ack",
        "eventgw_processor_handler_duration_seconds.sum.ack",
    ]


def test_non_finite_values_are_not_sent() -> None:
    m = Metrics()
    m.gauge("eventgw_recovery_backup_objects", "x").set(float("nan"))
    assert read_registry(m.registry.collect()) == []


# --- numbers and lines ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3.0, "3"),
        (-2.0, "-2"),
        (0.1 + 0.2, "0.3"),
        (0.75, "0.75"),
        (1e-9, "0"),
        (-1e-9, "0"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (1.23456789, "1.234568"),
    ],
)
def test_numbers_are_plain_decimals(value: float, expected: str) -> None:
    assert format_number(value) == expected


def test_first_flush_sends_full_counter_values_and_gauges() -> None:
    readings = read_registry(sample_metrics().registry.collect())
    lines, sent = render_lines("eventgw.ingest.", readings, {})
    assert lines == [
        "eventgw.ingest.eventgw_ingest_events_total.accepted:3|c",
        # a negative gauge is reset to 0 first: "-2|g" alone means "decrement by 2"
        "eventgw.ingest.eventgw_publisher_in_flight_events.p_10:0|g\n"
        "eventgw.ingest.eventgw_publisher_in_flight_events.p_10:-2|g",
        "eventgw.ingest.eventgw_recovery_backup_objects:7|g",
        "eventgw.ingest.eventgw_ingest_request_duration_seconds.count:2|c",
        "eventgw.ingest.eventgw_ingest_request_duration_seconds.sum:0.75|c",
    ]
    assert sent == {
        "eventgw_ingest_events_total.accepted": 3.0,
        "eventgw_ingest_request_duration_seconds.count": 2.0,
        "eventgw_ingest_request_duration_seconds.sum": 0.75,
    }


def test_later_flushes_send_counter_deltas_skip_zero_deltas_and_always_send_gauges() -> None:
    m = sample_metrics()
    _, sent = render_lines("r.", read_registry(m.registry.collect()), {})
    m.counter("eventgw_ingest_events_total", "events", ["status"]).labels("accepted").inc(2)
    lines, sent = render_lines("r.", read_registry(m.registry.collect()), sent)
    assert lines == [
        "r.eventgw_ingest_events_total.accepted:2|c",
        "r.eventgw_publisher_in_flight_events.p_10:0|g\nr.eventgw_publisher_in_flight_events.p_10:-2|g",
        "r.eventgw_recovery_backup_objects:7|g",
    ]
    lines, _ = render_lines("r.", read_registry(m.registry.collect()), sent)
    assert [line for line in lines if line.endswith("|c")] == []


def test_rounding_remainders_are_carried_not_lost() -> None:
    sent: dict[str, float] = {}
    total_sent = 0.0
    for value in (0.1234564, 0.2469128, 0.3703692):  # 0.1234564 per flush
        lines, sent = render_lines("", [Reading("s", C, value)], sent)
        total_sent += sum(float(line.split(":")[1].removesuffix("|c")) for line in lines)
    assert abs(total_sent - 0.3703692) < 1e-6


def test_a_tiny_delta_waits_until_it_is_visible() -> None:
    lines, sent = render_lines("", [Reading("s", C, 5.0)], {})
    lines, sent = render_lines("", [Reading("s", C, 5.0000004)], sent)
    assert lines == []
    assert sent == {"s": 5.0}
    lines, _ = render_lines("", [Reading("s", C, 5.0000008)], sent)
    assert lines == ["s:0.000001|c"]


def test_a_counter_that_went_down_is_taken_as_reset_and_sent_whole() -> None:
    _, sent = render_lines("", [Reading("s", C, 10.0)], {})
    lines, sent = render_lines("", [Reading("s", C, 4.0)], sent)
    assert lines == ["s:4|c"]
    assert sent == {"s": 4.0}


def test_series_that_disappear_leave_the_baseline() -> None:
    _, sent = render_lines("", [Reading("a", C, 1.0), Reading("b", C, 1.0)], {})
    _, sent = render_lines("", [Reading("a", C, 1.0)], sent)
    assert sent == {"a": 1.0}


# --- datagrams --------------------------------------------------------------------------


def test_entries_are_packed_in_order_up_to_the_limit() -> None:
    entries = [f"k{i:02d}:1|c" for i in range(10)]  # 8 bytes each
    datagrams = pack_datagrams(entries, max_bytes=26)  # 3 entries + 2 newlines = 26
    assert datagrams == [
        b"k00:1|c\nk01:1|c\nk02:1|c",
        b"k03:1|c\nk04:1|c\nk05:1|c",
        b"k06:1|c\nk07:1|c\nk08:1|c",
        b"k09:1|c",
    ]
    assert all(len(d) <= 26 for d in datagrams)


def test_default_limit_is_1432_bytes_and_nothing_is_lost() -> None:
    entries = [f"eventgw.some_metric_name.label{i}:{i}|c" for i in range(500)]
    datagrams = pack_datagrams(entries)
    assert MAX_DATAGRAM_BYTES == 1432
    assert all(len(d) <= 1432 for d in datagrams)
    assert b"\n".join(datagrams).decode().split("\n") == entries


def test_an_entry_of_two_lines_is_never_split_and_an_entry_may_fill_a_datagram() -> None:
    pair = "g:0|g\ng:-2|g"  # 12 bytes
    assert pack_datagrams(["a:1|c", pair], max_bytes=12) == [b"a:1|c", pair.encode()]


def test_an_entry_longer_than_a_datagram_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds 8"):
        pack_datagrams(["a_long_key:1|c"], max_bytes=8)


def test_nothing_to_send_gives_no_datagram() -> None:
    assert pack_datagrams([]) == []
