"""Scale-out on one machine: two orchestrators per Kafka cluster, three processors, kill -9.

Four replicas (``number_of_replicas = 4``): 0 and 1 serve the primary cluster, 2 and 3 —
listed in the dynamic config — the rollout (secondary) test cluster. Three processors pull
from all four. The publisher routes half the companies to each cluster. Replica 3 runs as an
``eventgw orchestrator`` process and is killed with SIGKILL under load: its partitions move
to replica 2 (the session timeout, then a rebalance), nothing acknowledged is lost, and the
duplicates are counted (crash-dedupe: docs/delivery-semantics.md, "Duplicates").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING

import pytest

from eventgw.orchestrator.service import OrchestratorService
from eventgw.processor import ProcessorService
from eventgw.publisher.service import PublisherService
from tests.fixtures.fleets import Load, TwoClusters, fleet_settings, two_clusters, write_dynamic
from tests.fixtures.procs import Component, wait_http_ready
from tests.fixtures.read_path import (
    Recorder,
    group_assignment,
    lane_topics,
    orchestrator_env,
    running,
    subprocess_orchestrator,
    wait_lag_zero,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka

KILLED_SESSION_MS = 6_000
"""Replica 3's consumer session: how long after the kill the group drops it."""
AFTER_TAKEOVER_S = 2.0
"""The load goes on this long once replica 2 holds replica 3's partitions."""


@pytest.fixture
def clusters(
    kafka_broker: LocalBroker, kafka_broker_2: LocalBroker, tmp_path: Path
) -> Iterator[TwoClusters]:
    """Fresh topics on the primary and the rollout (secondary) test clusters."""
    yield from two_clusters(kafka_broker, kafka_broker_2, tmp_path, replicas=4)


@contextlib.asynccontextmanager
async def all_running(*services: OrchestratorService | ProcessorService) -> AsyncIterator[None]:
    """`running` for several services, started in order and stopped in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        for service in services:
            await stack.enter_async_context(running(service))
        yield


async def wait_members(bootstrap: str, group_id: str, expected: set[str]) -> None:
    """Wait until ``expected`` are the group's members and each holds partitions."""
    async with asyncio.timeout(40):
        while True:
            members = await asyncio.to_thread(group_assignment, bootstrap, group_id)
            if set(members) == expected and all(members.values()):
                return
            await asyncio.sleep(0.3)


async def test_two_orchestrators_per_cluster_three_processors_one_killed(
    clusters: TwoClusters, tmp_path: Path
) -> None:
    """kill -9 of replica 3 under load: replica 2 takes its partitions, every acknowledged
    event is processed, both clusters' lag returns to 0, duplicates stay under 1 %."""
    write_dynamic(
        clusters.dynamic_config,
        {"event_gateway_cluster_rollout": 50, "rollout_orchestrator_indexes": [2, 3]},
    )
    settings = fleet_settings(clusters, replicas=4, orchestrator={"commit_interval_s": 0.5})
    in_process = [
        OrchestratorService(fleet_settings(clusters, index=i, replicas=4)) for i in range(3)
    ]
    assert [o.fleet.name for o in in_process] == ["primary", "primary", "rollout"]
    killed = subprocess_orchestrator(settings, index=3, replicas=4)
    env = orchestrator_env(clusters.primary, clusters.topics, killed)
    env["EVENTGW_KAFKA__ROLLOUT__BOOTSTRAP_SERVERS"] = clusters.rollout
    # The broker's least session (group.min.session.timeout.ms), not eventgw's 10 s: the
    # group notices the dead replica 4 s sooner; what happens then is the same.
    env["EVENTGW_KAFKA__ROLLOUT__CLIENT_OVERRIDES"] = json.dumps(
        {"session.timeout.ms": str(KILLED_SESSION_MS)}
    )
    env["EVENTGW_ORCHESTRATOR__DYNAMIC_CONFIG_PATH"] = str(clusters.dynamic_config)
    replica3 = Component("orchestrator", env, tmp_path)
    await replica3.start()
    try:
        await wait_http_ready(f"http://127.0.0.1:{killed.metrics_port}/readyz", replica3)
        publisher = PublisherService(fleet_settings(clusters))
        recorder = Recorder(sleep_s=0.005)
        load = Load(publisher)
        async with all_running(*in_process), running(publisher):
            addresses = [f"127.0.0.1:{o.grpc_port}" for o in in_process]
            addresses.append(f"127.0.0.1:{killed.grpc_port}")
            processors = [
                ProcessorService(
                    fleet_settings(
                        clusters, processor={"orchestrators": addresses, "concurrency": 8}
                    ),
                    recorder,
                    worker_id=f"worker-{n}",
                )
                for n in range(3)
            ]
            group = clusters.group_id
            await wait_members(clusters.primary, group, {"orchestrator-0", "orchestrator-1"})
            await wait_members(clusters.rollout, group, {"orchestrator-2", "orchestrator-3"})
            async with all_running(*processors):
                async with asyncio.TaskGroup() as tg:
                    stop_load = asyncio.Event()
                    tg.create_task(load.run(stop_load))
                    await recorder.wait_for(lambda: recorder.distinct >= 1000, 60, "1000 done")
                    await replica3.kill9()
                    killed_at = time.monotonic()
                    at_kill = recorder.distinct
                    # Load goes on past the session timeout: replica 3's partitions take new
                    # events while nobody reads them, until replica 2 does, and on after.
                    await wait_members(clusters.rollout, group, {"orchestrator-2"})
                    took_over_s = time.monotonic() - killed_at
                    await asyncio.sleep(AFTER_TAKEOVER_S)  # steady load on the survivor
                    stop_load.set()
                acked = {a.event_id for a in load.acked}
                await recorder.wait_for(lambda: acked <= set(recorder.counts), 60, "every event")
                all_done_s = time.monotonic() - killed_at
            lags = [
                await wait_lag_zero(bootstrap, group, lane_topics(clusters.topics), 30)
                for bootstrap in (clusters.primary, clusters.rollout)
            ]
            rollout_members = await asyncio.to_thread(group_assignment, clusters.rollout, group)
            primary_members = await asyncio.to_thread(group_assignment, clusters.primary, group)
    finally:
        await replica3.stop()

    n = len(load.acked)
    duplicates = recorder.duplicates()
    on_rollout = sum(1 for a in load.acked if a.cluster == "rollout")
    print(
        f"\n[scale-out kill -9] {n} acknowledged ({on_rollout} on the rollout cluster), "
        f"{at_kill} processed at the kill; replica 2 took over {took_over_s:.1f}s after it, "
        f"all processed {all_done_s:.1f}s after it; "
        f"duplicates={duplicates}; per worker: "
        f"{[p.tasks_handled for p in processors]}"
    )
    assert load.not_published == []
    assert acked <= set(recorder.counts), "nothing acknowledged is lost"
    assert 0 < on_rollout < n
    for lag in lags:
        assert set(lag.values()) == {0}
    every_lane = {(t, p) for t in lane_topics(clusters.topics) for p in range(3)}
    assert rollout_members == {"orchestrator-2": every_lane}, "the survivor took them all"
    assert set(primary_members) == {"orchestrator-0", "orchestrator-1"}
    assert all(p.tasks_handled > 0 for p in processors), "every processor took work"
    assert duplicates <= n // 100, f"{duplicates} duplicates of {n}"
