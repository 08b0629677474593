"""``/stats`` of an orchestrator (orchestrator/service.py `stats_json`): the ``Stats`` answer
in protobuf's JSON mapping, plus the fleet."""

from __future__ import annotations

import json

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.fleets import FleetAssignment
from eventgw.config.settings import KafkaClusterSettings
from eventgw.orchestrator.service import stats_json


def test_stats_are_numbers_with_their_proto_names_and_zeros_shown() -> None:
    stats = pb.StatsResponse(
        index=1,
        serving=True,
        buffer_bytes=3_000_000,
        buffer_budget_bytes=1 << 40,  # past 2**32: still a JSON number
        lanes=[
            pb.ClassStats(lane="P30", processed=10, slo_s=5, oldest_age_s=0.25, slo_met=9),
            pb.ClassStats(lane="offload", buffered=7, paused=True),
        ],
        workers=[pb.WorkerSessionStats(worker_id="h-1", session=3, credit=5, connected_s=61.5)],
    )
    fleet = FleetAssignment(
        name="rollout",
        cluster=KafkaClusterSettings(bootstrap_servers="b:9092"),
        members=(1, 3),
        other_members=(0, 2),
    )

    doc = json.loads(stats_json(stats, fleet, fleet_moves=2))

    assert (doc["index"], doc["serving"]) == (1, True)
    assert (doc["buffer_bytes"], doc["buffer_budget_bytes"]) == (3_000_000, 1 << 40)
    p30, offload = doc["lanes"]
    assert (p30["lane"], p30["processed"], p30["slo_met"], p30["slo_missed"]) == ("P30", 10, 9, 0)
    assert (p30["slo_s"], p30["oldest_age_s"]) == (5.0, 0.25)
    assert (offload["buffered"], offload["paused"], offload["in_flight"]) == (7, True, 0)
    assert set(p30) == {f.name for f in pb.ClassStats.DESCRIPTOR.fields}  # nothing left out
    assert doc["workers"] == [
        {
            "worker_id": "h-1",
            "session": 3,
            "credit": 5,
            "leased": 0,
            "results": 0,
            "connected_s": 61.5,
        }
    ]
    assert (doc["fleet"], doc["cluster"], doc["fleet_members"], doc["fleet_moves"]) == (
        "rollout",
        "b:9092",
        [1, 3],
        2,
    )
