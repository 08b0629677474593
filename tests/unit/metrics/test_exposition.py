"""Reading a scrape back (metrics/exposition.py): the keys ``eventgw status`` prints."""

from __future__ import annotations

import pytest

from eventgw.metrics.backend import Metrics
from eventgw.metrics.exposition import sample_values


def line_values(text: str) -> dict[str, float]:
    """What ``eventgw status`` read before, line by line: the reference for its output."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("eventgw_"):
            name_labels, _, value = line.rpartition(" ")
            values[name_labels] = float(value)
    return values


def test_samples_are_keyed_as_the_text_format_writes_them() -> None:
    m = Metrics()
    events = m.counter("eventgw_publisher_events_total", "doc", ["priority", "topic"])
    events.labels("P30", "lane-p30").inc(3)
    events.labels("P10", 'odd "topic"\\x\n').inc()  # escaped in the text, and in the key
    m.gauge("eventgw_publisher_in_flight_events", "doc").set(7)
    m.histogram("eventgw_publisher_publish_duration_seconds", "doc").observe(0.02)
    text = m.render().decode()

    got = sample_values(text, "eventgw_")

    assert got['eventgw_publisher_events_total{priority="P30",topic="lane-p30"}'] == 3
    assert got[r'eventgw_publisher_events_total{priority="P10",topic="odd \"topic\"\\x\n"}'] == 1
    assert got["eventgw_publisher_in_flight_events"] == 7
    assert got["eventgw_publisher_publish_duration_seconds_count"] == 1
    assert got == line_values(text)


def test_only_samples_with_the_prefix() -> None:
    text = "# TYPE other_total counter\nother_total 1.0\n# TYPE eventgw_x gauge\neventgw_x 2.0\n"
    assert sample_values(text, "eventgw_") == {"eventgw_x": 2.0}


def test_text_that_is_not_the_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="one"):
        sample_values("eventgw_x one two three\n", "eventgw_")
