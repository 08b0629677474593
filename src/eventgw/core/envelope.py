"""The event envelope: SLO classes, lanes, event ids and the Kafka header codec.

The record value on every topic is the ``EventData`` protobuf (``eventgw._proto``); the
record key is ``company_id``. Headers repeat what tools need without parsing the value.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final, Literal, cast

from uuid_utils import uuid7 as _uuid7

if TYPE_CHECKING:
    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb


class Priority(enum.IntEnum):
    """SLO class of an event; the value is its class number (docs/design.md, "SLO classes and
    deadlines")."""

    P10 = 10  # < 20 min: bulk / backfill
    P20 = 20  # < 1 min: ordinary events
    P30 = 30  # < 5 s: a customer is waiting

    @classmethod
    def parse(cls, text: str) -> Priority:
        """Parse ``"P30"`` / ``"p30"`` / ``"30"``; raises ValueError naming the input."""
        key = text.strip().upper().removeprefix("P")
        try:
            return cls(int(key))
        except ValueError:
            raise ValueError(f"unknown SLO class {text!r}: expected P10, P20 or P30") from None


def to_pb_priority(priority: Priority) -> pb.Priority:
    """The wire enum value of ``priority`` (``pb.Priority`` uses the same numbers)."""
    # The generated pb.Priority is not callable at runtime; its values are plain ints.
    return cast("pb.Priority", priority.value)


SLO_SECONDS: Final[dict[Priority, float]] = {
    Priority.P30: 5.0,
    Priority.P20: 60.0,
    Priority.P10: 20 * 60.0,
}

Lane = Literal["p30", "p20", "p10", "offload"]
"""A lane: a topic of its own (``topics.<lane>``) that the publisher writes events to and the
orchestrator consumes (docs/design.md, "Topics and their roles")."""
BufferLane = Literal[Lane, "retry"]
"""A lane of the orchestrator's buffer: the lanes, and ``retry`` for the retry topics, read
together. Memory shares, pauses and the per-lane counters and metrics are kept by it."""
LANES: Final[tuple[Lane, ...]] = ("p30", "p20", "p10", "offload")
BUFFER_LANES: Final[tuple[BufferLane, ...]] = (*LANES, "retry")
LANE_OF_PRIORITY: Final[dict[Priority, Lane]] = {
    Priority.P30: "p30",
    Priority.P20: "p20",
    Priority.P10: "p10",
}


def to_pb_lane(lane: BufferLane) -> pb.Lane:
    """The wire enum value of ``lane``: its position in `BUFFER_LANES` plus one (``pb.Lane``)."""
    return cast("pb.Lane", BUFFER_LANES.index(lane) + 1)


def from_pb_lane(value: int) -> BufferLane:
    """The lane of a wire ``pb.Lane`` value.

    Raises:
        ValueError: ``value`` is not a lane (0 is LANE_UNSPECIFIED; a larger number may be a
            lane of a newer writer).
    """
    if not 0 < value <= len(BUFFER_LANES):
        raise ValueError(f"unknown lane number {value}: expected 1 to {len(BUFFER_LANES)}")
    return BUFFER_LANES[value - 1]


DEFAULT_LANE_SHARES: Final[dict[BufferLane, float]] = {
    "p10": 0.2,
    "p20": 0.5,
    "p30": 0.8,
    "offload": 0.3,
    "retry": 0.7,
}
"""Share of the orchestrator's buffer budget at which each consumption lane pauses
(docs/design.md, "Memory thresholds"); the default of ``orchestrator.lane_shares``, defined
once. Copy it before changing it."""

# Header names. Values are ASCII bytes.
H_EVENT_ID: Final = "eventgw-event-id"
H_CLASS: Final = "eventgw-class"
H_DEADLINE_MS: Final = "eventgw-deadline-ms"
H_ATTEMPT: Final = "eventgw-attempt"
H_ORIGINAL_TOPIC: Final = "eventgw-original-topic"
H_ORIGINAL_CLUSTER: Final = "eventgw-original-cluster"
H_LAST_ERROR: Final = "eventgw-last-error"
H_RETRY_AT_MS: Final = "eventgw-retry-at-ms"  # retry topics: not due before this wall-clock ms
# Every record the failed-writes processor writes (lane, retry topic, DLQ): where the captured
# copy was (``<topic>:<partition>:<offset>`` in the failed-writes topic, or ``<store>:<key>``).
# On restart it reads the lanes back for it (eventgw.recovery.read_back).
H_RECOVERY_SOURCE: Final = "eventgw-recovery-source"
# `eventgw dlq redrive` wrote this lane record from a DLQ record: ``<topic>:<partition>:<offset>``
# of that DLQ record. The orchestrator carries it onto retry records and sends a redriven record
# that fails for good to the parking lot instead of the DLQ (docs/failure-handling.md).
H_REDRIVEN: Final = "eventgw-redriven"
# `eventgw replay` copied this record from ``<topic>:<partition>:<offset>`` (same retry topic).
H_REPLAYED: Final = "eventgw-replayed"

_CLASS_BYTES: Final[dict[int, bytes]] = {p.value: p.name.encode() for p in Priority}
# Headers that repeat are shared tuples (the producer only reads them).
_CLASS_HEADERS: Final[dict[int, tuple[str, bytes]]] = {
    value: (H_CLASS, name) for value, name in _CLASS_BYTES.items()
}
_NO_CLASS_HEADER: Final = (H_CLASS, b"")
_FIRST_ATTEMPT_HEADER: Final = (H_ATTEMPT, b"0")

Headers = list[tuple[str, bytes]]


def event_headers(event: pb.EventData) -> Headers:
    """Build the standard headers of a lane record for ``event``."""
    return lane_headers(event.event_id, event.priority, event.slo_deadline_ms, event.attempt)


def lane_headers(event_id: str, priority: int, slo_deadline_ms: int, attempt: int) -> Headers:
    """`event_headers` from field values a caller has already read from the event.

    Reading a protobuf field costs about 0.1 µs; the publisher reads each one once and
    builds the headers from the values.
    """
    return [(H_EVENT_ID, event_id.encode()), *class_headers(priority, slo_deadline_ms, attempt)]


def class_headers(
    priority: int, slo_deadline_ms: int, attempt: int
) -> tuple[tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]]:
    """The standard headers after the event id, in `lane_headers` order.

    The events of one class in one batch share them, so a caller building many records
    makes them once per distinct value and adds each event's id header in front.
    """
    return (
        _CLASS_HEADERS.get(priority, _NO_CLASS_HEADER),
        (H_DEADLINE_MS, b"%d" % slo_deadline_ms),
        (H_ATTEMPT, b"%d" % attempt) if attempt else _FIRST_ATTEMPT_HEADER,
    )


