"""The StatsD side of a registry: which series are sent, under which key, in which lines.

Pure functions (no I/O) used by `eventgw.metrics.statsd.StatsdExporter`. Each key is
``<root>.<name>[.<label values in declaration order>]``, in the plain StatsD line format
(no tags):

- counter ``eventgw_x_total{status="ok"}``: ``<root>.eventgw_x_total.ok:<delta>|c``, the
  increase since the previous flush (the first flush sends the whole value; zero deltas
  are not sent; a counter that went down is taken as reset and sent whole);
- gauge: ``<root>.<name>[.<labels>]:<value>|g``, every flush (a negative value is sent as
  ``:0|g`` then ``:-v|g`` in one datagram, since a bare ``-v|g`` means "decrement");
- histogram ``h``: only ``<root>.h.count[.<labels>]`` and ``<root>.h.sum[.<labels>]``, as
  counters (deltas); the buckets are not sent. Summaries are sent the same way.

Characters outside ``[A-Za-z0-9_-]`` in names and label values become ``_`` (dots in the
root are kept as separators). Lines are packed into datagrams of at most
`MAX_DATAGRAM_BYTES` (1432: a 1500-byte MTU less IP and UDP headers), joined by ``\\n``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from prometheus_client.metrics_core import Metric

MAX_DATAGRAM_BYTES = 1432
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Label names that split one series into buckets or quantiles: not sent.
_SERIES_LABELS_SKIPPED = frozenset({"le", "quantile"})


class StatKind(Enum):
    """How StatsD aggregates a line; the value is the line's type suffix."""

    COUNTER = "c"  # the value is a cumulative total; the line carries its delta
    GAUGE = "g"  # the value is sent as it is


@dataclass(frozen=True, slots=True)
class Reading:
    """One series read from the registry: its key (sanitized, without root), kind and value."""

    key: str
    kind: StatKind
    value: float


def sanitize(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_-]`` replaced by ``_``; never empty."""
    return _UNSAFE.sub("_", text) or "_"


def root_prefix(root: str) -> str:
    """``root`` as a key prefix: each dot-separated part sanitized, with a trailing dot.

    An empty root gives no prefix.
    """
    parts = [sanitize(p) for p in root.split(".") if p]
    return "".join(f"{p}." for p in parts)


def read_registry(families: Iterable[Metric]) -> list[Reading]:
    """The series StatsD gets from ``families`` (``registry.collect()``), in registry order.

    Counters give their ``_total`` sample, gauges their value, histograms and summaries
    their ``_count`` and ``_sum`` (as ``<name>.count`` / ``<name>.sum``). ``_created``
    samples, buckets, quantiles, non-finite values and other metric types are skipped.
    """
    readings: list[Reading] = []
    for family in families:
        for sample in family.samples:
            if not math.isfinite(sample.value):
                continue
            if family.type == "counter" and sample.name.endswith("_total"):
                name, kind = sample.name, StatKind.COUNTER
            elif family.type == "gauge":
                name, kind = sample.name, StatKind.GAUGE
            elif family.type in ("histogram", "summary") and sample.name in (
                f"{family.name}_count",
                f"{family.name}_sum",
            ):
                suffix = sample.name.removeprefix(f"{family.name}_")
                name, kind = f"{family.name}.{suffix}", StatKind.COUNTER
            else:
                continue
            labels = "".join(
                f".{sanitize(v)}"
                for k, v in sample.labels.items()
                if k not in _SERIES_LABELS_SKIPPED
            )
            key = ".".join(sanitize(part) for part in name.split(".")) + labels
            readings.append(Reading(key, kind, sample.value))
    return readings


def format_number(value: float) -> str:
    """``value`` in plain decimal (no exponent) with at most 6 decimals; ``-0`` is ``0``."""
    value = float(value)
    text = str(int(value)) if value.is_integer() else f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def render_lines(
    prefix: str, readings: Iterable[Reading], sent: Mapping[str, float]
) -> tuple[list[str], dict[str, float]]:
    """The StatsD lines of one flush, and the counter totals the receiver has after it.

    Args:
        prefix: from `root_prefix`.
        readings: from `read_registry`.
        sent: per counter key, the total already sent (the previous flush's second result).

    Returns:
        The lines (a negative gauge is one entry of two lines joined by ``\\n``, which must
        stay in one datagram), and the new ``sent`` map. Totals advance by the number as
        written, so rounding to 6 decimals never accumulates: the remainder goes out later.
        Series that are gone are dropped from the map.
    """
    lines: list[str] = []
    new_sent: dict[str, float] = {}
    for r in readings:
        key = prefix + r.key
        if r.kind is StatKind.GAUGE:
            value = format_number(r.value)
            lines.append(f"{key}:0|g\n{key}:{value}|g" if r.value < 0 else f"{key}:{value}|g")
            continue
        base = sent.get(r.key, 0.0)
        if r.value < base and format_number(r.value - base) != "0":
            base = 0.0  # went down: the series was reset (e.g. removed and re-created)
        delta = format_number(r.value - base)
        if delta != "0":
            lines.append(f"{key}:{delta}|c")
            base += float(delta)
        new_sent[r.key] = base
    return lines, new_sent


def pack_datagrams(entries: Iterable[str], max_bytes: int = MAX_DATAGRAM_BYTES) -> list[bytes]:
    """Join ASCII ``entries`` with ``\\n`` into as few datagrams of at most ``max_bytes`` as
    packing in order allows; an entry is never split.

    Raises:
        ValueError: an entry alone is longer than ``max_bytes``.
    """
    datagrams: list[bytes] = []
    current: list[str] = []
    size = 0
    for entry in entries:
        if len(entry) > max_bytes:
            raise ValueError(f"StatsD entry of {len(entry)} bytes exceeds {max_bytes}")
        if current and size + 1 + len(entry) > max_bytes:
            datagrams.append("\n".join(current).encode("ascii"))
            current, size = [], 0
        size += len(entry) + (1 if current else 0)
        current.append(entry)
    if current:
        datagrams.append("\n".join(current).encode("ascii"))
    return datagrams
