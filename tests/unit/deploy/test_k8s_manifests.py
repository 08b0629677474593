"""The Kubernetes manifests start processes whose settings validate.

No cluster runs here, so this is the static half of exercising deploy/k8s: every container
runs a real `eventgw` subcommand; the settings each container would load (the ConfigMap's
TOML plus its ``EVENTGW_*`` environment, secrets as placeholders) pass the same validation
as at start-up; and the ports the manifests probe and expose are the ports those settings
bind. Every container runs unprivileged on a read-only root filesystem, and the one
directory eventgw writes there, the failed-writes spool, is a writable volume.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventgw.cli.main import build_parser
from eventgw.config.dynamic import parse_dynamic_config
from eventgw.config.internal_auth import AUDIENCES
from eventgw.config.settings import EventGwSettings, load_settings
from eventgw.kafka.acl_policy import ROLES, username

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
SECRET_PLACEHOLDER = "secret-from-kubernetes-32-characters"  # long enough for an HMAC key


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _config_map() -> dict[str, str]:
    (cm,) = [d for d in _documents() if d["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod")


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]
    if doc["kind"] == "Pod":
        return spec
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def _containers() -> list[tuple[str, dict[str, Any]]]:
    """(workload name, container) of every workload, init containers included."""
    return [
        (d["metadata"]["name"], c)
        for d in _documents()
        if d["kind"] in WORKLOADS
        for c in _pod_spec(d)["containers"] + _pod_spec(d).get("initContainers", [])
    ]


CONTAINERS = _containers()


def _settings_for(
    container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp: Path
) -> EventGwSettings:
    settings_file = tmp / "settings.toml"
    settings_file.write_text(_config_map()["settings.toml"])
    for name in [n for n in os.environ if n.startswith("EVENTGW_")]:
        monkeypatch.delenv(name)
    for env in container.get("env", []):
        if env["name"].startswith("EVENTGW_"):
            value = env.get("value")
            if value is None:  # valueFrom: a Secret or the pod's own fields
                value = "0" if env["name"].endswith("__INDEX") else SECRET_PLACEHOLDER
            monkeypatch.setenv(env["name"], str(value))
    return load_settings(settings_file)


def test_the_config_map_holds_valid_toml_and_json() -> None:
    data = _config_map()
    tomllib.loads(data["settings.toml"])
    parse_dynamic_config(data["dynamic.json"])  # refused documents raise, naming the field
    assert len(CONTAINERS) >= 5


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_every_container_runs_a_subcommand_whose_settings_validate(
    name: str, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    args = build_parser().parse_args(container["args"])
    assert args.command in {"ingest", "publisher", "failed-writes", "orchestrator", "processor"}
    _settings_for(container, monkeypatch, tmp_path)  # raises ConfigError naming the field


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_exposed_and_probed_ports_are_the_ports_the_settings_bind(
    name: str, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = _settings_for(container, monkeypatch, tmp_path)
    command = build_parser().parse_args(container["args"]).command
    bound = {
        "ingest": {s.ingest.http_port, s.ingest.grpc_port},
        "publisher": {s.publisher.grpc_port, s.publisher.liveness_port, s.publisher.metrics_port},
        "failed-writes": {s.recovery.metrics_port},
        "orchestrator": {s.orchestrator.grpc_port, s.orchestrator.metrics_port},
        "processor": {s.processor.metrics_port},
    }[command]
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert set(named.values()) <= bound, f"{name} exposes ports nothing binds"
    for probe in ("readinessProbe", "livenessProbe"):
        port = container.get(probe, {}).get("httpGet", {}).get("port")
        if port is not None:
            assert named.get(port, port) in bound, f"{name} {probe} on a port nothing serves"


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_every_workload_logs_in_to_every_cluster_as_one_acl_role(
    name: str, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = _settings_for(container, monkeypatch, tmp_path)
    assert s.environment == "production"
    clusters = s.kafka.configured()
    assert set(clusters) == {"primary", "rollout", "fallback"}
    users = {c.sasl_username for c in clusters.values()}
    assert len(users) == 1, f"{name} logs in as {users}"
    (user,) = users
    assert user in {username(role) for role in ROLES}, f"{name}: {user} has no ACLs"
    secrets = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for env in container["env"]
        if env["name"].endswith("__SASL_PASSWORD")
    }
    assert secrets == {f"eventgw-kafka-{user.removeprefix('eventgw-')}"}


# The internal gRPC tokens each command uses (docs/security.md): the server's own, or the
# one it presents to the server it calls; none else (a processor cannot call the publisher).
_TOKENS_OF = {
    "publisher": {"publisher"},
    "ingest": {"publisher"},
    "orchestrator": {"orchestrator"},
    "processor": {"orchestrator"},
    "failed-writes": set(),
}


INGEST = [(n, c) for n, c in CONTAINERS if c["args"][-1] == "ingest"]


@pytest.mark.parametrize(("name", "container"), INGEST, ids=[n for n, _ in INGEST])
def test_ingest_reads_its_keys_and_certificate_from_secrets(
    name: str, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Production beyond loopback needs keys and TLS: their files are mounted Secrets."""
    s = _settings_for(container, monkeypatch, tmp_path).ingest
    assert s.tenant_keys_file is not None
    assert s.tls is not None
    (workload,) = [
        d for d in _documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name
    ]
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in (s.tenant_keys_file, s.tls.cert_file, s.tls.key_file):
        mount = next((m for m in mounts if str(path).startswith(m + "/")), None)
        assert mount is not None, f"{name}: nothing mounts {path}"
        assert "secret" in volumes[mounts[mount]], f"{name}: {path} is not from a Secret"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", f"{name} {probe} is plain HTTP"


