"""The scenarios of the fault matrix: what each one breaks while the load runs.

A scenario is a coroutine ``fault(run)`` that runs beside the load (tests/faults/load.py)
and returns once the stack is whole again (every part it killed restarted and ready), plus
an optional ``check(run)`` of what that scenario must show beyond "lost = 0" (e.g. that
the spool really filled). What every scenario must show — nothing acknowledged lost,
nothing stuck, nothing crashed — is checked by the test (tests/faults/test_matrix.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from tests.faults.load import LoadShape
from tests.faults.poison import check_poison, inject_poison
from tests.faults.reconfigure import check_refused_configs, write_invalid_configs

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from tests.faults.gate import TcpGate
    from tests.faults.load import ClientLoad
    from tests.faults.stack import FaultStack


@dataclass
class Run:
    """What a scenario works with: the stack, the load, the form, its random source."""

    stack: FaultStack
    load: ClientLoad
    long: bool
    rng: random.Random
    gate: TcpGate | None = None
    """The TCP gate in front of S3 (scenarios with ``backup="s3"``)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Scenario-specific figures, reported in the JSON row."""


SHORT_LOAD = LoadShape(rate_eps=200, duration_s=6)
LONG_LOAD = LoadShape(rate_eps=300, duration_s=25)
OUTAGE_LOAD = LoadShape(rate_eps=300, duration_s=40, concurrency=16)
"""While the broker is down a request takes a lane's delivery timeout (4 s) or more: more
senders keep events flowing into the failed-writes path meanwhile."""


@dataclass(frozen=True)
class Scenario:
    """One row of the matrix.

    Args:
        name: the row's name (and the test id).
        what: one line for docs/faults.md and the report.
        fault: breaks something under load; returns once everything is back.
        short: also part of the short form (the normal suite).
        load: the load of the short form; ``long_load`` of the long form.
        private_broker: the primary broker is owned by the scenario (it is killed);
            ``"long"``: only in the long form.
        fallback_cluster: the failed-writes topic is on the shared second cluster.
        backup: ``spool`` or ``s3`` (behind a TCP gate the scenario can close).
        spool_max_bytes: the spool's bound (``backup.spool_max_bytes``), None: default.
        dynamic_config: publisher and ingest watch a dynamic config file.
        handler_cost_s: how long the handler takes per event.
        concurrency: handler slots of the processor.
        check: what the scenario must show besides lost = 0.
        max_dup_pct: a bound on duplicates per acknowledged event (%), asserted.
        max_dup_in_flight_pct: a bound on duplicates per event in flight at the kill (%),
            asserted (the fault records ``in_flight_at_kill``: see ``mark_kill``).
    """

    name: str
    what: str
    fault: Callable[[Run], Awaitable[None]]
    short: bool = False
    load: LoadShape = SHORT_LOAD
    long_load: LoadShape = LONG_LOAD
    private_broker: bool | Literal["long"] = False
    fallback_cluster: bool = False
    backup: str = "spool"
    spool_max_bytes: int | None = None
    dynamic_config: bool = False
    handler_cost_s: float = 0.005
    concurrency: int = 16
    check: Callable[[Run], Awaitable[None]] | None = None
    max_dup_pct: float | None = None
    max_dup_in_flight_pct: float | None = None

    def owns_broker(self, long: bool) -> bool:
        """Whether this run gets a private primary broker."""
        return self.private_broker is True or (self.private_broker == "long" and long)


# -- single kills ---------------------------------------------------------------------------

WARMUP_ACKED = 300  # events acknowledged before a fault: the path is busy end to end
DOWN_S = 1.0  # how long a killed service stays down
SINGLE_KILL_DUPLICATES_PCT = 1.0  # issue: at most 1 % of the events in flight at the kill


def mark_kill(run: Run) -> None:
    """Note what was in flight just before a single kill.

    In flight: events handed to the gateway (``sent``) whose handler had not completed yet:
    everything between the client and a finished handler, acknowledged or not.
    """
    run.notes["in_flight_at_kill"] = run.load.sent - len(run.stack.completed())


def kill_once(name: str) -> Callable[[Run], Awaitable[None]]:
    """``kill -9`` component ``name`` once mid-load, restart it after ``DOWN_S``."""

    async def fault(run: Run) -> None:
        await run.load.wait_acked(WARMUP_ACKED)
        mark_kill(run)
        await run.stack.kill_and_restart(name, DOWN_S)

    return fault


MID_BATCH_RUNNING = 20
"""Handlers the worker must be running when it is killed (of its 64 slots)."""


async def kill_processor_mid_batch(run: Run) -> None:
    """The worker runs ~40 handlers of 200 ms each (64 slots) when it dies.

    It is killed once `MID_BATCH_RUNNING` of its handlers are running, not at a count of
    acknowledged events: on a busy machine the worker had not started one handler when the
    300th event was acknowledged, and the scenario failed for want of a batch to cut.
    """
    await run.load.wait_acked(WARMUP_ACKED)
    stack = run.stack
    pid = stack.components["processor"].pid

    def running() -> int:
        return len(set(stack.handled(pid)) - set(stack.completed(pid)))

    async with asyncio.timeout(30):
        # The record files have no change notification: read them every 20 ms.
        while running() < MID_BATCH_RUNNING:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    run.notes["killed_pid"] = pid
    mark_kill(run)
    await stack.kill_and_restart("processor", DOWN_S)


async def check_mid_batch(run: Run) -> None:
    """The kill landed mid-batch, and only work of the killed worker ran again.

    Handlers the killed worker started and never finished (``interrupted``) must run again
    (lost = 0 shows it); a duplicate of anything the killed worker had not started would be
    the orchestrator serving twice what a live worker held.
    """
    stack, pid = run.stack, run.notes["killed_pid"]
    started = set(stack.handled(pid))
    interrupted = started - set(stack.completed(pid))
    duplicated = {i for i, n in stack.handled().items() if n > 1}
    run.notes["interrupted_by_kill"] = len(interrupted)
    run.notes["duplicated_ids"] = len(duplicated)
    # Completed by the killed worker and run again: its ACKs died with it (avoidable kind).
    run.notes["completed_then_rerun"] = len(duplicated & set(stack.completed(pid)))
    assert interrupted, "no handler was running when the worker was killed: not mid-batch"
    strays = sorted(duplicated - started)
    assert not strays, f"{len(strays)} events run twice that the killed worker never started"


async def kill_failed_writes_mid_replay(run: Run) -> None:
    """Build a replay backlog (ingest down, the client captures), then kill the replayer.

    The failed-writes processor is down while ingest is down, so the client library's
    captures pile up in the failed-writes topic; it is started again and killed as soon as
    its first replays are counted, then started once more.
    """
    stack, load = run.stack, run.load
    await load.wait_acked(WARMUP_ACKED)
    await stack.kill("failed-writes")
    await stack.kill("ingest")  # not a fault of the matrix: it builds the replay backlog
    captured = 1500 if run.long else 600
    await load.wait_statuses("FAILED_WRITES", captured, timeout_s=60)
    await stack.restart("ingest")
    backlog = load.by_capturer()["client:FAILED_WRITES"]
    component = stack.components["failed-writes"]
    await component.start()
    replayed = 0.0
    async with asyncio.timeout(60):
        while replayed == 0:  # the metric has no push: read it every 20 ms
            await asyncio.sleep(0.02)
            try:
                replayed = await stack.metric(
                    "failed-writes", "eventgw_recovery_replayed_total", source="topic"
                )
            except httpx.TransportError:
                continue  # not listening yet
    mark_kill(run)
    await stack.kill("failed-writes")
    run.notes.update(backlog=backlog, replayed_at_kill=int(replayed))
    run.notes["mid_replay"] = replayed < backlog
    await asyncio.sleep(DOWN_S)
    await stack.restart("failed-writes")


# -- the broker -----------------------------------------------------------------------------


async def kill_broker(run: Run) -> None:
    """``kill -9`` the primary broker; start it again at once (a crash and a restart)."""
    await run.load.wait_acked(WARMUP_ACKED)
    mark_kill(run)
    started = time.monotonic()
    await run.stack.kill_and_restart("broker", 1.0)
    run.notes["outage_s"] = round(time.monotonic() - started, 1)


def broker_outage(status: str, count: int) -> Callable[[Run], Awaitable[None]]:
    """Keep the primary broker down until ``count`` events were answered ``status``."""

    async def fault(run: Run) -> None:
        await run.load.wait_acked(WARMUP_ACKED)
        started = time.monotonic()
        await run.stack.kill("broker")
        await run.load.wait_statuses(status, count, timeout_s=90)
        await run.stack.restart("broker")
        run.notes["outage_s"] = round(time.monotonic() - started, 1)

    return fault


async def spool_fills(run: Run) -> None:
    """Broker down, no fallback: captures fill the bounded spool until events are refused."""
    await run.load.wait_acked(WARMUP_ACKED)
    started = time.monotonic()
    await run.stack.kill("broker")
    await run.load.wait_statuses("BACKED_UP", 1, timeout_s=90)
    await run.load.wait_refused(10, timeout_s=120)
    await run.stack.restart("broker")
    run.notes["outage_s"] = round(time.monotonic() - started, 1)


async def check_spool_filled(run: Run) -> None:
    """The bound was reached: some events were spooled, later ones refused (not owed)."""
    assert run.load.by_status()["BACKED_UP"] > 0, "nothing reached the spool"
    assert run.load.refused, "the spool never filled: no event was refused"


async def s3_down(run: Run) -> None:
    """S3 unreachable: first with Kafka up (no effect), then with the broker down too.

    With every store down the events are refused; S3 comes back first (events are backed up
    there), then the broker (the failed-writes processor replays the objects).
    """
    assert run.gate is not None
    stack, load = run.stack, run.load
    await load.wait_acked(WARMUP_ACKED)
    await run.gate.close()
    acked_before = len(load.acked)
    await load.wait_acked(acked_before + 200, timeout_s=60)  # Kafka up: S3 is not needed
    await stack.kill("broker")
    await load.wait_refused(20, timeout_s=120)
    await run.gate.open()
    await load.wait_statuses("BACKED_UP", 20, timeout_s=120)
    await stack.restart("broker")


async def check_s3_down(run: Run) -> None:
    """Both halves happened: refused while every store was down, backed up once S3 was back."""
    assert run.load.refused, "no event was refused while S3 and Kafka were both down"
    assert run.load.by_status()["BACKED_UP"] > 0, "nothing was backed up in S3"


# -- records and config ---------------------------------------------------------------------


async def poison_every_topic(run: Run) -> None:
    """One hostile record (and a tombstone) in every topic an eventgw loop consumes."""
    await run.load.wait_acked(WARMUP_ACKED)
    run.notes.update(await inject_poison(run.stack))


async def check_poisoned(run: Run) -> None:
    """Poison parked in the DLQ, skipped elsewhere, valid retry records served once."""
    run.notes.update(await check_poison(run.stack, run.notes))


async def invalid_dynamic_config(run: Run) -> None:
    """Invalid dynamic configs written mid-run, as editors and bad deploys leave them."""
    await run.load.wait_acked(WARMUP_ACKED)
    run.notes["invalid_configs_written"] = await write_invalid_configs(run.stack)


async def check_config_kept(run: Run) -> None:
    """Every invalid config refused, the last good one kept, a good one applied after."""
    run.notes.update(await check_refused_configs(run.stack))


# -- chaos ----------------------------------------------------------------------------------

CHAOS_LONG_S = 45.0
CHAOS_DUPLICATES_PCT = 5.0  # issue: at most 5 % of acknowledged events in a chaos run


async def chaos(run: Run) -> None:
    """``kill -9`` of components in a random order, one after another, under load.

    Short form: every service once, in a shuffled order, each down 0.2-1 s, 0.3-1 s apart.
    Long form: for ``CHAOS_LONG_S`` seconds a random victim (the broker too), down 0.2-2 s,
    0.5-2.5 s apart. The choices come from the run's seeded random source
    (``--faults-seed``); the order is in the row's notes.
    """
    victims = ["ingest", "publisher", "failed-writes", "orchestrator", "processor"]
    await run.load.wait_acked(WARMUP_ACKED // 3)
    kills = []
    if not run.long:
        run.rng.shuffle(victims)
        for victim in victims:
            kills.append(victim)
            await run.stack.kill_and_restart(victim, run.rng.uniform(0.2, 1.0))
            await asyncio.sleep(run.rng.uniform(0.3, 1.0))
        run.notes["kill_order"] = kills
        return
    if run.stack.broker is not None:
        victims.append("broker")
    until = time.monotonic() + CHAOS_LONG_S
    while time.monotonic() < until:
        victim = run.rng.choice(victims)
        kills.append(victim)
        await run.stack.kill_and_restart(victim, run.rng.uniform(0.2, 2.0))
        await asyncio.sleep(run.rng.uniform(0.5, 2.5))
    run.notes["kill_order"] = kills


SCENARIOS = [
    Scenario(
        "ingest",
        "kill -9 ingest under load, restart after 1 s",
        kill_once("ingest"),
        max_dup_in_flight_pct=SINGLE_KILL_DUPLICATES_PCT,
    ),
    Scenario(
        "publisher",
        "kill -9 the prep publisher under load, restart after 1 s",
        kill_once("publisher"),
        max_dup_in_flight_pct=SINGLE_KILL_DUPLICATES_PCT,
    ),
    Scenario(
        "orchestrator",
        "kill -9 the orchestrator under load, restart after 1 s",
        kill_once("orchestrator"),
        short=True,
        max_dup_in_flight_pct=SINGLE_KILL_DUPLICATES_PCT,
    ),
    Scenario(
        "processor",
        "kill -9 the processor mid-batch (~40 handlers of 200 ms running), restart after 1 s",
        kill_processor_mid_batch,
        short=True,
        handler_cost_s=0.2,
        concurrency=64,
        check=check_mid_batch,
    ),
    Scenario(
        "failed-writes",
        "kill -9 the failed-writes processor mid-replay of a client-captured backlog",
        kill_failed_writes_mid_replay,
        max_dup_in_flight_pct=SINGLE_KILL_DUPLICATES_PCT,
    ),
    Scenario(
        "broker",
        "kill -9 the primary broker under load, restart it at once",
        kill_broker,
        private_broker=True,
        max_dup_in_flight_pct=SINGLE_KILL_DUPLICATES_PCT,
    ),
    Scenario(
        "broker-outage-fallback",
        "primary broker down until 300 events went to the failed-writes topic on the "
        "fallback cluster; replayed after",
        broker_outage("FAILED_WRITES", 300),
        private_broker=True,
        fallback_cluster=True,
        long_load=OUTAGE_LOAD,
    ),
    Scenario(
        "broker-outage-spool",
        "primary broker down (no fallback cluster) until 300 events went to the local spool",
        broker_outage("BACKED_UP", 300),
        private_broker=True,
        long_load=OUTAGE_LOAD,
    ),
    Scenario(
        "spool-full",
        "broker down, no fallback, spool bounded at 1 MiB (16 KiB events): spool fills, "
        "events are refused (not acknowledged), nothing acknowledged lost",
        spool_fills,
        private_broker=True,
        spool_max_bytes=1 << 20,
        long_load=LoadShape(duration_s=40, concurrency=8, payload_bytes=16 << 10),
        check=check_spool_filled,
    ),
    Scenario(
        "s3-down",
        "S3 unreachable with Kafka up, then with the broker down too (refused), S3 back "
        "(backed up), broker back (replayed)",
        s3_down,
        private_broker=True,
        backup="s3",
        long_load=LoadShape(duration_s=50, concurrency=16),
        check=check_s3_down,
    ),
    Scenario(
        "poison",
        "hostile records and tombstones in lanes, retry topics, response, flow control, "
        "failed-writes",
        poison_every_topic,
        short=True,
        check=check_poisoned,
    ),
    Scenario(
        "dynamic-config",
        "invalid dynamic configs written mid-run (empty, not UTF-8, not JSON, wrong types, "
        "1e400, nested, duplicate and unknown keys)",
        invalid_dynamic_config,
        short=True,
        dynamic_config=True,
        check=check_config_kept,
    ),
    Scenario(
        "chaos",
        "kill -9 of every service once in a random order (long: random victims, the broker "
        "too, for 45 s), restarts after 0.2-2 s",
        chaos,
        short=True,
        load=LoadShape(duration_s=14),
        long_load=LoadShape(rate_eps=300, duration_s=CHAOS_LONG_S + 10),
        private_broker="long",
        max_dup_pct=CHAOS_DUPLICATES_PCT,
    ),
]
