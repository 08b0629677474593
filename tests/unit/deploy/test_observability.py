"""The dashboard, the alerts and their provisioning fit together and fit the docs.

Static checks (no Prometheus, no Grafana here): every alert names a runbook entry of
docs/operations.md and every entry has an alert; the dashboard is a well-formed Grafana
model that shows the mission-control view; the provisioning files and the Prometheus
configuration point at what the repository ships. The queries themselves are checked with
Prometheus's parser and engine in tests/integration/test_prometheus_rules.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from eventgw.config.settings import (
    IngestSettings,
    OrchestratorSettings,
    ProcessorSettings,
    PublisherSettings,
    RecoverySettings,
)

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "eventgw-mission-control.json"
OPERATIONS = ROOT / "docs" / "operations.md"
MANUAL_ENTRIES = {
    "Retry records lost or skipped",  # found after an incident, not alertable
    "Fleet warnings",  # read in the logs right after an operator's fleet change
}


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for g in groups for rule in g["rules"]]


def runbook_entries() -> dict[str, str]:
    """Entry name → its text, from the bullet list under "## Runbook"."""
    text = OPERATIONS.read_text().split("## Runbook", 1)[1].split("\n## ", 1)[0]
    entries: dict[str, str] = {}
    for m in re.finditer(r"^- \*\*(.+?)\*\*(.*?)(?=^- \*\*|\Z)", text, re.M | re.S):
        entries[m.group(1)] = m.group(2)
    return entries


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_every_alert_names_a_runbook_entry_that_names_it_back() -> None:
    entries = runbook_entries()
    for rule in alerts():
        entry = rule["annotations"]["runbook"]
        assert entry in entries, f"{rule['alert']}: no runbook entry {entry!r}"
        assert f"`{rule['alert']}`" in entries[entry], f"entry {entry!r} does not name it"


def test_every_runbook_entry_has_an_alert() -> None:
    named = {rule["annotations"]["runbook"] for rule in alerts()}
    assert set(runbook_entries()) - named == MANUAL_ENTRIES


def test_every_alert_has_a_severity_and_a_summary() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        assert rule["alert"].startswith("Eventgw")
        assert rule["labels"]["severity"] in ("page", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_dashboard_is_a_well_formed_grafana_model() -> None:
    d = dashboard()
    assert d["uid"] == "eventgw-mission-control"
    [variable] = d["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{p['title']!r} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        assert p["description"], p["title"]


def test_the_dashboard_shows_the_mission_control_view() -> None:
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    for needed in (
        'eventgw_orchestrator_processed_total{slo="met"}',  # attainment per class
        "eventgw_orchestrator_oldest_ready_age_seconds / eventgw_orchestrator_slo_seconds",
        "eventgw_ingest_slo_capacity_events_per_second",  # AIMD capacity
        "eventgw_ingest_slo_decrements_per_minute",
        "eventgw_ingest_serious_congestion",
        "eventgw_ingest_offloaded_total",  # offload volume
        "eventgw_ingest_hot_companies",
        'eventgw_ingest_events_total{status="deferred"}',  # door deferrals
        'eventgw_publisher_events_total{status=~"failed_writes|backed_up|failed"}',
        "eventgw_recovery_backup_objects",
        "eventgw_orchestrator_dead_lettered_total",  # DLQ rate
        "eventgw_orchestrator_ack_latency_seconds_bucket",
        "eventgw_processor_start_latency_seconds_bucket",
    ):
        assert needed in exprs, needed
    thresholds = [
        step["value"]
        for p in dashboard()["panels"]
        if p["title"] == "Capacity decrements per minute"
        for step in p["fieldConfig"]["defaults"]["thresholds"]["steps"]
    ]
    assert 10 in thresholds  # the serious-congestion threshold is drawn


def test_grafana_provisioning_loads_the_dashboard_from_files() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/eventgw.yaml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/eventgw"
    assert list((GRAFANA / "dashboards").glob("*.json")) == [DASHBOARD]
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"


def test_the_prometheus_config_loads_the_alerts_and_scrapes_every_component() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert [PROMETHEUS.parent / f for f in config["rule_files"]] == [ALERTS]
    ports = {  # the defaults (not EventGwSettings(): it would read EVENTGW_* variables)
        "eventgw-ingest": IngestSettings().http_port,
        "eventgw-publisher": PublisherSettings().metrics_port,
        "eventgw-failed-writes": RecoverySettings().metrics_port,
        "eventgw-orchestrator": OrchestratorSettings().metrics_port,
        "eventgw-processor": ProcessorSettings().metrics_port,
    }
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert jobs == {name: [f"127.0.0.1:{port}"] for name, port in ports.items()}
