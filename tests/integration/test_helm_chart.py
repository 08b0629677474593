"""The Helm chart (deploy/helm/eventgw), rendered by helm and checked by kubeconform.

`scripts/k8s-tools` installs helm and kubeconform with ``go install`` on first use (about
1.5 minutes cold, then cached) and generates kubeconform's strict schemas from the
Kubernetes module's OpenAPI document. No cluster runs here: what is checked is that
``helm template`` renders every workload, that each object is valid Kubernetes (unknown
fields refused), that what each container would load validates as eventgw settings with
the ports it exposes and probes bound, that the orchestrator's index is its ordinal and its
fleet comes from the values (decided by eventgw's own `assign_fleet`), and that bad values
stop the render with an error naming the value.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventgw.cli.main import build_parser
from eventgw.config.dynamic import parse_dynamic_config
from eventgw.config.fleets import assign_fleet, orchestrator_addresses
from eventgw.config.settings import EventGwSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "eventgw"
K8S_TOOLS = ROOT / "scripts" / "k8s-tools"
KUBE_VERSION = "1.36.3"  # scripts/k8s-tools KUBERNETES_VERSION
SECRET = "secret-from-kubernetes-32-characters"
TOKENS_OF = {
    "rel-ingest": {"publisher"},
    "rel-publisher": {"publisher"},
    "rel-failed-writes": set(),
    "rel-orchestrator": {"orchestrator"},
    "rel-processor": {"orchestrator"},
}
FLEETS = ("orchestrator.replicas=4", "dynamic.rolloutOrchestratorIndexes={2,3}")

# The first test builds the tools (about 1.5 minutes cold, more on a busy machine).
pytestmark = pytest.mark.timeout(900)


def k8s_tools(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(K8S_TOOLS), *args], input=stdin, capture_output=True, text=True, timeout=900
    )


def helm_template(*sets: str) -> subprocess.CompletedProcess[str]:
    args = ["template", "rel", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    return k8s_tools("helm", *args)


def render(*sets: str) -> tuple[str, list[dict[str, Any]]]:
    result = helm_template(*sets)
    assert result.returncode == 0, result.stderr
    return result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return by_kind(docs, "Deployment") | by_kind(docs, "StatefulSet")


def container_settings(
    docs: list[dict[str, Any]],
    container: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp: Path,
    index: int = 0,
) -> EventGwSettings:
    """The settings ``container`` would load: the ConfigMap's TOML plus its environment."""
    toml = by_kind(docs, "ConfigMap")["rel-settings"]["data"]["settings.toml"]
    settings_file = tmp / "settings.toml"
    settings_file.write_text(toml)
    for name in [n for n in os.environ if n.startswith("EVENTGW_")]:
        monkeypatch.delenv(name)
    for env in container.get("env", []):
        value = env.get("value")
        if value is None:  # valueFrom: a Secret, or the pod's ordinal
            field = env["valueFrom"].get("fieldRef", {}).get("fieldPath", "")
            value = str(index) if "pod-index" in field else SECRET
        monkeypatch.setenv(env["name"], str(value))
    return load_settings(settings_file)


@pytest.fixture(scope="module")
def default_render() -> tuple[str, list[dict[str, Any]]]:
    """The chart with its default values (builds the tools on first use)."""
    return render()


