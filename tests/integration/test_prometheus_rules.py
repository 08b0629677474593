"""The alert rules and the dashboard's queries, checked with Prometheus's own code.

`scripts/promcheck` runs tools/promcheck (Prometheus's rule parser and PromQL engine;
promtool itself costs over 12 minutes to build cold here, see docs/operations.md) and
builds it on first use. Checked:

- deploy/prometheus/alerts.yml is a valid rules file (what ``promtool check rules`` checks);
- every dashboard panel's query is valid PromQL, as a recording rule in a temporary file
  (Grafana's ``$__rate_interval`` / ``$__range`` replaced by durations);
- every metric either selects is in src/eventgw/metrics/names.py (names taken from the
  parsed expressions, so a typo fails here);
- the alerts fire on the series they are meant for, and not on healthy ones.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from eventgw import docs_gen
from eventgw.metrics.names import MetricName

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventgw-mission-control.json"
PROMCHECK = ROOT / "scripts" / "promcheck"

# Grafana's built-in interval variables, as Grafana would expand them for a 15 s scrape.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "3h", "$__interval": "15s"}
# Series Prometheus itself makes, not eventgw.
PROMETHEUS_SERIES = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

# The first test builds the checker (about 70 s cold here, more on a busy machine).
pytestmark = pytest.mark.timeout(900)


def promcheck(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROMCHECK), *map(str, args)], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    """Build the checker once (first use: about a minute, then cached)."""
    result = promcheck("rules", ALERTS)
    assert result.returncode in (0, 1), result.stderr


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, query) of every target, Grafana variables expanded."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unknown Grafana variable in {panel['title']!r}: {expr}"
            out.append((panel["title"], expr))
    return out


def as_recording_rules(exprs: list[tuple[str, str]], path: Path) -> dict[str, str]:
    """Write ``exprs`` as recording rules; returns record name → panel title."""
    names = {f"dashboard:panel_{i}": title for i, (title, _) in enumerate(exprs)}
    rules = [{"record": f"dashboard:panel_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return names


def unknown_metrics(rules_file: Path) -> dict[str, list[str]]:
    """Rule → the metric names it selects that names.py does not have."""
    result = promcheck("names", rules_file)
    assert result.returncode == 0, result.stderr
    known = set(get_args(MetricName)) | PROMETHEUS_SERIES
    histograms = set(re.findall(r"^\| `(\w+)` \| histogram,", docs_gen.metrics(), re.M))
    assert "eventgw_orchestrator_ack_latency_seconds" in histograms

    def exists(name: str) -> bool:
        if name in known:
            return True
        bases = {name.removesuffix(s) for s in HISTOGRAM_SUFFIXES} - {name}
        return bool(bases & histograms)

    return {
        rule: bad
        for rule, names in json.loads(result.stdout).items()
        if (bad := [n for n in names if not exists(n)])
    }


# -- validity --------------------------------------------------------------------------------


def test_the_alert_rules_are_valid() -> None:
    result = promcheck("rules", ALERTS)
    assert result.returncode == 0, result.stderr
    assert "SUCCESS" in result.stdout


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    rules = tmp_path / "dashboard.yml"
    as_recording_rules(exprs, rules)
    result = promcheck("rules", rules)
    assert result.returncode == 0, result.stderr


def test_the_checker_rejects_a_bad_query_and_a_bad_template(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "g",
                        "rules": [
                            {"alert": "A", "expr": "sum by (class (x)"},
                            {
                                "alert": "B",
                                "expr": "up == 0",
                                "annotations": {"summary": "{{ $labels.job "},
                            },
                        ],
                    }
                ]
            }
        )
    )
    result = promcheck("rules", bad)
    assert result.returncode == 1
    assert "FAILED" in result.stderr
    assert "parse error" in result.stderr
    assert "template" in result.stderr


# -- names ------------------------------------------------------------------------------------


def test_every_metric_the_alerts_use_is_in_names_py() -> None:
    assert unknown_metrics(ALERTS) == {}


def test_every_metric_the_dashboard_uses_is_in_names_py(tmp_path: Path) -> None:
    rules = tmp_path / "dashboard.yml"
    titles = as_recording_rules(dashboard_exprs(), rules)
    bad = {titles[rule]: names for rule, names in unknown_metrics(rules).items()}
    assert bad == {}


def test_a_misspelt_metric_is_caught(tmp_path: Path) -> None:
    rules = tmp_path / "typo.yml"
    as_recording_rules(
        [
            ("typo", 'sum(rate(eventgw_orchestrator_procesed_total{slo="met"}[5m]))'),
            ("histogram", "eventgw_orchestrator_ack_latency_seconds_bucket"),
            ("not a histogram", "eventgw_orchestrator_buffer_bytes_bucket"),
            ("a gauge in seconds", "eventgw_orchestrator_slo_seconds_count"),
        ],
        rules,
    )
    assert unknown_metrics(rules) == {
        "dashboard:panel_0": ["eventgw_orchestrator_procesed_total"],
        "dashboard:panel_2": ["eventgw_orchestrator_buffer_bytes_bucket"],
        "dashboard:panel_3": ["eventgw_orchestrator_slo_seconds_count"],
    }


# -- behaviour --------------------------------------------------------------------------------


def firing(tmp_path: Path, series: list[dict[str, str]], times: list[str]) -> dict[str, Any]:
    """Alert name → label sets firing, per time (the labels the alert keeps, no severity)."""
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"rule_files": [str(ALERTS)], "interval": "1m", "series": series, "times": times}
        )
    )
    result = promcheck("alerts", spec)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = {}
    for at, alerts in json.loads(result.stdout).items():
        fired: dict[str, list[dict[str, str]]] = {}
        for a in alerts:
            labels = {k: v for k, v in a["labels"].items() if k not in ("alertname", "severity")}
            fired.setdefault(a["alert"], []).append(labels)
        out[at] = fired
    return out


def counter(name: str, labels: str, per_min: float, minutes: int = 90) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": f"0+{per_min}x{minutes}"}


def test_slo_attainment_low_fires_per_class_for_the_normal_tier_only(tmp_path: Path) -> None:
    name = "eventgw_orchestrator_processed_total"
    series = [
        # P30: 95 % within SLO. P20: 100 %. P10 offloaded: 50 % (by design, no page).
        counter(name, 'class="P30",tier="normal",slo="met"', 95),
        counter(name, 'class="P30",tier="normal",slo="missed"', 5),
        counter(name, 'class="P20",tier="normal",slo="met"', 100),
        counter(name, 'class="P20",tier="normal",slo="missed"', 0),
        counter(name, 'class="P10",tier="offloaded",slo="met"', 50),
        counter(name, 'class="P10",tier="offloaded",slo="missed"', 50),
    ]
    got = firing(tmp_path, series, ["5m", "45m"])
    assert "EventgwSloAttainmentLow" not in got["5m"]  # 10 minutes of "for" not yet over
    assert got["45m"] == {"EventgwSloAttainmentLow": [{"class": "P30"}]}


def test_serious_congestion_fires_at_once_and_no_workers_after_two_minutes(tmp_path: Path) -> None:
    series = [
        {"series": 'eventgw_ingest_serious_congestion{instance="i1"}', "values": "0 0 1x10"},
        {"series": 'eventgw_ingest_slo_decrements_per_minute{class="P10"}', "values": "0x12"},
        # Orchestrator a: ready tasks and no worker; b: ready tasks and a worker.
        {
            "series": 'eventgw_orchestrator_class_tasks{instance="a",class="P20",state="ready"}',
            "values": "5x12",
        },
        {"series": 'eventgw_orchestrator_worker_sessions{instance="a"}', "values": "1 1 0x10"},
        {
            "series": 'eventgw_orchestrator_class_tasks{instance="b",class="P20",state="ready"}',
            "values": "5x12",
        },
        {"series": 'eventgw_orchestrator_worker_sessions{instance="b"}', "values": "1x12"},
    ]
    got = firing(tmp_path, series, ["1m", "2m", "3m", "4m"])
    assert got["1m"] == {}
    assert got["2m"] == {"EventgwSeriousCongestion": [{}]}
    assert got["3m"] == {"EventgwSeriousCongestion": [{}]}
    assert got["4m"] == {
        "EventgwSeriousCongestion": [{}],
        "EventgwNoWorkersConnected": [{"instance": "a"}],
    }


def test_queue_age_dlq_and_component_down(tmp_path: Path) -> None:
    series = [
        # P10 waited 11 min of 20 (past half): fires after 5 min; P30 at 1 s of 5 does not.
        {
            "series": 'eventgw_orchestrator_oldest_ready_age_seconds{instance="a",class="P10"}',
            "values": "660x10",
        },
        {
            "series": 'eventgw_orchestrator_slo_seconds{instance="a",class="P10"}',
            "values": "1200x10",
        },
        {
            "series": 'eventgw_orchestrator_oldest_ready_age_seconds{instance="a",class="P30"}',
            "values": "1x10",
        },
        {"series": 'eventgw_orchestrator_slo_seconds{instance="a",class="P30"}', "values": "5x10"},
        {"series": 'eventgw_orchestrator_late_tasks{instance="a",class="P30"}', "values": "0x10"},
        # Dead letters in lane p20 only; p10's counter is flat.
        counter("eventgw_orchestrator_dead_lettered_total", 'instance="a",lane="p20"', 2, 10),
        counter("eventgw_orchestrator_dead_lettered_total", 'instance="a",lane="p10"', 0, 10),
        {"series": 'up{job="eventgw-ingest",instance="x:8080"}', "values": "1 1 0x8"},
        {"series": 'up{job="eventgw-publisher",instance="x:9102"}', "values": "1x10"},
    ]
    got = firing(tmp_path, series, ["3m", "5m"])
    assert got["3m"] == {"EventgwDlqGrowing": [{"lane": "p20"}]}
    assert got["5m"] == {
        "EventgwDlqGrowing": [{"lane": "p20"}],
        "EventgwQueueAgingPastHalfSlo": [{"class": "P10"}],
        "EventgwComponentDown": [{"job": "eventgw-ingest", "instance": "x:8080"}],
    }


def test_hostile_input_alerts_fire_per_reason_on_their_counters_only(tmp_path: Path) -> None:
    series = [
        counter("eventgw_recovery_backup_rejected_total", 'reason="bad_signature"', 1, 10),
        counter("eventgw_recovery_backup_rejected_total", 'reason="record_crc"', 0, 10),
        counter(
            "eventgw_orchestrator_invalid_records_total",
            'source="response",action="skipped"',
            3,
            10,
        ),
        counter(
            "eventgw_orchestrator_invalid_records_total",
            'source="lane",action="dead_lettered"',
            0,
            10,
        ),
        counter("eventgw_ingest_flow_control_invalid_total", 'instance="i1"', 0, 10),
    ]
    got = firing(tmp_path, series, ["0m", "5m"])
    assert got["0m"] == {}
    assert got["5m"] == {
        "EventgwBackupRejected": [{"reason": "bad_signature"}],
        "EventgwInvalidRecords": [{"source": "response", "action": "skipped"}],
    }
    series[-1] = counter("eventgw_ingest_flow_control_invalid_total", 'instance="i1"', 1, 10)
    assert firing(tmp_path, series[-1:], ["5m"])["5m"] == {"EventgwFlowControlInvalid": [{}]}
