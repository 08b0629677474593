"""The event envelope: SLO classes, lanes, event ids and the Kafka header codec.

The record value on every topic is the ``EventData`` protobuf (``eventgw._proto``); the
record key is ``company_id``. Headers repeat what tools need without parsing the value.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from typing import TYPE_CHECKING, Final, Literal, cast

if TYPE_CHECKING:
    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb


class Priority(enum.IntEnum):
    """SLO class of an event; the value is the class number of SYSTEM.md section 1."""

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
LANES: Final[tuple[Lane, ...]] = ("p30", "p20", "p10", "offload")
LANE_OF_PRIORITY: Final[dict[Priority, Lane]] = {
    Priority.P30: "p30",
    Priority.P20: "p20",
    Priority.P10: "p10",
}

# Header names. Values are ASCII bytes.
H_EVENT_ID: Final = "eventgw-event-id"
H_CLASS: Final = "eventgw-class"
H_DEADLINE_MS: Final = "eventgw-deadline-ms"
H_ATTEMPT: Final = "eventgw-attempt"
H_ORIGINAL_TOPIC: Final = "eventgw-original-topic"
H_ORIGINAL_CLUSTER: Final = "eventgw-original-cluster"
H_LAST_ERROR: Final = "eventgw-last-error"
H_RETRY_AT_MS: Final = "eventgw-retry-at-ms"  # retry topics: not due before this wall-clock ms

_CLASS_BYTES: Final[dict[int, bytes]] = {p.value: p.name.encode() for p in Priority}

Headers = list[tuple[str, bytes]]


def event_headers(event: pb.EventData) -> Headers:
    """Build the standard headers of a lane record for ``event``."""
    return [
        (H_EVENT_ID, event.event_id.encode()),
        (H_CLASS, _CLASS_BYTES.get(event.priority, b"")),
        (H_DEADLINE_MS, b"%d" % event.slo_deadline_ms),
        (H_ATTEMPT, b"%d" % event.attempt),
    ]


def header_value(headers: Headers | None, name: str) -> bytes | None:
    """Return the first value of header ``name``, or None."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


class _Uuid7:
    """UUIDv7 generator (RFC 9562): 48-bit ms timestamp, then random bits.

    Monotonic within a process: ids generated in the same millisecond increase, using the
    12-bit ``rand_a`` field as a counter seeded randomly each millisecond.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        rand_b = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_event_id = _Uuid7()
"""Return a new UUIDv7 string (time-ordered, unique within and across processes)."""