def test_every_object_is_valid_kubernetes_and_the_checker_refuses_an_unknown_field(
    default_render: tuple[str, list[dict[str, Any]]],
) -> None:
    text, docs = default_render
    checked = k8s_tools("kubeconform", "-", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"Valid: {len(docs)}, Invalid: 0, Errors: 0, Skipped: 0" in checked.stdout
    other, other_docs = render(
        *FLEETS, "secrets.create=true", "secrets.backupHmacKey=" + SECRET,
        *(f"secrets.kafkaPasswords.{r}=pw" for r in ("ingest", "publisher", "failed-writes",
                                                     "orchestrator", "processor")),
        *(f"secrets.internalTokens.{a}=" + SECRET for a in ("publisher", "orchestrator")),
        "processor.autoscaling.enabled=false", "kafka.fallback=",
    )  # fmt: skip
    checked = k8s_tools("kubeconform", "-", stdin=other)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(by_kind(other_docs, "Secret")) == 7  # 5 Kafka logins, backup, internal auth
    typo = text.replace(
        "podManagementPolicy: Parallel", "podManagementPolicy: Parallel\n  replica: 3"
    )
    refused = k8s_tools("kubeconform", "-", stdin=typo)
    assert refused.returncode == 1
    assert "additional properties 'replica' not allowed" in refused.stdout


def test_every_component_runs_with_probes_resources_a_pdb_and_the_hpas(
    default_render: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = default_render
    names = {
        "rel-ingest": "ingest",
        "rel-publisher": "publisher",
        "rel-failed-writes": "failed-writes",
        "rel-orchestrator": "orchestrator",
        "rel-processor": "processor",
    }
    assert set(workloads(docs)) == set(names)
    assert by_kind(docs, "StatefulSet").keys() == {"rel-orchestrator"}
    for name, workload in workloads(docs).items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert build_parser().parse_args(container["args"]).command == names[name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["resources"]["requests"]["cpu"], name
        assert container["resources"]["limits"]["memory"], name
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == set(names)
    for name, pdb in pdbs.items():
        labels = workloads(docs)[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"rel-ingest", "rel-publisher", "rel-processor"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert "replicas" not in workloads(docs)[name]["spec"], "the HPA owns the count"
    assert set(by_kind(docs, "Secret")) == set(), "existing Secrets by default"


def test_each_container_loads_valid_settings_and_binds_what_it_exposes_and_probes(
    default_render: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, docs = default_render
    for name, workload in workloads(docs).items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        s = container_settings(docs, container, monkeypatch, tmp_path)
        assert s.environment == "production"
        assert {c.sasl_username for c in s.kafka.configured().values()} == {
            "eventgw-" + name.removeprefix("rel-")
        }
        bound = {
            "rel-ingest": {s.ingest.http_port, s.ingest.grpc_port},
            "rel-publisher": {
                s.publisher.grpc_port,
                s.publisher.liveness_port,
                s.publisher.metrics_port,
            },
            "rel-failed-writes": {s.recovery.metrics_port},
            "rel-orchestrator": {s.orchestrator.grpc_port, s.orchestrator.metrics_port},
            "rel-processor": {s.processor.metrics_port},
        }[name]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert set(ports.values()) <= bound, name
        for probe in ("readinessProbe", "livenessProbe"):
            assert ports[container[probe]["httpGet"]["port"]] in bound, (name, probe)
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/etc/eventgw/dynamic" in mounts, f"{name} cannot see dynamic-config edits"
        for path in (s.ingest.dynamic_config_path, s.orchestrator.dynamic_config_path):
            assert path == Path("/etc/eventgw/dynamic/dynamic.json")
        if name == "rel-ingest":
            assert s.ingest.publisher_target == "dns:///rel-publisher:50051"
        # The internal tokens it checks or presents, no other (docs/security.md).
        held = {a for a in ("publisher", "orchestrator") if s.internal_auth.has_token(a)}
        assert held == TOKENS_OF[name], name
        sc = container["securityContext"]
        assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"]) == (True, True), name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
    assert "rel-publisher" in by_kind(docs, "Service")


def test_the_orchestrator_index_is_the_ordinal_and_its_fleet_comes_from_the_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, docs = render(*FLEETS)
    sts = by_kind(docs, "StatefulSet")["rel-orchestrator"]
    assert sts["spec"]["replicas"] == 4
    service = by_kind(docs, "Service")[sts["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    (index_env,) = [e for e in container["env"] if e["name"] == "EVENTGW_ORCHESTRATOR__INDEX"]
    assert index_env["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    dynamic = by_kind(docs, "ConfigMap")["rel-dynamic"]["data"]["dynamic.json"]
    assert json.loads(dynamic)["rollout_orchestrator_indexes"] == [2, 3]
    config = parse_dynamic_config(dynamic)
    fleets = []
    for ordinal in range(4):
        s = container_settings(docs, container, monkeypatch, tmp_path, index=ordinal)
        assert (s.orchestrator.index, s.orchestrator.number_of_replicas) == (ordinal, 4)
        fleets.append(assign_fleet(s, config).name)
    assert fleets == ["primary", "primary", "rollout", "rollout"]
    (processor,) = by_kind(docs, "Deployment")["rel-processor"]["spec"]["template"]["spec"][
        "containers"
    ]
    s = container_settings(docs, processor, monkeypatch, tmp_path)
    assert orchestrator_addresses(s) == [
        f"rel-orchestrator-{i}.rel-orchestrator:50052" for i in range(4)
    ], "the pods' stable names, both fleets"


def test_a_rollout_step_edits_only_the_dynamic_config_map() -> None:
    """Raising the share is live (no pod restarts); a static setting restarts the pods."""
    _, before = render()
    _, step = render("dynamic.eventGatewayClusterRollout=50")
    _, static = render('extraSettingsToml=[observability]\nlog_level = "DEBUG"')

    def annotations(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            n: w["spec"]["template"]["metadata"]["annotations"] for n, w in workloads(docs).items()
        }

    assert annotations(step) == annotations(before)
    assert (
        json.loads(by_kind(step, "ConfigMap")["rel-dynamic"]["data"]["dynamic.json"])[
            "event_gateway_cluster_rollout"
        ]
        == 50
    )
    changed = annotations(static)
    assert all(
        changed[n]["checksum/settings"] != a["checksum/settings"]
        for n, a in annotations(before).items()
    )
    toml = by_kind(static, "ConfigMap")["rel-settings"]["data"]["settings.toml"]
    assert tomllib.loads(toml)["observability"]["log_level"] == "DEBUG"


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (("dynamic.rolloutOrchestratorIndexes={3}",), "dynamic.rolloutOrchestratorIndexes: 3"),
        (("dynamic.rolloutOrchestratorIndexes={0,1,2}",), "lists every replica"),
        (("dynamic.rolloutOrchestratorIndexes={1}", "kafka.rollout="), "needs kafka.rollout"),
        (("kafka.activeClusterFleet=secondary",), "kafka.activeClusterFleet"),
        (("dynamic.eventGatewayClusterRollout=150",), "dynamic.eventGatewayClusterRollout"),
        (("secrets.create=true",), "secrets.kafkaPasswords.ingest"),
        (("processor.handler=",), "processor.handler"),
    ],
)
def test_bad_values_stop_the_render_naming_the_value(sets: tuple[str, ...], named: str) -> None:
    result = helm_template(*sets)
    assert result.returncode == 1
    assert result.stdout == ""
    assert named in result.stderr


def test_internal_grpc_ports_admit_only_their_callers(
    default_render: tuple[str, list[dict[str, Any]]],
) -> None:
    """The publisher's gRPC port only from ingest pods, the orchestrators' only from processor
    pods (docs/security.md); probes and Prometheus still reach the status ports."""
    _, docs = default_render
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == {"rel-publisher", "rel-orchestrator"}
    for name, caller, grpc_port, open_ports in (
        ("rel-publisher", "ingest", 50051, {50099, 9102}),
        ("rel-orchestrator", "processor", 50052, {9103}),
    ):
        spec = policies[name]["spec"]
        target = workloads(docs)[name]["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= target.items(), name
        assert spec["policyTypes"] == ["Ingress"]
        restricted, opened = spec["ingress"]
        assert [p["port"] for p in restricted["ports"]] == [grpc_port], name
        (source,) = restricted["from"]
        assert source["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == caller
        assert "from" not in opened, name
        assert {p["port"] for p in opened["ports"]} == open_ports, name
        (container,) = workloads(docs)[name]["spec"]["template"]["spec"]["containers"]
        exposed = {p["containerPort"] for p in container["ports"]}
        assert exposed == open_ports | {grpc_port}, f"{name}: a port the policy does not name"
    _, with_operators = render("networkPolicies.operatorNamespaces={ops}")
    policy = by_kind(with_operators, "NetworkPolicy")["rel-orchestrator"]["spec"]
    sources = policy["ingress"][0]["from"]
    assert sources[1:] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
    ]
    _, without = render("networkPolicies.enabled=false")
    assert by_kind(without, "NetworkPolicy") == {}
