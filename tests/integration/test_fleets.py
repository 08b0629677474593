"""Fleets against both real test clusters: a live migration, a replica moving fleets, and
``kafka.active_cluster_fleet``.

An orchestrator fleet per Kafka cluster (config/fleets.py): replica 0 serves the primary
cluster, replica 1 — listed under ``rollout_orchestrator_indexes`` in the dynamic config —
the rollout cluster. The prep publisher routes the rollout share of companies there; one
processor pulls from both fleets. Everything is real: the publisher's gRPC API, the
orchestrators, the worker's streams, Kafka. Only the dynamic config file is edited.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from eventgw.core.errors import ConfigError
from eventgw.kafka.admin import ensure_partitions
from eventgw.orchestrator.service import OrchestratorService
from eventgw.processor import ProcessorService
from eventgw.publisher.service import PublisherService
from tests.fixtures.fleets import (
    CLASSES,
    Load,
    TwoClusters,
    fleet_settings,
    format_reports,
    routed_right,
    step_reports,
    two_clusters,
    write_dynamic,
)
from tests.fixtures.read_path import (
    Recorder,
    get_stats,
    group_assignment,
    lane_topics,
    mixed_events,
    produce,
    running,
    wait_lag_zero,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka

STEP_S = 5.0
"""Each step of the migration runs this long under load (1,000 events), and the cluster left
behind must reach lag 0 within it (it took 0.5 s in the runs so far)."""


@pytest.fixture
def clusters(
    kafka_broker: LocalBroker, kafka_broker_2: LocalBroker, tmp_path: Path
) -> Iterator[TwoClusters]:
    """Fresh topics on the primary and the rollout (secondary) test clusters."""
    yield from two_clusters(kafka_broker, kafka_broker_2, tmp_path)


async def _drained_after(clusters: TwoClusters, bootstrap: str, since: float) -> float:
    """Seconds from ``since`` until the group's committed lag on ``bootstrap`` is 0."""
    await wait_lag_zero(bootstrap, clusters.group_id, lane_topics(clusters.topics), STEP_S)
    return time.monotonic() - since


