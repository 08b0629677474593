"""Options shared by ``eventgw dlq`` and ``eventgw replay``: the selection and the rate.

Values are parsed here, after argparse, by the pure ``eventgw.dlq.selection`` parsers, so a
bad value ends the command with exit code 2 and one line naming the option (argparse's own
errors print the usage first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventgw.core.errors import ConfigError
from eventgw.dlq.selection import (
    Selection,
    parse_classes,
    parse_coordinates,
    parse_instant,
    parse_offset_range,
    parse_positive_int,
    parse_rate,
)

if TYPE_CHECKING:
    import argparse

    from eventgw.dlq.selection import Coordinate, OffsetRange

DEFAULT_RATE = "100"
"""Events per second a redrive or replay writes by default: gentle on the processors."""

MAX_BATCH = 500
"""Records written per batch at most (a batch is the most a crash can duplicate)."""


class UsageError(ConfigError):
    """A bad option value: the CLI prints ``<option>: <message>`` and exits 2.

    Attributes:
        option: the option, e.g. ``--class`` (also ``field``, as in every `ConfigError`).
        message: what is wrong with its value.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(option, message)
        self.option = option


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """``--company --class --error --since --until --limit`` (parsed by `selection_from`)."""
    parser.add_argument(
        "--company", action="append", default=[], help="company id (repeat for several)"
    )
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="CLASS",
        help="SLO class P30, P20 or P10 (repeat or comma-separate for several)",
    )
    parser.add_argument("--error", help="last error contains this text (case-insensitive)")
    parser.add_argument(
        "--since",
        help="written at or after: ISO-8601 (UTC if no zone) or relative, e.g. 1h, 2d (ago)",
    )
    parser.add_argument("--until", help="written at or before (same formats as --since)")
    parser.add_argument("--limit", help="take at most this many matching records")


def add_rate_options(parser: argparse.ArgumentParser) -> None:
    """``--rate`` and ``--dry-run``."""
    parser.add_argument(
        "--rate", default=DEFAULT_RATE, help=f"events per second at most (default {DEFAULT_RATE})"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be written; write nothing"
    )


def selection_from(args: argparse.Namespace, now_ms: int) -> Selection:
    """The `Selection` of the parsed options (``--records`` / ``--offsets`` when present).

    Raises:
        UsageError: a value is malformed, naming its option.
    """
    try:
        classes = parse_classes(args.classes)
    except ValueError as exc:
        raise UsageError("--class", str(exc)) from None
    since_ms = _instant("--since", args.since, now_ms)
    until_ms = _instant("--until", args.until, now_ms)
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise UsageError(
            "--since/--until", f"the range is empty: {args.since!r} is after {args.until!r}"
        )
    limit = None
    if args.limit is not None:
        try:
            limit = parse_positive_int(args.limit)
        except ValueError as exc:
            raise UsageError("--limit", str(exc)) from None
    coordinates: frozenset[Coordinate] = frozenset()
    if getattr(args, "records", None):
        try:
            coordinates = parse_coordinates(args.records)
        except ValueError as exc:
            raise UsageError("--records", str(exc)) from None
    ranges: tuple[OffsetRange, ...] = ()
    if getattr(args, "offsets", None):
        try:
            ranges = tuple(parse_offset_range(text) for text in args.offsets)
        except ValueError as exc:
            raise UsageError("--offsets", str(exc)) from None
    return Selection(
        companies=frozenset(args.company),
        classes=classes,
        error_contains=args.error or None,
        since_ms=since_ms,
        until_ms=until_ms,
        coordinates=coordinates,
        offset_ranges=ranges,
        limit=limit,
    )


def _instant(option: str, text: str | None, now_ms: int) -> int | None:
    if text is None:
        return None
    try:
        return parse_instant(text, now_ms)
    except ValueError as exc:
        raise UsageError(option, str(exc)) from None


def rate_from(args: argparse.Namespace) -> float:
    """The ``--rate`` value.

    Raises:
        UsageError: not a number > 0.
    """
    try:
        return parse_rate(args.rate)
    except ValueError as exc:
        raise UsageError("--rate", str(exc)) from None


def batch_size(rate_per_s: float) -> int:
    """Records per batch: about one batch a second, between 1 and `MAX_BATCH`."""
    return max(1, min(MAX_BATCH, int(rate_per_s)))
