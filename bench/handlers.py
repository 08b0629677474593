"""Benchmark handlers for ``eventgw processor --handler bench.handlers:<name>``.

- ``noop``: returns at once (ACK): measures the gateway's own dispatch cost.
- ``fixed_cost``: ``await asyncio.sleep(BENCH_HANDLER_COST_S)``: a handler with a known
  latency, so ``concurrency / cost`` is a known capacity per worker process.
- ``record`` / ``record_fixed_cost``: as above, and first append
  ``event_id,priority,ingested_at_ms,start_ms`` to the file ``BENCH_RECORD_PATH``
  (one file per process: ``.<pid>`` is appended), so the end-to-end latency
  ingested_at → handler start can be computed afterwards. Lines are buffered in memory and
  written every ``BENCH_RECORD_FLUSH_S`` (0.5 s) and at exit (the worker exits normally on
  SIGTERM). With ``BENCH_RECORD_FLUSH_S=0`` every line is written before the handler returns,
  so it survives a ``kill -9`` of the worker: the fault matrix (tests/faults) counts
  handler invocations this way.
- With ``BENCH_DONE_PATH`` set, ``record_fixed_cost`` also writes ``event_id`` to
  ``BENCH_DONE_PATH.<pid>`` once its sleep is over (at once, unbuffered): the handler
  *completed*. A handler cut short by ``kill -9`` has a start line and no done line.

The processor loads the module by name, so ``bench`` must be importable (``PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb

_COST_S = float(os.environ.get("BENCH_HANDLER_COST_S", "0.01"))
_FLUSH_S = float(os.environ.get("BENCH_RECORD_FLUSH_S", "0.5"))
_lines: list[str] = []
_last_flush = time.monotonic()
_path = os.environ.get("BENCH_RECORD_PATH")
_file = open(f"{_path}.{os.getpid()}", "a") if _path else None  # noqa: SIM115
_done_path = os.environ.get("BENCH_DONE_PATH")
_done_file = open(f"{_done_path}.{os.getpid()}", "a") if _done_path else None  # noqa: SIM115


def _flush() -> None:
    global _last_flush
    _last_flush = time.monotonic()
    if _file is not None and _lines:
        _file.write("".join(_lines))
        _file.flush()
        _lines.clear()


atexit.register(_flush)


def _record(event: pb.EventData) -> None:
    now_ms = time.time_ns() // 1_000_000
    _lines.append(f"{event.event_id},{event.priority},{event.ingested_at_ms},{now_ms}\n")
    if time.monotonic() - _last_flush >= _FLUSH_S:
        _flush()


async def noop(event: pb.EventData) -> None:
    """Do nothing: ACK."""


async def fixed_cost(event: pb.EventData) -> None:
    """Sleep ``BENCH_HANDLER_COST_S`` seconds (default 10 ms): ACK."""
    await asyncio.sleep(_COST_S)


async def record(event: pb.EventData) -> None:
    """Record when the handler started: ACK."""
    _record(event)


async def record_fixed_cost(event: pb.EventData) -> None:
    """Record when the handler started, sleep ``BENCH_HANDLER_COST_S``, record done: ACK."""
    _record(event)
    await asyncio.sleep(_COST_S)
    if _done_file is not None:
        _done_file.write(f"{event.event_id}\n")
        _done_file.flush()
