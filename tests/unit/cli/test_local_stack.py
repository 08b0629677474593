"""Tests for eventgw.cli.local_stack: the processes, ports and settings of ``eventgw up``."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from eventgw.cli.local_stack import (
    DEFAULT_DYNAMIC_CONFIG,
    StackShape,
    fleet_document,
    plan_stack,
)
from eventgw.cli.main import build_parser
from eventgw.cli.options import UsageError
from eventgw.config.dynamic import parse_dynamic_config
from eventgw.config.settings import EventGwSettings, KafkaSettings, OrchestratorSettings
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def test_the_default_shape_is_the_stack_up_always_ran() -> None:
    plan = plan_stack(EventGwSettings(), StackShape())
    assert [c.label for c in plan.children] == [
        "publisher",
        "failed-writes",
        "orchestrator",
        "processor",
        "ingest",
    ]
    assert (plan.replicas, plan.rollout_indexes, plan.dynamic_config) == (1, (), None)
    assert plan.shared_env == {}
    by = {c.label: c for c in plan.children}
    assert by["orchestrator"].args == ("orchestrator", "--index", "0", "--replicas", "1")
    assert by["orchestrator"].env == {
        "EVENTGW_ORCHESTRATOR__GRPC_PORT": "50052",
        "EVENTGW_ORCHESTRATOR__METRICS_PORT": "9103",
    }
    assert json.loads(by["processor"].env["EVENTGW_PROCESSOR__ORCHESTRATORS"]) == [
        "127.0.0.1:50052"
    ]
    assert by["ingest"].env == {}, "one publisher: ingest's own publisher_target"
    assert by["publisher"].ready_url == "http://127.0.0.1:50099/readyz"


def test_scale_out_on_one_machine() -> None:
    """2 ingest workers, 3 publishers, 2 orchestrators per fleet, 3 processors."""
    shape = StackShape(
        ingest_workers=2, publishers=3, orchestrators=2, processors=3, rollout_fleet=True
    )
    plan = plan_stack(EventGwSettings(), shape)
    assert [c.label for c in plan.children] == [
        "publisher 0",
        "publisher 1",
        "publisher 2",
        "failed-writes",
        "orchestrator 0 (primary)",
        "orchestrator 1 (primary)",
        "orchestrator 2 (rollout)",
        "orchestrator 3 (rollout)",
        "processor 0",
        "processor 1",
        "processor 2",
        "ingest",
    ]
    assert (plan.replicas, plan.rollout_indexes) == (4, (2, 3))
    by = {c.label: c for c in plan.children}
    assert by["orchestrator 3 (rollout)"].args == (
        "orchestrator",
        "--index",
        "3",
        "--replicas",
        "4",
    )
    assert by["orchestrator 3 (rollout)"].env["EVENTGW_ORCHESTRATOR__GRPC_PORT"] == "50352"
    assert by["publisher 2"].env["EVENTGW_PUBLISHER__GRPC_PORT"] == "50251"
    assert by["ingest"].env == {
        "EVENTGW_INGEST__PUBLISHER_TARGET": "ipv4:127.0.0.1:50051,127.0.0.1:50151,127.0.0.1:50251",
        "EVENTGW_INGEST__WORKERS": "2",
    }
    every = [f"127.0.0.1:{50052 + 100 * i}" for i in range(4)]
    for p in range(3):
        env = by[f"processor {p}"].env
        assert json.loads(env["EVENTGW_PROCESSOR__ORCHESTRATORS"]) == every, "both fleets"
        assert env["EVENTGW_PROCESSOR__METRICS_PORT"] == str(9105 + 100 * p)
    assert plan.dynamic_config == DEFAULT_DYNAMIC_CONFIG
    assert plan.shared_env["EVENTGW_PUBLISHER__ROLLOUT_PRODUCERS_ENABLED"] == "true"
    for service in ("PUBLISHER", "INGEST", "ORCHESTRATOR"):
        assert plan.shared_env[f"EVENTGW_{service}__DYNAMIC_CONFIG_PATH"] == str(
            DEFAULT_DYNAMIC_CONFIG
        )
    ports = [v for c in plan.children for k, v in c.env.items() if k.endswith("_PORT")]
    assert not [p for p, n in Counter(ports).items() if n > 1], "no port twice"


def test_the_settings_dynamic_config_file_is_the_one_every_service_watches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dyn.json"
    settings = EventGwSettings(publisher={"dynamic_config_path": path})  # type: ignore[arg-type]
    plan = plan_stack(settings, StackShape(rollout_fleet=True))
    assert plan.dynamic_config == path
    assert plan.shared_env["EVENTGW_ORCHESTRATOR__DYNAMIC_CONFIG_PATH"] == str(path)


@pytest.mark.parametrize(
    ("shape", "option"),
    [
        (StackShape(publishers=0), "--publishers"),
        (StackShape(orchestrators=17), "--orchestrators"),
        (StackShape(processors=0), "--processors"),
        (StackShape(ingest_workers=65), "--ingest-workers"),
    ],
)
def test_counts_out_of_range_are_refused_naming_the_option(shape: StackShape, option: str) -> None:
    with pytest.raises(UsageError) as info:
        plan_stack(EventGwSettings(), shape)
    assert info.value.option == option


def test_a_port_clash_names_the_setting() -> None:
    settings = EventGwSettings(orchestrator=OrchestratorSettings(grpc_port=50151))
    with pytest.raises(ConfigError) as info:
        plan_stack(settings, StackShape(publishers=2))
    assert info.value.field == "orchestrator.grpc_port"
    assert "publisher.grpc_port (replica 1)" in info.value.message


def test_a_rollout_fleet_needs_a_rollout_cluster() -> None:
    settings = EventGwSettings(kafka=KafkaSettings(rollout=None))
    with pytest.raises(ConfigError) as info:
        plan_stack(settings, StackShape(rollout_fleet=True))
    assert info.value.field == "kafka.rollout"


def test_the_fleet_document_sets_the_key_and_keeps_the_rest() -> None:
    fresh = fleet_document(None, "rollout_orchestrator_indexes", (2, 3))
    config = parse_dynamic_config(fresh)
    assert config.replica_indexes("rollout_orchestrator_indexes") == (2, 3)
    assert config.event_gateway_cluster_rollout == 0
    edited = '{"event_gateway_cluster_rollout": 40, "rollout_orchestrator_indexes": [0]}'
    kept = parse_dynamic_config(fleet_document(edited, "rollout_orchestrator_indexes", (1,)))
    assert kept.event_gateway_cluster_rollout == 40
    assert kept.replica_indexes("rollout_orchestrator_indexes") == (1,)
    for bad in ("[1]", "{"):
        with pytest.raises(ConfigError):
            fleet_document(bad, "rollout_orchestrator_indexes", (1,))


def test_up_parses_its_scale_options() -> None:
    args = build_parser().parse_args(
        ["up", "--publishers", "2", "--orchestrators", "2", "--rollout-fleet", "--processors", "3"]
    )
    assert (args.publishers, args.orchestrators, args.rollout_fleet, args.processors) == (
        2,
        2,
        True,
        3,
    )
    assert args.ingest_workers is None
