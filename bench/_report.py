"""Statistics, the machine description, the results table and the JSON record of a run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import confluent_kafka
import google.protobuf
import grpc
from google.protobuf.internal import api_implementation

import eventgw

if TYPE_CHECKING:
    from collections.abc import Sequence

SCENARIO_COMPONENTS = ("ingest", "publisher", "client", "broker")
# The co-located process does the work of both; the table shows it in the ingest column.
_SHOWN_AS = {"colocated": "ingest", "workers": "ingest"}


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    """Median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def summarize_rounds(
    rounds: list[dict[str, Any]], scenarios: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Medians over rounds per scenario, and ratios against the raw producer."""
    by: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios}
    for r in rounds:
        by[r["scenario"]].append(r)
    raw = median([r["events_per_s"] for r in by["raw-producer"]])
    raw_cpu = median([sum(r["cpu_s_per_100k"].values()) for r in by["raw-producer"]])
    out: dict[str, dict[str, Any]] = {}
    for scenario, runs in by.items():
        if not runs:
            continue
        eps = median([r["events_per_s"] for r in runs])
        components = {c for r in runs for c in r["cpu_s_per_100k"]}
        out[scenario] = {
            "events_per_s": eps,
            "ratio_vs_raw": eps / raw,
            "per_round_ratio_vs_raw": [
                r["events_per_s"] / raw_r["events_per_s"]
                for r, raw_r in zip(runs, by["raw-producer"], strict=False)
            ],
            **{
                k: median([r[k] for r in runs])
                for k in ("batch_p50_ms", "batch_p99_ms", "record_p50_ms", "record_p99_ms")
            },
            "cpu_s_per_100k": {
                c: median([r["cpu_s_per_100k"][c] for r in runs]) for c in sorted(components)
            },
            # raw CPU / this scenario's CPU per event (client + gateway + broker): the ratio
            # the machine's cores allow when CPU is the bottleneck, and less noise-prone.
            "cpu_efficiency_vs_raw": raw_cpu
            / median([sum(r["cpu_s_per_100k"].values()) for r in runs]),
            "foreign_cpu_s_median": median([r["noise"]["foreign_cpu_s"] for r in runs]),
            "cpu_pressure_pct_median": median([r["noise"]["cpu_pressure_pct"] for r in runs]),
        }
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cmd(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, load, and the versions of everything on the path."""
    cpuinfo = _read("/proc/cpuinfo")
    models = [
        ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")
    ]
    mem_kb = next(
        (
            int(ln.split()[1])
            for ln in _read("/proc/meminfo").splitlines()
            if ln.startswith("MemTotal")
        ),
        0,
    )
    java = _cmd(["java", "-version"]).splitlines()
    commit = _cmd(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(_cmd(["git", "status", "--porcelain", "--untracked-files=no", "src"]))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": models[0] if models else platform.processor(),
        "mem_total_gib": round(mem_kb / (1 << 20), 1),
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "grpcio": grpc.__version__,
        "protobuf": f"{google.protobuf.__version__} ({api_implementation.Type()})",
        "java": java[0] if java else "",
        "git_commit": commit + ("+dirty-src" if dirty else ""),
        "eventgw_source": str(Path(eventgw.__file__).parent),
    }


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"  # NaN check without math


def table(summary: dict[str, dict[str, Any]]) -> str:
    """The Markdown results table (medians over rounds)."""
    head = (
        "| scenario | events/s | vs raw | batch ack p50 ms | p99 ms | record ack p50 ms | p99 ms "
        "| CPU-s/100k ingest | publisher | client | broker | total |"
    )
    rows = [head, "|" + "---|" * 12]
    for name, s in summary.items():
        cpu = {_SHOWN_AS.get(k, k): v for k, v in s["cpu_s_per_100k"].items()}
        rows.append(
            f"| {name} | {_fmt(s['events_per_s'], 0)} | {_fmt(s['ratio_vs_raw'], 2)} "
            f"| {_fmt(s['batch_p50_ms'])} | {_fmt(s['batch_p99_ms'])} "
            f"| {_fmt(s['record_p50_ms'])} | {_fmt(s['record_p99_ms'])} "
            + "".join(f"| {_fmt(cpu.get(c, float('nan')), 2)} " for c in SCENARIO_COMPONENTS)
            + f"| {_fmt(sum(v for v in cpu.values() if v == v), 2)} |"
        )
    return "\n".join(rows)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write the run record (NaN becomes null)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(o: Any) -> Any:
        if isinstance(o, float) and o != o:
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    path.write_text(json.dumps(clean(record), indent=2) + "\n")
