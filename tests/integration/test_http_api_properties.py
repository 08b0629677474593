"""Property-based test of the HTTP API against its own OpenAPI document (schemathesis).

A real write path (publisher + ingest on the test broker) serves ``GET /openapi.json``;
schemathesis (its CLI, in a subprocess, so the in-process stack keeps its event loop) reads
that document and generates requests from it against the running ingest: boundary values
(coverage phase), random and schema-violating bodies (fuzzing), sequences (stateful). Every
check is on: no 5xx, status codes, content types, headers and bodies as documented,
schema-valid requests accepted and schema-invalid ones refused, 405 with ``Allow`` for an
undocumented method, and — in the run with an API key — 401 without it. Runs are bounded
(examples per operation, a deadline) and seeded, so a failure reproduces; each report and
the full output land in the test's tmp dir (printed). What it found is fixed with a unit
test each (tests/unit/ingest/test_http_routes.py).
"""

from __future__ import annotations

import asyncio
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fixtures.stack import StackFactory

pytestmark = pytest.mark.kafka

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
DEADLINE_S = 240  # a whole run; about 30 s here
API_KEY = "schemathesis-key-0123456789"
# Every operation but GET /openapi.json, which schemathesis reads the document from.
OPERATIONS = {
    "POST /v1/events",
    "GET /healthz",
    "GET /readyz",
    "GET /status",
    "GET /metrics",
    "GET /",
}


async def run_schemathesis(base_url: str, reports: Path, *options: str) -> set[str]:
    """Run schemathesis against ``base_url``; assert it passed; the operations it tested."""
    argv = [
        str(SCHEMATHESIS),
        "run",
        f"{base_url}/openapi.json",
        "--checks=all",
        "--max-response-time=10",
        "--seed=20261204",  # a failure reproduces: same seed, same cases
        "--workers=1",
        "--request-timeout=20",
        "--report=junit",
        f"--report-dir={reports}",
        f"--report-junit-path={reports / 'junit.xml'}",
        "--no-color",
        *options,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=reports.parent,  # no schemathesis.toml of anyone else's applies
    )
    try:
        async with asyncio.timeout(DEADLINE_S):
            out_bytes, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = out_bytes.decode(errors="replace")
    await asyncio.to_thread(_save, reports / "output.txt", out)
    print(f"\n[schemathesis] {out.strip().splitlines()[-1]} report: {reports}")
    assert proc.returncode == 0, out[-20_000:]
    cases = ET.parse(reports / "junit.xml").getroot().iter("testcase")
    return {case.get("name", "") for case in cases}


def _save(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_the_running_api_keeps_to_its_openapi_document(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    """Every operation, 200 examples each per phase (about 1,500 requests)."""
    stack = await write_stack(ingest={"max_events_per_request": 20})
    tested = await run_schemathesis(stack.http_url, tmp_path / "schemathesis", "--max-examples=200")
    assert tested >= OPERATIONS, f"not tested: {OPERATIONS - tested}"


async def test_with_api_keys_the_document_states_the_auth_ingest_asks(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    """POST /v1/events with a key; schemathesis also sends it without one (expects 401)."""
    stack = await write_stack(ingest={"api_keys": [API_KEY]})
    tested = await run_schemathesis(
        stack.http_url,
        tmp_path / "schemathesis",
        "--max-examples=50",
        "--include-path=/v1/events",
        f"--header=Authorization: Bearer {API_KEY}",
    )
    assert "POST /v1/events" in tested
