"""What the orchestrator already finished above a committed offset, in the commit's metadata.

Offsets are committed only up to the first unfinished task, so after a crash (or when a
partition moves to another replica) everything finished above that task would be served
again. Each commit therefore also records, in Kafka's commit metadata (committed atomically
with the offset), the runs of finished offsets above it; whoever consumes the partition next
reads them back and finishes those records at once instead of serving them again
(docs/delivery-semantics.md, "Duplicates").

Format (ASCII, at most `MAX_CHARS`): ``eg1:`` then runs as ``<gap>+<length-1>`` in hex,
comma-separated, where ``gap`` counts from the end of the previous run (from the committed
offset for the first). Runs that do not fit are left out: what they cover may be served
again — a duplicate, never a loss. Pure; `decode` never raises (the metadata is input).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MAX_CHARS", "Run", "decode", "encode"]

MAX_CHARS: Final = 3_500
"""Below the broker's ``offset.metadata.max.bytes`` (4,096 by default)."""

Run = tuple[int, int]
"""Finished offsets ``start..end`` (inclusive)."""

_PREFIX: Final = "eg1:"
_RUN: Final = re.compile(r"([0-9a-f]{1,16})\+([0-9a-f]{1,16})\Z")


def encode(committed: int, runs: Sequence[Run]) -> str:
    """The metadata for a commit at ``committed`` with ``runs`` (ascending, above it)."""
    parts: list[str] = []
    size = len(_PREFIX)
    prev = committed
    for start, end in runs:
        if start < prev or end < start:
            break  # not ascending or not above the commit: stop, never write nonsense
        part = f"{start - prev:x}+{end - start:x}"
        if size + len(part) + 1 > MAX_CHARS:
            break
        parts.append(part)
        size += len(part) + 1
        prev = end + 1
    return _PREFIX + ",".join(parts) if parts else ""


def decode(committed: int, text: str | None) -> list[Run]:
    """The runs recorded at a commit at ``committed``; [] for anything not ours or malformed."""
    if not text or len(text) > MAX_CHARS + 100 or not text.startswith(_PREFIX):
        return []
    runs: list[Run] = []
    prev = committed
    for part in text[len(_PREFIX) :].split(","):
        m = _RUN.match(part)
        if m is None:
            return []
        start = prev + int(m.group(1), 16)
        end = start + int(m.group(2), 16)
        runs.append((start, end))
        prev = end + 1
    return runs