async def test_live_migration_0_50_100_0_processes_every_event_and_drains_the_old_cluster(
    clusters: TwoClusters,
) -> None:
    """Rollout 0 % → 50 % → 100 % → 0 % under steady load, by editing the dynamic config.

    Every acknowledged event is processed (duplicates counted), both clusters' committed lag
    returns to 0, each class stays inside its SLO in every step, and the cluster left behind
    drains within the step (the primary at 100 %, the rollout cluster back at 0 %).
    """
    shares = (0.0, 50.0, 100.0, 0.0)
    key = "rollout_orchestrator_indexes"
    write_dynamic(clusters.dynamic_config, {"event_gateway_cluster_rollout": 0, key: [1]})
    primary = OrchestratorService(fleet_settings(clusters, index=0))
    rollout = OrchestratorService(fleet_settings(clusters, index=1))
    assert (primary.fleet.name, rollout.fleet.name) == ("primary", "rollout")
    publisher = PublisherService(fleet_settings(clusters))
    recorder = Recorder(sleep_s=0.002)
    load = Load(publisher)
    reports_drained: dict[int, float] = {}
    async with running(primary), running(rollout), running(publisher):
        addresses = [f"127.0.0.1:{primary.grpc_port}", f"127.0.0.1:{rollout.grpc_port}"]
        processor = ProcessorService(
            fleet_settings(clusters, processor={"orchestrators": addresses, "concurrency": 16}),
            recorder,
        )
        async with running(processor):
            async with asyncio.TaskGroup() as tg:
                stop_load = asyncio.Event()
                tg.create_task(load.run(stop_load))
                watcher = publisher.parts.watcher
                for step, share in enumerate(shares):
                    drain: asyncio.Task[float] | None = None
                    if step:
                        version = watcher.version
                        write_dynamic(
                            clusters.dynamic_config,
                            {"event_gateway_cluster_rollout": share, key: [1]},
                        )
                        async with asyncio.timeout(10):
                            while watcher.version == version:
                                await watcher.wait_changed()
                        load.step = step
                        left = {100.0: clusters.primary, 0.0: clusters.rollout}.get(share)
                        if left is not None and shares[step - 1] != share:
                            drain = tg.create_task(_drained_after(clusters, left, time.monotonic()))
                    await asyncio.sleep(STEP_S)  # the step's steady load
                    if drain is not None:
                        reports_drained[step] = await drain
                stop_load.set()
            acked_ids = {a.event_id for a in load.acked}
            await recorder.wait_for(lambda: acked_ids <= set(recorder.counts), 30, "every event")
        lags = [
            await wait_lag_zero(bootstrap, clusters.group_id, lane_topics(clusters.topics), 30)
            for bootstrap in (clusters.primary, clusters.rollout)
        ]
        stats = [await get_stats(o.status_port or 0) for o in (primary, rollout)]

    reports = step_reports(shares, load.acked, recorder)
    for step, seconds in reports_drained.items():
        reports[step].drained_s = seconds
    print(f"\n[migration] {len(load.acked)} events acknowledged\n{format_reports(reports)}")
    assert load.not_published == []
    assert acked_ids <= set(recorder.counts), "every acknowledged event was processed"
    for a in load.acked:
        if a.event_id not in load.unstable:
            assert routed_right(a.company, a.cluster, load.shares[a.event_id]), a
    assert reports[0].acked["rollout"] == 0
    assert reports[1].acked["primary"] > 0
    assert reports[1].acked["rollout"] > 0
    assert reports[2].acked["rollout"] > 0
    assert set(reports_drained) == {2, 3}, "the old cluster drained within its step"
    for lag in lags:
        assert set(lag.values()) == {0}
    duplicates = sum(r.duplicates for r in reports)
    assert duplicates <= len(load.acked) // 100, f"{duplicates} duplicates"
    for r in reports:
        for cls in CLASSES:
            assert r.attainment[cls.name] >= 0.99, f"step {r.step + 1} {cls.name}: {r}"
    assert [(s["fleet"], s["index"]) for s in stats] == [("primary", 0), ("rollout", 1)]
    processed = [
        sum(ln["processed"] for ln in s["lanes"] if ln["lane"] in ("P30", "P20", "P10"))
        for s in stats
    ]
    by_cluster = {
        name: sum(1 for a in load.acked if a.cluster == name) for name in ("primary", "rollout")
    }
    # Each fleet processed what was published to its cluster (a duplicate may add one).
    assert processed[0] >= by_cluster["primary"]
    assert processed[1] >= by_cluster["rollout"]


async def test_a_replica_listed_while_serving_drains_and_moves_to_the_rollout_cluster(
    clusters: TwoClusters,
) -> None:
    """Replica 1 serves the primary; the dynamic config lists it: it drains, serves the
    rollout cluster on the same address, and replica 0 takes its primary partitions."""
    key = "rollout_orchestrator_indexes"
    write_dynamic(clusters.dynamic_config, {"event_gateway_cluster_rollout": 0, key: []})
    zero = OrchestratorService(fleet_settings(clusters, index=0))
    one = OrchestratorService(fleet_settings(clusters, index=1))
    publisher = PublisherService(fleet_settings(clusters))
    recorder = Recorder(sleep_s=0.002)
    load = Load(publisher)
    async with running(zero), running(one), running(publisher):
        address = f"127.0.0.1:{one.grpc_port}"
        addresses = [f"127.0.0.1:{zero.grpc_port}", address]
        processor = ProcessorService(
            fleet_settings(clusters, processor={"orchestrators": addresses, "concurrency": 16}),
            recorder,
        )
        async with running(processor):
            async with asyncio.TaskGroup() as tg:
                stop_load = asyncio.Event()
                tg.create_task(load.run(stop_load))
                await recorder.wait_for(lambda: recorder.distinct >= 200, 30, "200 processed")
                watcher = publisher.parts.watcher
                version = watcher.version
                write_dynamic(
                    clusters.dynamic_config, {"event_gateway_cluster_rollout": 100, key: [1]}
                )
                async with asyncio.timeout(10):
                    while watcher.version == version:
                        await watcher.wait_changed()
                load.step = 1
                # Replica 1 drains, then serves the rollout cluster: the events sent after
                # the change (all on the rollout cluster now) are processed only once it does.
                await recorder.wait_for(
                    lambda: sum(1 for a in load.acked if a.step == 1) >= 300, 30, "300 sent after"
                )
                stop_load.set()
            acked_ids = {a.event_id for a in load.acked}
            await recorder.wait_for(lambda: acked_ids <= set(recorder.counts), 40, "every event")
        for bootstrap in (clusters.primary, clusters.rollout):
            lag = await wait_lag_zero(
                bootstrap, clusters.group_id, lane_topics(clusters.topics), 30
            )
            assert set(lag.values()) == {0}
        members = await asyncio.to_thread(group_assignment, clusters.rollout, clusters.group_id)
        stats = await get_stats(one.status_port or 0)
    print(f"\n[fleet move] {len(load.acked)} acknowledged, duplicates={recorder.duplicates()}")
    assert (stats["fleet"], stats["fleet_moves"], stats["cluster"]) == (
        "rollout",
        1,
        clusters.rollout,
    )
    assert f"127.0.0.1:{one.grpc_port}" == address, "the same address after the move"
    assert set(members) == {"orchestrator-1"}
    assert {a.cluster for a in load.acked if a.step == 1} == {"rollout"}
    assert load.not_published == []
    assert acked_ids <= set(recorder.counts)
    assert recorder.duplicates() <= len(load.acked) // 100


