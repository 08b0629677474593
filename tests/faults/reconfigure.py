"""Invalid dynamic configs written while the gateway runs; the last good one must stay.

The stack starts with a gating rule that blocks source ``blocked``. Mid-run the file is
overwritten with each invalid document below (what an editor mid-save, a bad template or a
hostile writer leaves). Publisher and ingest must refuse every one (counted in
``eventgw_dynamic_config_reloads_total{result="refused"}``), keep serving, and keep the
rule: an event from ``blocked`` is still answered REJECTED. A valid config written after
them must still be applied (a new rule blocks ``blocked-too``).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from eventgw.client.ingest_client import ClientEvent, EventIngestPublisher

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults.stack import FaultStack

RELOADS = "eventgw_dynamic_config_reloads_total"


def gating(*sources: str) -> bytes:
    """A dynamic config blocking ``sources``."""
    rules = [{"action": "block", "source_name": s, "reason": "fault matrix"} for s in sources]
    return json.dumps({"gating": rules}).encode()


GOOD = gating("blocked")
"""Written before the stack starts."""

INVALID = (
    b"",  # an editor that truncates, then writes
    b'\xff\xfe{"gating": []}',  # not UTF-8
    b'{"gating": [',  # cut short
    b"[]",  # not an object
    b'{"gating": 5}',  # a value of the wrong type
    b'{"event_gateway_cluster_rollout": 1e400}',  # a number out of range
    b"[" * 50_000 + b"]" * 50_000,  # nested too deep
    b'{"gating": [], "gating": []}',  # a duplicate key
    b'{"no_such_key": 1}',  # an unknown key
    b"{" + b" " * (2 << 20) + b"}",  # over the 1 MiB cap
)


def write_config(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place (as an editor does, not an atomic rename)."""
    path.write_bytes(data)


async def write_invalid_configs(stack: FaultStack) -> int:
    """Write each invalid document and wait until both watchers refused it."""
    path = stack.dynamic_config_path
    for n, data in enumerate(INVALID, start=1):
        await asyncio.to_thread(write_config, path, data)
        for name in ("publisher", "ingest"):
            await wait_metric(stack, name, result="refused", at_least=n)
    return len(INVALID)


async def wait_metric(stack: FaultStack, name: str, *, result: str, at_least: float) -> float:
    """Wait (bounded) until ``name`` counted ``at_least`` reloads with ``result``."""
    value = 0.0
    try:
        async with asyncio.timeout(15):
            while True:  # a metric has no push: read it every 0.1 s
                value = await stack.metric(name, RELOADS, result=result)
                if value >= at_least:
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(
            f"{name}: {RELOADS}{{result={result}}} = {value} < {at_least}"
        ) from None


async def status_of(stack: FaultStack, source: str) -> str:
    """The status ingest answers for one event from ``source`` (no fallback capture)."""
    client = EventIngestPublisher(stack.ingest_grpc, timeout_s=30)
    await client.start()
    try:
        (result,) = await client.publish([ClientEvent("company-0", source, {"probe": 1})])
    finally:
        await client.close()
    return result.status


async def check_refused_configs(stack: FaultStack) -> dict[str, Any]:
    """The rule of the last good config holds; a valid config is still applied after."""
    assert await status_of(stack, "blocked") == "REJECTED", "the last good config was dropped"
    applied_before = await stack.metric("publisher", RELOADS, result="applied")
    await asyncio.to_thread(
        write_config, stack.dynamic_config_path, gating("blocked", "blocked-too")
    )
    await wait_metric(stack, "publisher", result="applied", at_least=applied_before + 1)
    assert await status_of(stack, "blocked-too") == "REJECTED", "a valid config was not applied"
    return {
        "refused_publisher": await stack.metric("publisher", RELOADS, result="refused"),
        "refused_ingest": await stack.metric("ingest", RELOADS, result="refused"),
    }
