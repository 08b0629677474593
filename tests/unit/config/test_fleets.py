"""Tests for eventgw.config.fleets: which cluster each replica serves, and discovery."""

from __future__ import annotations

from typing import Any

import pytest

from eventgw.config.dynamic import parse_dynamic_config
from eventgw.config.fleets import assign_fleet, fleet_members, orchestrator_addresses
from eventgw.config.settings import (
    EventGwSettings,
    KafkaClusterSettings,
    KafkaSettings,
    OrchestratorSettings,
    ProcessorSettings,
)
from eventgw.core.errors import ConfigError

PRIMARY = KafkaClusterSettings(bootstrap_servers="primary:9092")
ROLLOUT = KafkaClusterSettings(bootstrap_servers="rollout:9092")


def settings(
    index: int = 0, replicas: int = 4, *, rollout: bool = True, active: str = "primary", **o: Any
) -> EventGwSettings:
    return EventGwSettings(
        kafka=KafkaSettings(
            primary=PRIMARY,
            rollout=ROLLOUT if rollout else None,
            active_cluster_fleet=active,  # type: ignore[arg-type]  # tests pass plain strings
        ),
        orchestrator=OrchestratorSettings(index=index, number_of_replicas=replicas, **o),
    )


def doc(text: str, key: str = "rollout_orchestrator_indexes") -> Any:
    return parse_dynamic_config(text, index_keys=(key,))


def test_without_a_list_every_replica_serves_the_primary_cluster() -> None:
    for index in range(4):
        fleet = assign_fleet(settings(index), doc("{}"))
        assert (fleet.name, fleet.cluster) == ("primary", PRIMARY)
        assert fleet.members == (0, 1, 2, 3)
        assert fleet.other_members == ()


def test_listed_indexes_serve_the_rollout_cluster() -> None:
    config = doc('{"rollout_orchestrator_indexes": [3, 2]}')
    assert fleet_members(settings(), config) == {"primary": (0, 1), "rollout": (2, 3)}
    two = assign_fleet(settings(2), config)
    assert (two.name, two.cluster, two.members, two.other_members) == (
        "rollout",
        ROLLOUT,
        (2, 3),
        (0, 1),
    )
    one = assign_fleet(settings(1), config)
    assert (one.name, one.cluster, one.members) == ("primary", PRIMARY, (0, 1))


def test_the_key_is_the_one_the_setting_names() -> None:
    config = doc('{"fleet_b": [0]}', key="fleet_b")
    renamed = settings(0, rollout_orchestrator_config_key="fleet_b")
    assert assign_fleet(renamed, config).name == "rollout"
    assert assign_fleet(settings(0), config).name == "primary", "another key: not listed"


def test_active_cluster_fleet_rollout_moves_every_replica() -> None:
    for text in ("{}", '{"rollout_orchestrator_indexes": [1]}'):
        config = doc(text)
        assert fleet_members(settings(active="rollout"), config) == {
            "primary": (),
            "rollout": (0, 1, 2, 3),
        }
        fleet = assign_fleet(settings(0, active="rollout"), config)
        assert (fleet.name, fleet.cluster) == ("rollout", ROLLOUT)


@pytest.mark.parametrize(
    ("text", "kwargs", "detail"),
    [
        ('{"rollout_orchestrator_indexes": [4]}', {}, "not below orchestrator.number_of_replicas"),
        ('{"rollout_orchestrator_indexes": [0, 1, 2, 3]}', {}, "lists every replica"),
        ('{"rollout_orchestrator_indexes": [1]}', {"rollout": False}, "kafka.rollout is not set"),
    ],
)
def test_an_assignment_that_breaks_a_fleet_is_refused_naming_the_key(
    text: str, kwargs: dict[str, Any], detail: str
) -> None:
    for index in (0, 1):  # every replica refuses it, listed or not
        with pytest.raises(ConfigError) as info:
            assign_fleet(settings(index, **kwargs), doc(text))
        assert info.value.field == "rollout_orchestrator_indexes"
        assert detail in info.value.message


def test_active_rollout_needs_a_rollout_cluster() -> None:
    with pytest.raises(ValueError, match=r"active_cluster_fleet: rollout needs kafka\.rollout"):
        settings(active="rollout", rollout=False)
    with pytest.raises(ValueError, match="active_cluster_fleet"):
        settings(active="default")


def test_discovery_expands_the_template_over_every_replica() -> None:
    s = EventGwSettings(
        orchestrator=OrchestratorSettings(number_of_replicas=3),
        processor=ProcessorSettings(orchestrator_address_template="orch-{index}.orch:50052"),
    )
    assert orchestrator_addresses(s) == [
        "orch-0.orch:50052",
        "orch-1.orch:50052",
        "orch-2.orch:50052",
    ]
    listed = EventGwSettings(processor=ProcessorSettings(orchestrators=["a:1", "b:2"]))
    assert orchestrator_addresses(listed) == ["a:1", "b:2"]


@pytest.mark.parametrize("template", ["orch:50052", "orch-{index}-{zone}:1", "orch-{}:1"])
def test_a_template_without_index_or_with_other_fields_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="orchestrator_address_template"):
        ProcessorSettings(orchestrator_address_template=template)
