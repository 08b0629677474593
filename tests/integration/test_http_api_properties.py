"""Property-based test of the HTTP API against its own OpenAPI document (schemathesis).

A real write path (publisher + ingest on the test broker) serves ``GET /openapi.json``;
schemathesis reads that document and generates requests from it — examples, boundary
values, schema-violating (negative) bodies and random ones — against the running ingest.
Every check is on: no 5xx, status codes, content types, headers and bodies as documented,
schema-valid requests accepted and schema-invalid ones refused, 405 with ``Allow`` for an
undocumented method. The run is bounded (examples per operation, a time budget, a fixed
seed so a failure reproduces); its JUnit report and output land in the test's tmp dir.
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
MAX_EXAMPLES = 150  # per operation and phase; POST /v1/events gets most of the run
TIME_BUDGET_S = 150
DOCUMENTED = {
    "POST /v1/events",
    "GET /healthz",
    "GET /readyz",
    "GET /status",
    "GET /metrics",
    "GET /openapi.json",
    "GET /",
}


async def test_the_running_api_keeps_to_its_openapi_document(
    write_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await write_stack(ingest={"max_events_per_request": 20})
    reports = tmp_path / "schemathesis"
    argv = [
        str(SCHEMATHESIS),
        "run",
        f"{stack.http_url}/openapi.json",
        "--checks=all",
        f"--max-examples={MAX_EXAMPLES}",
        f"--max-time={TIME_BUDGET_S}",
        "--seed=20261204",
        "--workers=1",
        "--request-timeout=20",
        "--report=junit",
        f"--report-dir={reports}",
        "--no-color",
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # no schemathesis.toml of anyone else's applies
    )
    try:
        async with asyncio.timeout(TIME_BUDGET_S + 60):
            out_bytes, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = out_bytes.decode(errors="replace")
    (reports / "output.txt").write_text(out)
    print(f"schemathesis report: {reports}")
    assert proc.returncode == 0, out[-20_000:]

    cases = ET.parse(reports / "junit.xml").getroot().iter("testcase")
    tested = {case.get("name", "") for case in cases}
    assert tested >= DOCUMENTED, f"operations schemathesis did not test: {DOCUMENTED - tested}"