UNPRIVILEGED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_every_container_holds_the_internal_tokens_it_uses_and_no_other(
    name: str, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = _settings_for(container, monkeypatch, tmp_path)
    assert s.environment == "production", "no token is made for a production pod"
    command = build_parser().parse_args(container["args"]).command
    needs = set() if command == "ingest" and s.ingest.embedded_publisher else _TOKENS_OF[command]
    held = {audience for audience in AUDIENCES if s.internal_auth.has_token(audience)}
    assert held == needs, name


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_every_container_runs_unprivileged_on_a_read_only_root(
    name: str, container: dict[str, Any]
) -> None:
    sc = container.get("securityContext", {})
    for field, wanted in UNPRIVILEGED.items():
        assert sc.get(field) == wanted, f"{name}: securityContext.{field} is {sc.get(field)!r}"
    # runAsNonRoot alone refuses to start an image whose user is a name or root: a number.
    assert isinstance(sc.get("runAsUser"), int), f"{name}: runAsUser must be a number"
    assert sc["runAsUser"] > 0, f"{name}: runAsUser 0 is root"
    assert not sc.get("privileged", False), f"{name} is privileged"
    # Without NET_BIND_SERVICE a non-root process cannot bind below 1024.
    low = [p["containerPort"] for p in container.get("ports", []) if p["containerPort"] < 1024]
    assert not low, f"{name} exposes ports below 1024: {low}"


def test_no_pod_overrides_its_containers_into_root() -> None:
    for doc in _documents():
        if doc["kind"] in WORKLOADS:
            pod = _pod_spec(doc)
            sc = pod.get("securityContext", {})
            name = doc["metadata"]["name"]
            assert sc.get("runAsUser", 1) != 0, f"{name}: the pod runs as root"
            assert sc.get("runAsNonRoot", True) is True, f"{name}: the pod allows root"
            assert not pod.get("hostNetwork"), f"{name} shares the node's network"
            assert not pod.get("hostPID"), f"{name} shares the node's processes"


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_the_spool_is_on_a_writable_volume_not_the_read_only_root(
    name: str, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Whichever container may write the spool (no S3 bucket) writes it to an emptyDir."""
    s = _settings_for(container, monkeypatch, tmp_path)
    command = build_parser().parse_args(container["args"]).command
    writes_spool = command == "publisher" or (command == "ingest" and s.ingest.embedded_publisher)
    if not writes_spool:
        return
    spool = s.backup.spool_dir
    assert spool.is_absolute(), f"{name}: backup.spool_dir {spool} is relative to the workdir"
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if spool == Path(m["mountPath"]) or Path(m["mountPath"]) in spool.parents
    ]
    assert mounts, f"{name}: nothing is mounted at {spool}: the root filesystem is read-only"
    (mount,) = mounts
    assert not mount.get("readOnly", False), f"{name}: {mount['mountPath']} is read-only"
    (workload,) = [
        d for d in _documents() if d["kind"] in WORKLOADS and d["metadata"]["name"] == name
    ]
    volumes = {v["name"]: v for v in _pod_spec(workload)["volumes"]}
    volume = volumes[mount["name"]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume, (
        f"{name}: {mount['name']} is not a writable volume: {volume}"
    )
