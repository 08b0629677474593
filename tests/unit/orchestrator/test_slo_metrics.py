"""SLO attainment, latency and the orchestrator's snapshot families, through the dispatcher.

The dispatcher is driven as the ``Work`` streams drive it (records in, credit, results) on a
fake clock; what it exposes is read back from the rendered Prometheus text, as a scrape
would see it, and from ``Stats``.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import SLO_SECONDS, Lane, Priority, event_headers
from eventgw.kafka.consumer import ConsumedRecord
from eventgw.orchestrator.collector import OrchestratorCollector
from tests.unit.orchestrator.test_dispatcher import TOPICS, Fixture, result, sent_tasks


def scrape(f: Fixture) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(f.metrics.render().decode()):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(
    got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return got[name, frozenset(labels.items())]


def record(
    f: Fixture, priority: Priority, offset: int, *, age_s: float, lane: Lane, offloaded: bool
) -> ConsumedRecord:
    ingested = f.clock.wall_ms() - int(age_s * 1000)
    event = pb.EventData(
        event_id=f"e{offset}",
        company_id="acme",
        priority=priority.value,  # type: ignore[arg-type]  # same numbers
        ingested_at_ms=ingested,
        slo_deadline_ms=ingested + int(SLO_SECONDS[priority] * 1000),
        offloaded=offloaded,
    )
    return ConsumedRecord(
        TOPICS.lane_topic(lane), 0, offset, b"acme", event.SerializeToString(), event_headers(event)
    )


async def test_acks_count_as_met_or_missed_per_class_and_tier_with_their_latency() -> None:
    f = Fixture()
    f.d.add_records(
        [
            record(f, Priority.P30, 0, age_s=1.0, lane="p30", offloaded=False),  # met
            record(f, Priority.P30, 1, age_s=6.0, lane="p30", offloaded=False),  # missed
            record(f, Priority.P20, 2, age_s=70.0, lane="offload", offloaded=True),  # missed
            record(f, Priority.P10, 3, age_s=2.0, lane="offload", offloaded=True),  # met
        ]
    )
    session = f.d.open_session("w1")
    f.d.grant(session, 10)
    tasks = await sent_tasks(session)
    assert len(tasks) == 4
    f.clock.advance(0.5)
    nack = tasks[0]
    acks = [t for t in tasks if t is not nack]
    f.d.apply_results([result(t.task_id, pb.ACK) for t in acks], session)
    f.d.apply_results([result(nack.task_id, pb.NACK, delay_ms=1000)], session)
    f.d.apply_results([result(acks[0].task_id, pb.ACK)], session)  # duplicate: stale

    got = scrape(f)
    processed = "eventgw_orchestrator_processed_total"
    acked = {t.event.event_id for t in acks}
    expected = {
        ("P30", "normal", "met"): int("e0" in acked),
        ("P30", "normal", "missed"): int("e1" in acked),
        ("P20", "offloaded", "missed"): 1,
        ("P10", "offloaded", "met"): 1,
    }
    for cls in ("P30", "P20", "P10"):
        for tier in ("normal", "offloaded"):
            for slo in ("met", "missed"):
                want = expected.get((cls, tier, slo), 0)
                assert value(got, processed, **{"class": cls, "tier": tier, "slo": slo}) == want
    latency = "eventgw_orchestrator_ack_latency_seconds"
    p20 = {"class": "P20", "tier": "offloaded"}
    assert value(got, f"{latency}_count", **p20) == 1
    assert value(got, f"{latency}_sum", **p20) == 70.5
    assert value(got, f"{latency}_bucket", le="60.0", **p20) == 0
    assert value(got, f"{latency}_bucket", le="120.0", **p20) == 1

    stats = {c.lane: c for c in f.d.stats().lanes}
    assert (stats["P30"].slo_met, stats["P30"].slo_missed) == (
        expected["P30", "normal", "met"],
        expected["P30", "normal", "missed"],
    )
    assert (stats["P20"].slo_met, stats["P20"].slo_missed) == (0, 1)
    assert (stats["P20"].offloaded_slo_met, stats["P20"].offloaded_slo_missed) == (0, 1)
    assert (stats["P10"].offloaded_slo_met, stats["P10"].offloaded_slo_missed) == (1, 0)


async def test_stage_latency_splits_ingest_to_intake_and_to_the_first_lease() -> None:
    """intake = ingest → taken into the buffer; leased = ingest → first handed to a worker
    (intake plus the wait for credit). A delivery after a returned lease is not counted."""
    f = Fixture()
    f.d.add_records([record(f, Priority.P30, 0, age_s=0.3, lane="p30", offloaded=False)])
    f.clock.advance(2.0)  # no worker yet: the task waits for credit
    session = f.d.open_session("w1")
    f.d.grant(session, 1)
    assert len(await sent_tasks(session)) == 1
    f.d.close_session(session)  # the worker went away: its lease returns, delivery 1 kept
    again = f.d.open_session("w2")
    f.d.grant(again, 1)
    [task] = await sent_tasks(again)
    assert task.delivery_count == 2

    got = scrape(f)
    name = "eventgw_orchestrator_stage_latency_seconds"

    def cumulative(stage: str, le: str) -> float:
        return value(got, f"{name}_bucket", **{"class": "P30", "stage": stage, "le": le})

    assert value(got, f"{name}_count", **{"class": "P30", "stage": "intake"}) == 1
    assert (cumulative("intake", "0.25"), cumulative("intake", "0.5")) == (0, 1)  # 0.3 s
    assert value(got, f"{name}_count", **{"class": "P30", "stage": "leased"}) == 1
    assert (cumulative("leased", "2.5"), cumulative("leased", "1.0")) == (1, 0)  # 2.3 s


async def test_compact_acks_count_like_full_results_and_stale_ones_not_at_all() -> None:
    # Workers send their ACKs as bare task ids (WorkRequest.acked); those count the same.
    f = Fixture()
    f.d.add_records(
        [
            record(f, Priority.P30, 0, age_s=1.0, lane="p30", offloaded=False),  # met
            record(f, Priority.P30, 1, age_s=9.0, lane="p30", offloaded=False),  # missed
            record(f, Priority.P20, 2, age_s=1.0, lane="offload", offloaded=True),  # met
        ]
    )
    session = f.d.open_session("w1")
    f.d.grant(session, 10)
    ids = [t.task_id for t in await sent_tasks(session)]
    assert f.d.apply_results([], session, ids) == (3, 0)
    assert f.d.apply_results([], session, ids[:1]) == (0, 1)  # again: stale, not counted
    got = scrape(f)
    processed = "eventgw_orchestrator_processed_total"
    for cls, tier, slo, want in [
        ("P30", "normal", "met", 1),
        ("P30", "normal", "missed", 1),
        ("P20", "offloaded", "met", 1),
        ("P20", "normal", "met", 0),
    ]:
        assert value(got, processed, **{"class": cls, "tier": tier, "slo": slo}) == want
    latency = "eventgw_orchestrator_ack_latency_seconds"
    assert value(got, f"{latency}_count", **{"class": "P30", "tier": "normal"}) == 2
    assert value(got, f"{latency}_sum", **{"class": "P30", "tier": "normal"}) == 10.0


async def test_the_tier_follows_an_offloaded_event_through_the_retry_topics() -> None:
    # The lane says "offload" only on the first try; a retried event says it itself.
    f = Fixture()
    retried = [
        record(f, Priority.P20, 0, age_s=1.0, lane="p20", offloaded=True),
        record(f, Priority.P20, 1, age_s=1.0, lane="p20", offloaded=False),
    ]
    f.d.add_records(
        [ConsumedRecord(TOPICS.retry_60s, 0, r.offset, r.key, r.value, r.headers) for r in retried]
        + [record(f, Priority.P10, 0, age_s=1.0, lane="offload", offloaded=True)]
    )
    session = f.d.open_session("w1")
    f.d.grant(session, 10)
    ids = [t.task_id for t in await sent_tasks(session)]
    assert f.d.apply_results([], session, ids) == (3, 0)
    got = scrape(f)
    processed = "eventgw_orchestrator_processed_total"
    for cls, tier, want in [
        ("P20", "offloaded", 1),
        ("P20", "normal", 1),
        ("P10", "offloaded", 1),
        ("P10", "normal", 0),
    ]:
        assert value(got, processed, **{"class": cls, "tier": tier, "slo": "met"}) == want


async def test_stats_lists_worker_sessions_with_credit_leases_and_results() -> None:
    f = Fixture()
    f.add(Priority.P20, Priority.P20, Priority.P20)
    a = f.d.open_session("worker-a")
    f.d.open_session("worker-b")
    f.d.grant(a, 5)
    tasks = await sent_tasks(a)
    a.results += 1  # counted by the Work stream per message (work_api)
    f.d.apply_results([result(tasks[0].task_id, pb.ACK)], a)
    f.clock.advance(3)
    st = f.d.stats()
    assert st.serving
    rows = [(w.worker_id, w.credit, w.leased, w.results) for w in st.workers]
    assert rows == [("worker-a", 2, 2, 1), ("worker-b", 0, 0, 0)]
    f.d.stop_serving()
    assert not f.d.stats().serving


class _Writer:
    def pending(self) -> int:
        return 3


class _Committer:
    commits = 7
    failures = 2


async def test_collector_exposes_buffer_lanes_classes_lateness_and_commit_lag() -> None:
    f = Fixture(
        buffer_budget_bytes=1 << 16,
        lane_shares={"p30": 0.8, "p20": 0.5, "p10": 0.01, "offload": 0.3, "retry": 0.7},
    )
    f.metrics.register(OrchestratorCollector(f.d, _Writer(), _Committer()))  # type: ignore[arg-type]
    f.add(Priority.P30, age_s=10.0)  # late: second tier
    f.add(Priority.P10, Priority.P10, age_s=30.0)
    session = f.d.open_session("w")
    f.d.grant(session, 1)
    [served] = await sent_tasks(session)
    assert served.event.priority == pb.P10  # on-time work first
    got = scrape(f)
    name = "eventgw_orchestrator_"
    assert value(got, name + "class_tasks", **{"class": "P10", "state": "leased"}) == 1
    assert value(got, name + "class_tasks", **{"class": "P10", "state": "ready"}) == 1
    assert value(got, name + "class_tasks", **{"class": "P30", "state": "ready"}) == 1
    assert value(got, name + "class_tasks", **{"class": "P20", "state": "delayed"}) == 0
    assert value(got, name + "lane_tasks", lane="p10", state="leased") == 1
    assert value(got, name + "lane_tasks", lane="p30", state="ready") == 1
    assert value(got, name + "late_tasks", **{"class": "P30"}) == 1
    assert value(got, name + "late_tasks", **{"class": "P10"}) == 0
    assert value(got, name + "oldest_ready_age_seconds", **{"class": "P30"}) == 10.0
    assert value(got, name + "oldest_ready_age_seconds", **{"class": "P10"}) == 30.0
    assert value(got, name + "oldest_ready_age_seconds", **{"class": "P20"}) == 0.0
    assert value(got, name + "slo_seconds", **{"class": "P10"}) == 1200.0
    assert value(got, name + "lane_paused", lane="p10") == 1  # 1 % of 64 KiB is reached
    assert value(got, name + "lane_paused", lane="p30") == 0
    assert value(got, name + "buffer_budget_bytes") == 1 << 16
    assert value(got, name + "buffer_bytes") == f.d.buffer.bytes > 0
    assert value(got, name + "class_bytes", **{"class": "P10"}) > 0
    assert value(got, name + "commit_lag_records", topic=TOPICS.p30, partition="0") == 1
    assert value(got, name + "commit_lag_records", topic=TOPICS.p10, partition="0") == 2
    assert value(got, name + "retry_writes_pending") == 3
    assert value(got, name + "commits_total", result="ok") == 7
    assert value(got, name + "commits_total", result="failed") == 2
    # Past the P10 SLO and the lease: both P10 tasks are late, the lease expired.
    f.clock.advance(SLO_SECONDS[Priority.P10])
    f.d.tick()
    got = scrape(f)
    assert value(got, name + "late_tasks", **{"class": "P10"}) == 2
    assert value(got, name + "leases_expired_total", lane="p10") == 1
    assert value(got, name + "leases_expired_total", lane="p30") == 0
    # An ACK finishes the offsets; a commit then takes the lag down.
    f.d.grant(session, 3)
    for task in await sent_tasks(session):
        f.d.apply_results([result(task.task_id, pb.ACK)], session)
    f.d.mark_committed(f.d.committable())
    got = scrape(f)
    assert value(got, name + "commit_lag_records", topic=TOPICS.p10, partition="0") == 0
    assert (
        value(got, name + "processed_total", **{"class": "P10", "tier": "normal", "slo": "missed"})
        == 2
    )
