"""The fault matrix: every scenario under steady load, counted; lost must be 0.

Each scenario (tests/faults/scenarios.py) gets its own topics, consumer groups, spool and
processes (tests/faults/stack.py), the client library's load (tests/faults/load.py), and
then: the load ends, every part must still be running (a crash fails the scenario), every
acknowledged event must reach the handler (bounded wait), the lanes and the failed-writes
topic must be committed to their end and the backup store empty (nothing stuck). The row
(sent, acknowledged, processed, lost, duplicates) goes into the matrix printed at the end
and written as JSON (tests/fixtures/faults.py). docs/faults.md explains the matrix.

Short form (the normal suite): the scenarios marked ``short``, short loads. Long form:
``scripts/faults`` (or ``pytest tests/faults --long``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING

import pytest

from eventgw.cli.local_procs import free_port
from eventgw.kafka.admin import delete_topics
from tests.faults.gate import TcpGate
from tests.faults.load import ClientLoad
from tests.faults.matrix import ScenarioResult
from tests.faults.reconfigure import GOOD
from tests.faults.scenarios import SCENARIOS, Run, Scenario
from tests.faults.stack import FaultStack, StackOptions
from tests.fixtures.read_path import create_topics
from tests.fixtures.stack import unique_topics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.faults.matrix import Matrix

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(600)]

SETTLE_S = {"short": 60.0, "long": 180.0}
"""How long every acknowledged event may take to reach the handler once the load ended."""


def _params() -> list[object]:
    return [
        pytest.param(s, id=s.name, marks=[] if s.short else [pytest.mark.long]) for s in SCENARIOS
    ]


@contextlib.asynccontextmanager
async def s3_gate(request: pytest.FixtureRequest) -> AsyncIterator[tuple[TcpGate, dict[str, str]]]:
    """A TCP gate in front of the session's S3 server, and backup settings that use it."""
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    target = int(server.endpoint_url.rsplit(":", 1)[1])
    gate = TcpGate(target, free_port())
    await gate.open()
    try:
        yield (
            gate,
            {
                "s3_bucket": bucket,
                "s3_endpoint_url": gate.url,
                "s3_access_key_id": server.access_key_id,
                "s3_secret_access_key": server.secret_access_key,
            },
        )
    finally:
        await gate.close()


def s3_objects(request: pytest.FixtureRequest) -> list[str]:
    """Keys left in the scenario's bucket."""
    client = request.getfixturevalue("s3_server").client()
    try:
        page = client.list_objects_v2(Bucket=request.getfixturevalue("s3_bucket"))
        return [o["Key"] for o in page.get("Contents", ())]
    finally:
        client.close()


async def wait_processed(stack: FaultStack, load: ClientLoad, timeout_s: float) -> None:
    """Wait until a handler completed for every acknowledged event, at most ``timeout_s``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            # The record files have no change notification: read them every 0.5 s.
            while set(load.acked) - set(stack.completed()):  # noqa: ASYNC110
                await asyncio.sleep(0.5)


@pytest.mark.parametrize("scenario", _params())
async def test_fault(
    scenario: Scenario,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fault_matrix: Matrix,
) -> None:
    """Run ``scenario`` under load; every acknowledged event is processed (lost = 0)."""
    long = fault_matrix.form == "long"
    form = "long" if long else "short"
    started = time.monotonic()
    broker = None
    if scenario.owns_broker(long):
        broker = request.getfixturevalue("private_broker")("primary")
        primary = broker.bootstrap
    else:
        primary = request.getfixturevalue("kafka_broker").bootstrap
    fallback = None
    if scenario.fallback_cluster:
        fallback = request.getfixturevalue("kafka_broker_2").bootstrap
    topics = unique_topics()
    clusters = [primary] if fallback is None else [primary, fallback]
    for bootstrap in clusters:
        await asyncio.to_thread(create_topics, bootstrap, topics)
    shared = clusters if broker is None else clusters[1:]  # a private broker dies with the test

    async with contextlib.AsyncExitStack() as cleanup:
        backup: dict[str, str] = {}
        gate = None
        if scenario.backup == "s3":
            gate, backup = await cleanup.enter_async_context(s3_gate(request))
        if scenario.spool_max_bytes is not None:
            backup["spool_max_bytes"] = str(scenario.spool_max_bytes)
        options = StackOptions(
            fallback=fallback,
            backup=backup,
            dynamic_config=scenario.dynamic_config,
            handler_cost_s=scenario.handler_cost_s,
            concurrency=scenario.concurrency,
        )
        stack = FaultStack(primary, topics, tmp_path, options, broker=broker)
        if scenario.dynamic_config:
            stack.dynamic_config_path.write_bytes(GOOD)
        for bootstrap in shared:
            cleanup.push_async_callback(
                asyncio.to_thread, delete_topics, bootstrap, topics.all_topics()
            )
        cleanup.push_async_callback(stack.stop)
        load = ClientLoad(stack, scenario.long_load if long else scenario.load)
        run = Run(stack, load, long, random.Random(f"{fault_matrix.seed}:{scenario.name}"), gate)
        if scenario.name == "chaos":
            run.notes["seed"] = fault_matrix.seed
        try:
            await stack.start()  # inside: a stack that cannot start is a row too
            async with asyncio.TaskGroup() as tg:
                tg.create_task(load.run())
                await scenario.fault(run)
            crashed = stack.crashed()
            assert not crashed, f"components crashed: {crashed}"
            await wait_processed(stack, load, SETTLE_S[form])
            run.notes.update(await stack.wait_settled(SETTLE_S[form]))
            if scenario.backup == "s3":
                left = await asyncio.to_thread(s3_objects, request)
                assert not left, f"{len(left)} S3 backup objects never replayed"
            if scenario.check is not None:
                await scenario.check(run)
        except BaseException as exc:
            run.notes["failure"] = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            # The row is recorded whatever happened: a failed scenario shows in the matrix.
            result = ScenarioResult.count(
                scenario.name,
                sent=load.sent,
                acked=load.acked,
                refused=load.refused,
                handled=stack.handled(),
                completed=stack.completed(),
                kills=stack.killed,
                duration_s=time.monotonic() - started,
                notes=run.notes,
                max_dup_pct=scenario.max_dup_pct,
                max_dup_in_flight_pct=scenario.max_dup_in_flight_pct,
            )
            fault_matrix.add(result)
            print(f"\n[{scenario.name}] {result.as_json()}")

    assert result.lost == 0, (
        f"{result.lost} acknowledged events never processed, e.g. {result.lost_sample}"
    )
    if scenario.max_dup_pct is not None:
        assert result.dup_pct <= scenario.max_dup_pct, (
            f"{result.duplicates} duplicates = {result.dup_pct:.2f} % of "
            f"{result.acked} acknowledged (bound {scenario.max_dup_pct} %)"
        )
    if scenario.max_dup_in_flight_pct is not None:
        in_flight_pct = result.dup_pct_in_flight
        assert in_flight_pct is not None, "the fault did not note what was in flight"
        assert in_flight_pct <= scenario.max_dup_in_flight_pct, (
            f"{result.duplicates} duplicates = {in_flight_pct:.2f} % of the "
            f"{result.in_flight} events in flight at the kill "
            f"(bound {scenario.max_dup_in_flight_pct} %)"
        )