async def test_active_cluster_fleet_rollout_serves_the_rollout_cluster_without_a_list(
    clusters: TwoClusters,
) -> None:
    """kafka.active_cluster_fleet = rollout (the end of a migration): an unlisted replica
    reads the rollout cluster; the primary's records are not its business."""
    on_rollout = mixed_events(300, "active-r")
    on_primary = mixed_events(30, "active-p")
    await asyncio.to_thread(produce, clusters.rollout, clusters.topics, on_rollout)
    await asyncio.to_thread(produce, clusters.primary, clusters.topics, on_primary)
    settings = fleet_settings(clusters, index=0, replicas=1)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"active_cluster_fleet": "rollout"})}
    )
    orchestrator = OrchestratorService(settings)
    assert (orchestrator.fleet.name, orchestrator.fleet.members) == ("rollout", (0,))
    recorder = Recorder()
    async with running(orchestrator):
        address = [f"127.0.0.1:{orchestrator.grpc_port}"]
        processor = ProcessorService(
            fleet_settings(clusters, processor={"orchestrators": address}), recorder
        )
        async with running(processor):
            await recorder.wait_for(lambda: recorder.distinct >= 300, 30, "the rollout's 300")
        lag = await wait_lag_zero(
            clusters.rollout, clusters.group_id, lane_topics(clusters.topics), 30
        )
        stats = await get_stats(orchestrator.status_port or 0)
    assert set(recorder.counts) == {e.event_id for e in on_rollout}
    assert set(lag.values()) == {0}
    assert (stats["fleet"], stats["cluster"]) == ("rollout", clusters.rollout)


async def test_the_replica_checks_hold_per_fleet(clusters: TwoClusters) -> None:
    """A rollout-fleet replica checks the rollout cluster: a response partition per replica
    index there (4 replicas; the primary has 4 partitions, the rollout cluster 2), the error
    naming that cluster; a bad index list is a configuration error at start-up."""
    key = "rollout_orchestrator_indexes"
    await asyncio.to_thread(ensure_partitions, clusters.primary, clusters.topics.response, 4)
    write_dynamic(clusters.dynamic_config, {key: [3]})
    replica = OrchestratorService(fleet_settings(clusters, index=3, replicas=4))
    assert replica.fleet.name == "rollout"
    with pytest.raises(ConfigError) as info:
        await replica.run(asyncio.Event(), asyncio.Event())
    assert info.value.field == "orchestrator.number_of_replicas"
    assert clusters.rollout in info.value.message
    assert "rollout cluster" in info.value.message
    write_dynamic(clusters.dynamic_config, {key: [4]})
    with pytest.raises(ConfigError) as info:
        OrchestratorService(fleet_settings(clusters, index=0, replicas=4))
    assert info.value.field == key
    assert "[4]" in info.value.message
