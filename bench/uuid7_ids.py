"""UUIDv7 ids per request: uuid-utils (what eventgw uses) against the hand-written batch.

Run: ``.venv/bin/python -m bench.uuid7_ids [--runs 9] [--ids-per-run 50000]``.

Ingest asks for one id per event of a request (`eventgw.core.envelope.new_event_ids`), so the
cost that matters is per id at the request sizes clients send: 1, 100 and 500 (the client
library's batches are at most 500). Each run makes ``--ids-per-run`` ids in batches of that
size; the table gives the median per-id cost over ``--runs`` runs, the two generators
alternating run by run so that a noisy neighbour hits both alike.

The baseline, `HandWrittenUuid7`, is the generator eventgw had until 2026-12-05 (one lock and
one ``os.urandom`` call per batch, strings built from lookup tables), kept here so that the
choice can be measured again. Before timing, both generators' ids are checked for what
eventgw relies on (tests/unit/core/test_envelope.py): the canonical lower-case 8-4-4-4-12
text, version 7 and the RFC 9562 variant, the current Unix millisecond in the top 48 bits,
and strictly increasing text (= time order) across many ids, most of them sharing a
millisecond.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Final

from eventgw.core.envelope import new_event_ids

BATCH_SIZES = (1, 100, 500)
UUID7_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

Generator = Callable[[int], list[str]]


# Lookup tables of `HandWrittenUuid7.batch`: the three hex digits of each 12-bit counter value, and
# the RFC 9562 variant (``10``) forced into the top bits of a random byte.
_HEX3: Final = tuple(f"{i:03x}" for i in range(4096))
_VARIANT_BITS: Final = bytes((b & 0x3F) | 0x80 for b in range(256))


class HandWrittenUuid7:
    """The UUIDv7 generator eventgw had before uuid-utils (core/envelope.py up to 2026-12-05).

    Monotonic within a process: ids generated in the same millisecond increase, using the
    12-bit ``rand_a`` field as a counter seeded randomly each millisecond. ``__call__`` and
    `batch` share that state, so their ids interleave in order.
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

    def batch(self, n: int) -> list[str]:
        """``n`` new ids, in increasing order: the same ids as ``n`` calls, at a sixth of the cost.

        Why: one call per event cost 2.7 µs, mostly one lock and one ``getrandom`` syscall per
        id. Here the lock is taken once to reserve ``n`` consecutive (ms, counter) values,
        and one ``os.urandom`` call supplies every id's 62 random bits.
        """
        if n <= 0:
            return []
        rand = bytearray(os.urandom(8 * n + 2))
        seed = int.from_bytes(rand[-2:], "big") & 0x7FF
        del rand[-2:]
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                first = (now_ms << 12) | seed
            else:
                first = ((self._last_ms << 12) | self._counter) + 1
            # (ms << 12 | counter) counts up: a counter overflow carries into the next
            # millisecond, exactly as __call__ borrows it.
            last = first + n - 1
            self._last_ms, self._counter = last >> 12, last & 0xFFF
        rand[::8] = rand[::8].translate(_VARIANT_BITS)  # first byte of each id's rand_b
        tail = rand.hex()  # 16 hex digits (variant + rand_b) per id
        out: list[str] = []
        append = out.append
        ms = -1
        prefix = ""
        j = 0
        for value in range(first, last + 1):
            if value >> 12 != ms:  # at most a few times per batch
                ms = value >> 12
                h = f"{ms:012x}"
                prefix = f"{h[:8]}-{h[8:]}-7"
            append(f"{prefix}{_HEX3[value & 0xFFF]}-{tail[j : j + 4]}-{tail[j + 4 : j + 16]}")
            j += 16
        return out


def check_properties(batch: Generator, name: str) -> list[str]:
    """What ``batch``'s ids break of eventgw's UUIDv7 contract (empty: nothing)."""
    problems: list[str] = []
    before_ms = time.time_ns() // 1_000_000
    ids = [i for n in (1, 7, 500, 3, 4_100, 1) * 20 for i in batch(n)]
    after_ms = time.time_ns() // 1_000_000
    for text in ids:
        u = uuid.UUID(text)
        if not UUID7_TEXT.match(text) or u.version != 7 or u.variant != uuid.RFC_4122:
            problems.append(f"{text} is not canonical UUIDv7 text")
            break
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    # The hand-written generator borrows the next milliseconds past 4,096 ids in one.
    if not before_ms <= stamps[0] <= stamps[-1] <= after_ms + 50:
        problems.append(f"timestamps {stamps[0]}..{stamps[-1]} not in {before_ms}..{after_ms}")
    if not all(a < b for a, b in itertools.pairwise(ids)):
        problems.append("ids do not strictly increase")
    shared = len(ids) - len(set(stamps))
    verdict = "; ".join(problems) or "ok"
    print(f"{name}: {len(ids):,} ids in {len(set(stamps))} ms ({shared:,} share one): {verdict}")
    return problems


def per_id_ns(batch: Generator, size: int, ids_per_run: int) -> float:
    """Nanoseconds per id for one run of ``ids_per_run`` ids in batches of ``size``."""
    rounds = max(1, ids_per_run // size)
    start = time.perf_counter_ns()
    for _ in range(rounds):
        batch(size)
    return (time.perf_counter_ns() - start) / (rounds * size)


def main() -> None:
    """Check both generators, then print the median per-id cost per batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--ids-per-run", type=int, default=50_000)
    args = parser.parse_args()
    generators: dict[str, Generator] = {
        "hand-written batch": HandWrittenUuid7().batch,
        "uuid-utils (eventgw)": new_event_ids,
    }
    problems = [p for name, batch in generators.items() for p in check_properties(batch, name)]
    if problems:
        raise SystemExit(1)
    print(f"Python {platform.python_version()}, {platform.machine()}, {time.strftime('%F')}")
    print(f"{'batch':>6}  " + "  ".join(f"{name:>22}" for name in generators) + "  (ns/id, median)")
    for size in BATCH_SIZES:
        samples: dict[str, list[float]] = {name: [] for name in generators}
        for _ in range(args.runs):
            for name, batch in generators.items():
                samples[name].append(per_id_ns(batch, size, args.ids_per_run))
        cells = "  ".join(f"{statistics.median(s):>22.0f}" for s in samples.values())
        print(f"{size:>6}  {cells}")


if __name__ == "__main__":
    main()
