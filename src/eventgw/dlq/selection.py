"""What an operator picks from a DLQ or retry topic: filters, time range, coordinates. Pure.

Every ``parse_*`` function turns one command-line value into a typed value or raises a
``ValueError`` whose text says what was expected; the CLI names the option in front of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from eventgw.core.envelope import Priority

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from eventgw.dlq.record import DlqRecord

_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION: Final = re.compile(r"(?:\d+[smhdw])+")
_DURATION_PART: Final = re.compile(r"(\d+)([smhdw])")


@dataclass(frozen=True, slots=True, order=True)
class Coordinate:
    """One record of a topic: ``<partition>:<offset>``."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets ``first`` to ``last`` (both included) of one partition; ``last`` None: to the end."""

    partition: int
    first: int
    last: int | None

    def __str__(self) -> str:
        return f"{self.partition}:{self.first}-{'' if self.last is None else self.last}"


def parse_duration_s(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"``, ``"1w"`` (or bare seconds) → seconds."""
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration: expected e.g. 90s, 15m, 1h30m, 2d")
    return sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(value))


def parse_instant(text: str, now_ms: int) -> int:
    """An instant as Unix ms: ISO-8601 (no zone = UTC), ``now``, or a relative ``1h`` (ago)."""
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    if value and value[0].isdigit() and _DURATION.fullmatch(value.lower()):
        return now_ms - parse_duration_s(value) * 1000
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: expected ISO-8601 (2025-01-31T12:00:00Z) "
            "or a relative time like 30m, 1h, 2d (ago)"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)  # operators type UTC; the table prints UTC
    return int(instant.timestamp() * 1000)


def parse_time_range(
    since: str | None, until: str | None, now_ms: int
) -> tuple[int | None, int | None]:
    """``(since_ms, until_ms)`` from the two options; raises ValueError if since > until."""
    since_ms = parse_instant(since, now_ms) if since is not None else None
    until_ms = parse_instant(until, now_ms) if until is not None else None
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise ValueError(f"the range is empty: since {since!r} is after until {until!r}")
    return since_ms, until_ms


def parse_coordinate(text: str) -> Coordinate:
    """``"2:1500"`` → ``Coordinate(2, 1500)``."""
    partition, sep, offset = text.strip().partition(":")
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise ValueError(f"{text!r} is not <partition>:<offset> (e.g. 2:1500)")
    return Coordinate(int(partition), int(offset))


def parse_coordinates(texts: Iterable[str]) -> frozenset[Coordinate]:
    """Coordinates from repeated and/or comma-separated values (``"0:5,1:7"``)."""
    return frozenset(
        parse_coordinate(part) for text in texts for part in text.split(",") if part.strip()
    )


def parse_offset_range(text: str) -> OffsetRange:
    """``"0:100-200"`` (both included), ``"0:100-"`` (to the end) or ``"0:100"`` (one)."""
    partition, sep, span = text.strip().partition(":")
    first, dash, last = span.partition("-")
    ok = sep and partition.isdigit() and first.isdigit() and (last.isdigit() or last == "")
    if not ok:
        raise ValueError(
            f"{text!r} is not <partition>:<first>-<last> (e.g. 0:100-200, or 0:100- to the end)"
        )
    if not dash:
        return OffsetRange(int(partition), int(first), int(first))
    if last and int(last) < int(first):
        raise ValueError(f"{text!r}: last offset {last} is before first offset {first}")
    return OffsetRange(int(partition), int(first), int(last) if last else None)


def parse_classes(texts: Iterable[str]) -> frozenset[Priority]:
    """SLO classes from repeated and/or comma-separated values (``P30``, ``p20``, ``10``)."""
    return frozenset(
        Priority.parse(part) for text in texts for part in text.split(",") if part.strip()
    )


def parse_positive_int(text: str) -> int:
    """A whole number >= 1."""
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{text!r} is not a whole number >= 1")
    return int(value)


def parse_rate(text: str) -> float:
    """Events per second, > 0 (``"50"``, ``"0.5"``)."""
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of events per second") from None
    if not rate > 0 or rate == float("inf"):
        raise ValueError(f"{text!r}: the rate must be a number of events per second > 0")
    return rate


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records a command acts on. Empty filters match everything.

    Filters combine with AND; the values of one filter with OR. ``since_ms``/``until_ms``
    compare the Kafka timestamp of the record (when it was written to this topic), both
    included. ``coordinates`` and ``offset_ranges``, when given, restrict the records to
    those. ``limit`` caps how many matching records are taken, in partition then offset
    order.
    """

    companies: frozenset[str] = frozenset()
    classes: frozenset[Priority] = frozenset()
    error_contains: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    coordinates: frozenset[Coordinate] = frozenset()
    offset_ranges: tuple[OffsetRange, ...] = ()
    limit: int | None = None
    _error_folded: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and since > until:
            raise ValueError(f"since_ms {self.since_ms} is after until_ms {self.until_ms}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        object.__setattr__(self, "_error_folded", (self.error_contains or "").casefold())

    @property
    def is_everything(self) -> bool:
        """True when no filter narrows the selection (only ``limit``, if anything)."""
        return not (
            self.companies
            or self.classes
            or self.error_contains
            or self.since_ms is not None
            or self.until_ms is not None
            or self.coordinates
            or self.offset_ranges
        )

    def matches(self, record: DlqRecord) -> bool:
        """True when ``record`` passes every filter (not ``limit``: the reader counts)."""
        if self.coordinates and Coordinate(record.partition, record.offset) not in self.coordinates:
            return False
        if self.offset_ranges and not any(
            r.partition == record.partition
            and r.first <= record.offset
            and (r.last is None or record.offset <= r.last)
            for r in self.offset_ranges
        ):
            return False
        if self.since_ms is not None and record.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and record.timestamp_ms > self.until_ms:
            return False
        if self.companies and record.company not in self.companies:
            return False
        if self.classes and record.priority not in self.classes:
            return False
        return not self._error_folded or self._error_folded in (record.last_error or "").casefold()

    def partition_ranges(
        self,
        watermarks: Mapping[int, tuple[int, int]],
        since_offsets: Mapping[int, int] | None = None,
    ) -> dict[int, tuple[int, int]]:
        """The ``[start, end)`` offsets to scan per partition; empty ranges are left out.

        Args:
            watermarks: ``{partition: (low, high)}`` when the scan starts; nothing at or
                past ``high`` is read, so a scan always ends.
            since_offsets: per partition, the first offset at or after ``since_ms`` (from
                Kafka's time index), where the scan may start.
        """
        out: dict[int, tuple[int, int]] = {}
        for partition, (low, high) in sorted(watermarks.items()):
            start, end = low, high
            if since_offsets is not None and partition in since_offsets:
                start = max(start, since_offsets[partition])
            if self.coordinates:
                offsets = [c.offset for c in self.coordinates if c.partition == partition]
                if not offsets:
                    continue
                start, end = max(start, min(offsets)), min(end, max(offsets) + 1)
            if self.offset_ranges:
                spans = [r for r in self.offset_ranges if r.partition == partition]
                if not spans:
                    continue
                start = max(start, min(r.first for r in spans))
                lasts = [r.last for r in spans]
                if None not in lasts:
                    end = min(end, max(last for last in lasts if last is not None) + 1)
            if start < end:
                out[partition] = (start, end)
        return out
