"""A DLQ (or parking-lot, or retry-topic) record as the tools see it: decoded where possible. Pure.

The value is normally an ``EventData``; a record that is not one (the orchestrator parks
undecodable lane records in the DLQ unchanged) is kept and marked ``decodable = False``, so
it is still listed and shown, never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    H_ATTEMPT,
    H_CLASS,
    H_EVENT_ID,
    H_LAST_ERROR,
    H_ORIGINAL_TOPIC,
    H_REDRIVEN,
    Priority,
    header_value,
)

if TYPE_CHECKING:
    from eventgw.core.envelope import Headers
    from eventgw.kafka.scanner import ScannedRecord

_PRIORITY_OF: dict[int, Priority] = {p.value: p for p in Priority}


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


def iso_utc(ms: int) -> str:
    """``ms`` (Unix) as ``2025-01-31T12:00:00.123Z``; ``-`` for a missing (negative) time.

    A value past the year 9999 is no time a record can carry honestly (a damaged or foreign
    record): it is shown as the number it is, never an exception.
    """
    if ms < 0:
        return "-"
    try:
        instant = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms (not a time)"
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_count(raw: str | None, max_digits: int = 10) -> int | None:
    """A whole number written in ASCII digits (at most ``max_digits``), else None.

    ``str.isdigit`` alone also accepts ``"²"``, which ``int`` refuses, and any length.
    """
    if not raw or len(raw) > max_digits or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def decode_event(value: bytes) -> pb.EventData | None:
    """The ``EventData`` in ``value``, or None when it is not one (or has no event id)."""
    event = pb.EventData()
    try:
        event.ParseFromString(value)
    except DecodeError:
        return None
    # An empty or foreign value can parse as an empty message; without an id it is no event.
    return event if event.event_id else None


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """One record read from a DLQ, parking-lot or retry topic, with its decoded event.

    ``event`` is None when the value is not an ``EventData``; the header-derived fields
    (class, event id, attempt, ...) then come from the headers alone, when present.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers
    event: pb.EventData | None

    @classmethod
    def from_scanned(cls, record: ScannedRecord) -> DlqRecord:
        """Decode a record read by `eventgw.kafka.scanner.TopicScanner`."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp_ms,
            record.key,
            record.value,
            record.headers,
            decode_event(record.value),
        )

    @property
    def decodable(self) -> bool:
        """True when the value is an ``EventData``."""
        return self.event is not None

    @property
    def coordinate(self) -> str:
        """``<partition>:<offset>``."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` as text, or None."""
        return _text(header_value(self.headers, name))

    @property
    def event_id(self) -> str | None:
        """The event id (value, else header)."""
        return self.event.event_id if self.event is not None else self.header(H_EVENT_ID)

    @property
    def priority(self) -> Priority | None:
        """The SLO class (value, else header); None when unknown."""
        if self.event is not None:
            return _PRIORITY_OF.get(self.event.priority)
        name = self.header(H_CLASS)
        try:
            return Priority.parse(name) if name else None
        except ValueError:
            return None

    @property
    def company(self) -> str | None:
        """The company (value, else the record key, which is the company id)."""
        if self.event is not None:
            return self.event.company_id
        return _text(self.key) if self.key else None

    @property
    def attempt(self) -> int | None:
        """Attempts made before the record got here (value, else header)."""
        if self.event is not None:
            return self.event.attempt
        return parse_count(self.header(H_ATTEMPT))

    @property
    def last_error(self) -> str | None:
        """Why it failed (``eventgw-last-error``)."""
        return self.header(H_LAST_ERROR)

    @property
    def origin_topic(self) -> str | None:
        """The lane topic it was first read from (``eventgw-original-topic``)."""
        return self.header(H_ORIGINAL_TOPIC)

    @property
    def redriven_from(self) -> str | None:
        """For a redriven record: the DLQ record it came from (``eventgw-redriven``)."""
        return self.header(H_REDRIVEN)

    def summary(self) -> dict[str, Any]:
        """The listing fields as a JSON-ready dict (`eventgw dlq list --json`)."""
        priority = self.priority
        deadline_ms = self.event.slo_deadline_ms if self.event is not None else None
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": iso_utc(self.timestamp_ms),
            "timestamp_ms": self.timestamp_ms,
            "decodable": self.decodable,
            "event_id": self.event_id,
            "class": priority.name if priority is not None else None,
            "company": self.company,
            "attempt": self.attempt,
            "deadline": iso_utc(deadline_ms) if deadline_ms else None,
            "last_error": self.last_error,
            "origin_topic": self.origin_topic,
            "redriven_from": self.redriven_from,
        }
