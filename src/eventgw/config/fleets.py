"""Orchestrator fleets: which Kafka cluster each replica serves, and where workers find them.

Each Kafka cluster has its own fleet of orchestrator replicas (docs/operations.md, "Fleets").
Replica indexes are global — one StatefulSet, ``0 .. number_of_replicas - 1`` — and a replica
belongs to the **rollout** fleet when the dynamic-config key named by
``orchestrator.rollout_orchestrator_config_key`` lists its index; every other replica serves
``kafka.active_cluster_fleet`` (the primary cluster, unless a finished migration moved them
all). A fleet reads its own cluster's lanes, retry topics and response partitions (response
partition = replica index, so each cluster's response topic has a partition per index).

Pure: settings and the dynamic config in, a `FleetAssignment` out, or a `ConfigError` naming
the key when the assignment would break a fleet. Every replica computes the same answer from
the same document, so they agree without talking to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from eventgw.config.dynamic import DynamicConfig
    from eventgw.config.settings import EventGwSettings, KafkaClusterSettings

__all__ = [
    "FleetAssignment",
    "FleetName",
    "assign_fleet",
    "fleet_members",
    "orchestrator_addresses",
]

FleetName = Literal["primary", "rollout"]


@dataclass(frozen=True, slots=True)
class FleetAssignment:
    """Where one replica serves, and who serves with it.

    Attributes:
        name: the fleet, named after its Kafka cluster.
        cluster: how to reach that cluster.
        members: the replica indexes of this fleet (this replica's included), ascending.
        other_members: the replica indexes of the other fleet.
    """

    name: FleetName
    cluster: KafkaClusterSettings
    members: tuple[int, ...]
    other_members: tuple[int, ...]


def fleet_members(
    settings: EventGwSettings, config: DynamicConfig
) -> dict[FleetName, tuple[int, ...]]:
    """Every replica index by fleet, as ``config`` and the settings place them.

    Raises:
        ConfigError: naming the dynamic-config key when it lists an index that is not below
            ``orchestrator.number_of_replicas``, or lists every replica while
            ``kafka.active_cluster_fleet`` is ``primary`` (the primary cluster would be
            read by nobody), or lists any while ``kafka.rollout`` is not set.
    """
    o = settings.orchestrator
    key = o.rollout_orchestrator_config_key
    replicas = o.number_of_replicas
    listed = config.replica_indexes(key) or ()
    beyond = [i for i in listed if i >= replicas]
    if beyond:
        raise ConfigError(
            key,
            f"lists {beyond}, not below orchestrator.number_of_replicas={replicas} "
            f"(indexes 0 to {replicas - 1})",
        )
    if listed and settings.kafka.rollout is None:
        raise ConfigError(key, f"lists {list(listed)} but kafka.rollout is not set")
    if settings.kafka.active_cluster_fleet == "rollout":
        return {"primary": (), "rollout": tuple(range(replicas))}
    if len(listed) == replicas:
        raise ConfigError(
            key,
            f"lists every replica ({replicas}): nothing would read the primary cluster; to "
            "move them all, set kafka.active_cluster_fleet = rollout",
        )
    rollout = set(listed)
    return {
        "primary": tuple(i for i in range(replicas) if i not in rollout),
        "rollout": tuple(listed),
    }


def assign_fleet(settings: EventGwSettings, config: DynamicConfig) -> FleetAssignment:
    """The fleet of the replica ``settings.orchestrator.index`` (see the module docstring).

    Raises:
        ConfigError: see `fleet_members`.
    """
    members = fleet_members(settings, config)
    index = settings.orchestrator.index
    name: FleetName = "rollout" if index in members["rollout"] else "primary"
    other: FleetName = "primary" if name == "rollout" else "rollout"
    cluster = settings.kafka.rollout if name == "rollout" else settings.kafka.primary
    if cluster is None:  # fleet_members refuses a rollout member without kafka.rollout
        raise ConfigError("kafka.rollout", "not set, but this replica is in the rollout fleet")
    return FleetAssignment(name, cluster, members[name], members[other])


def orchestrator_addresses(settings: EventGwSettings) -> list[str]:
    """The orchestrators a worker serves: the template expanded, else ``processor.orchestrators``.

    With ``processor.orchestrator_address_template`` every index below
    ``orchestrator.number_of_replicas`` is one address — both fleets, since indexes are
    global.
    """
    template = settings.processor.orchestrator_address_template
    if template is None:
        return list(settings.processor.orchestrators)
    return [template.format(index=i) for i in range(settings.orchestrator.number_of_replicas)]
