"""What ``eventgw up`` runs: the processes of a local stack, their ports and settings.

Pure: settings and the ``up`` options in, a `StackPlan` out (no process is started here).
One machine stands in for many: N ingest workers (``ingest.workers``, one supervisor),
M publishers behind ingest's round-robin channel, K orchestrator replicas per fleet, P
processors that pull from every replica. With ``--rollout-fleet`` the rollout cluster gets
its own fleet of K replicas (indexes K..2K-1, listed in the dynamic config under
``orchestrator.rollout_orchestrator_config_key``) and the publisher gets rollout producers,
so a migration can be tried by editing the dynamic config file (docs/operations.md,
"Migrating to another Kafka cluster").

Ports: replica ``n`` of a kind uses the configured port plus ``PORT_STRIDE * n`` (publisher 1
on 50151, orchestrator 1 on 50152 with status on 9203, processor 1 on 9205, ...); replica 0
uses the configured ports, so one of each is exactly the default stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from eventgw.cli.options import UsageError
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from eventgw.config.settings import EventGwSettings

__all__ = [
    "DEFAULT_DYNAMIC_CONFIG",
    "MAX_PER_KIND",
    "PORT_STRIDE",
    "ChildSpec",
    "StackPlan",
    "StackShape",
    "fleet_document",
    "plan_stack",
]

PORT_STRIDE: Final = 100
"""Replica ``n`` of a kind listens on its configured ports plus ``n`` times this."""

MAX_PER_KIND: Final = 16
"""At most this many publishers, orchestrators per fleet or processors on one machine."""

DEFAULT_DYNAMIC_CONFIG: Final = Path(".eventgw/dynamic.json")
"""The dynamic config file of ``--rollout-fleet`` when ``publisher.dynamic_config_path`` is
not set (relative to the working directory, like the default spool)."""


@dataclass(frozen=True, slots=True)
class StackShape:
    """The ``eventgw up`` options: how many of each process (None: the settings' value)."""

    ingest_workers: int | None = None
    publishers: int = 1
    orchestrators: int = 1  # per fleet
    processors: int = 1
    rollout_fleet: bool = False


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One process of the stack: ``eventgw <args>`` with ``env`` added to the environment."""

    label: str  # e.g. "orchestrator 2 (rollout)"
    args: tuple[str, ...]
    env: dict[str, str]
    ready_url: str
    detail: str  # one line for the banner: addresses


@dataclass(frozen=True, slots=True)
class StackPlan:
    """Every process in start order (downstream first), and what the stack needs."""

    children: tuple[ChildSpec, ...]
    replicas: int  # orchestrator.number_of_replicas, every fleet together
    rollout_indexes: tuple[int, ...]  # the rollout fleet (empty without --rollout-fleet)
    dynamic_config: Path | None  # the file every service watches (None: none)
    shared_env: dict[str, str] = field(default_factory=dict)  # given to every child


def _check_count(option: str, value: int, high: int = MAX_PER_KIND) -> None:
    if not 1 <= value <= high:
        raise UsageError(option, f"must be 1 to {high}, got {value}")


def plan_stack(settings: EventGwSettings, shape: StackShape) -> StackPlan:
    """The processes of the stack ``shape`` describes (see the module docstring).

    Raises:
        UsageError: a count out of range (naming its option).
        ConfigError: ``--rollout-fleet`` without ``kafka.rollout``, or two processes would
            listen on one port (naming the setting to change).
    """
    _check_count("--publishers", shape.publishers)
    _check_count("--orchestrators", shape.orchestrators)
    _check_count("--processors", shape.processors, 2 * MAX_PER_KIND)
    if shape.ingest_workers is not None:
        _check_count("--ingest-workers", shape.ingest_workers, 64)
    if shape.rollout_fleet and settings.kafka.rollout is None:
        raise ConfigError("kafka.rollout", "--rollout-fleet needs a rollout cluster")
    k = shape.orchestrators
    replicas = 2 * k if shape.rollout_fleet else k
    rollout_indexes = tuple(range(k, 2 * k)) if shape.rollout_fleet else ()
    shared: dict[str, str] = {}
    dynamic: Path | None = None
    if shape.rollout_fleet:
        dynamic = settings.publisher.dynamic_config_path or DEFAULT_DYNAMIC_CONFIG
        shared = {
            "EVENTGW_PUBLISHER__ROLLOUT_PRODUCERS_ENABLED": "true",
            "EVENTGW_PUBLISHER__DYNAMIC_CONFIG_PATH": str(dynamic),
            "EVENTGW_INGEST__DYNAMIC_CONFIG_PATH": str(dynamic),
            "EVENTGW_ORCHESTRATOR__DYNAMIC_CONFIG_PATH": str(dynamic),
        }
    pub, orch, proc = settings.publisher, settings.orchestrator, settings.processor
    ports: dict[int, str] = {}

    def port(base: int, n: int, setting: str) -> int:
        value = base + PORT_STRIDE * n
        if value > 65535 or value in ports:
            other = ports.get(value, "the highest port")
            raise ConfigError(
                setting, f"replica {n} would listen on {value}, taken by {other}: change it"
            )
        ports[value] = f"{setting} (replica {n})"
        return value

    port(settings.ingest.http_port, 0, "ingest.http_port")
    port(settings.ingest.grpc_port, 0, "ingest.grpc_port")
    port(settings.recovery.metrics_port, 0, "recovery.metrics_port")
    children: list[ChildSpec] = []
    targets: list[str] = []
    for j in range(shape.publishers):
        grpc_port = port(pub.grpc_port, j, "publisher.grpc_port")
        liveness = port(pub.liveness_port, j, "publisher.liveness_port")
        metrics = port(pub.metrics_port, j, "publisher.metrics_port")
        targets.append(f"{pub.grpc_host}:{grpc_port}")
        children.append(
            ChildSpec(
                f"publisher {j}" if shape.publishers > 1 else "publisher",
                ("publisher",),
                {
                    "EVENTGW_PUBLISHER__GRPC_PORT": str(grpc_port),
                    "EVENTGW_PUBLISHER__LIVENESS_PORT": str(liveness),
                    "EVENTGW_PUBLISHER__METRICS_PORT": str(metrics),
                },
                f"http://{pub.grpc_host}:{liveness}/readyz",
                f"gRPC {pub.grpc_host}:{grpc_port}   metrics :{metrics}",
            )
        )
    children.append(
        ChildSpec(
            "failed-writes",
            ("failed-writes",),
            {},
            f"http://127.0.0.1:{settings.recovery.metrics_port}/readyz",
            f"status :{settings.recovery.metrics_port}",
        )
    )
    addresses: list[str] = []
    for i in range(replicas):
        fleet = "rollout" if i in rollout_indexes else "primary"
        grpc_port = port(orch.grpc_port, i, "orchestrator.grpc_port")
        status = port(orch.metrics_port, i, "orchestrator.metrics_port")
        addresses.append(f"127.0.0.1:{grpc_port}")
        children.append(
            ChildSpec(
                f"orchestrator {i} ({fleet})" if replicas > 1 else "orchestrator",
                ("orchestrator", "--index", str(i), "--replicas", str(replicas)),
                {
                    "EVENTGW_ORCHESTRATOR__GRPC_PORT": str(grpc_port),
                    "EVENTGW_ORCHESTRATOR__METRICS_PORT": str(status),
                },
                f"http://127.0.0.1:{status}/readyz",
                f"gRPC 127.0.0.1:{grpc_port}   stats http://127.0.0.1:{status}/stats",
            )
        )
    orchestrators = json.dumps(addresses)  # every replica of every fleet
    for p in range(shape.processors):
        metrics = port(proc.metrics_port, p, "processor.metrics_port")
        children.append(
            ChildSpec(
                f"processor {p}" if shape.processors > 1 else "processor",
                ("processor",),
                {
                    "EVENTGW_PROCESSOR__METRICS_PORT": str(metrics),
                    "EVENTGW_PROCESSOR__ORCHESTRATORS": orchestrators,
                },
                f"http://127.0.0.1:{metrics}/readyz",
                f"handler {proc.handler}   status :{metrics}",
            )
        )
    ingest_env = {}
    if shape.publishers > 1:
        # gRPC's ipv4: scheme lists several addresses; ingest's channel round-robins them.
        ingest_env["EVENTGW_INGEST__PUBLISHER_TARGET"] = "ipv4:" + ",".join(targets)
    if shape.ingest_workers is not None:
        ingest_env["EVENTGW_INGEST__WORKERS"] = str(shape.ingest_workers)
    ing = settings.ingest
    workers = shape.ingest_workers or ing.workers
    children.append(
        ChildSpec(
            "ingest",
            ("ingest",),
            ingest_env,
            f"http://{ing.http_host}:{ing.http_port}/readyz",
            f"HTTP http://{ing.http_host}:{ing.http_port}/v1/events   gRPC "
            f"{ing.grpc_host}:{ing.grpc_port}   workers {workers}",
        )
    )
    return StackPlan(tuple(children), replicas, rollout_indexes, dynamic, shared)


def fleet_document(current: str | None, key: str, indexes: tuple[int, ...]) -> str:
    """The dynamic config text with ``key`` set to ``indexes``; the rest of ``current`` kept.

    ``current`` is the file's text (None: no file yet — the rollout share starts at 0).

    Raises:
        ConfigError: ``current`` is not a JSON object (``up`` will not overwrite it).
    """
    doc: dict[str, Any] = {"event_gateway_cluster_rollout": 0}
    if current is not None:
        try:
            loaded = json.loads(current)
        except ValueError as exc:
            raise ConfigError("dynamic_config", f"not valid JSON, left as it is: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError("dynamic_config", "not a JSON object, left as it is")
        doc = loaded
    doc[key] = list(indexes)
    return json.dumps(doc, indent=2) + "\n"