def header_value(headers: Headers | None, name: str) -> bytes | None:
    """Return the first value of header ``name``, or None."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


def new_event_id() -> str:
    """Return a new UUIDv7 string (RFC 9562): time-ordered, unique within and across processes.

    48-bit Unix ms timestamp, then a 42-bit counter, then 32 random bits. Monotonic within a
    process: ids increase in the order they are made, also within one millisecond (the
    counter, seeded randomly each millisecond), when the clock steps back (the last
    millisecond is kept) and when the counter runs out (the next one is borrowed). This is
    the Rust ``uuid`` crate's ``Uuid::now_v7``, one process-wide context behind a mutex,
    through uuid-utils (which reseeds its random generator in a forked child);
    `new_event_ids` shares that context, so their ids interleave in order.
    """
    return str(_uuid7())


def new_event_ids(n: int) -> list[str]:
    """Return ``n`` new UUIDv7 strings, in increasing order (as ``n`` `new_event_id` calls).

    Ingest calls it once per request. Measured 2026-12-05 with ``python -m bench.uuid7_ids``
    (Python 3.11.7, x86_64, 2 shared cores), median ns per id at 1 / 100 / 500 ids per call:
    uuid-utils 485 / 170 / 172; the hand-written batch it replaced (one lock and one
    ``os.urandom`` per call, strings built from lookup tables) 2,340 / 252 / 244.
    """
    uuid7 = _uuid7
    return [str(uuid7()) for _ in range(n)]
