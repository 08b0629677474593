"""Read-path benchmark: Kafka → orchestrator → processors, against plain consumers.

Run: ``.venv/bin/python -m bench.read_path [--scenario dispatch|isolation|loop|all] ...``
(``--help`` lists the knobs). It starts a private single-node broker on free ports (or uses
``--bootstrap``), a fresh uniquely named topic set per scenario, and the gateway's processes
as children configured by ``EVENTGW_*`` env vars (`bench._readstack`, `bench._stack`):

1. ``dispatch``: N records pre-loaded into the p30/p20/p10 lane topics (a third each); then
   a plain confluent-kafka consumer (own group, committing every second) drains them
   (`bench._fifo` ``drain``), and the orchestrator with ``--processors`` no-op workers does
   the same (own group). Time runs from the first record handled to the moment the group's
   committed offsets reach the high watermarks. Reports events/s, the ratio, and CPU-s per
   100k events per process. ``--profile`` repeats the gateway run under py-spy.
2. ``isolation``: workers with a fixed per-event cost (``--iso-concurrency`` x
   ``--iso-cost-ms`` → a known capacity C per process), a P10 flood at ``--flood-x`` x C and a
   steady P30 stream at ``--p30-share`` x C for ``--duration-s``, produced at a steady rate
   and stamped at produce time; once for the gateway and once for a single-topic FIFO worker
   pool with the same workers and cost (`bench._fifo` ``fifo``). Reports per class the
   latency ingested_at → handler start (p50/p99/p99.9/max) and SLO attainment.
3. ``loop``: HTTP batches → ingest → publisher → Kafka → orchestrator → no-op processors →
   response topic → commit; events/s end to end and the CPU of every process.

Each scenario is verified (record counts, committed offsets, failed-writes, spool); a run
that does not balance is marked INVALID. Writes ``bench/results/read_path-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop

from bench import _load, _report
from bench._profile import PySpy, summarize
from bench._readstack import LANE_KEYS, Offsets, ReadPath, SteadyGenerator, base_env, preload
from bench._stack import (
    BenchBroker,
    CpuMeter,
    Gateway,
    bench_topics,
    create_topics,
    remove_tree,
)
from eventgw.core.envelope import SLO_SECONDS, Priority

_RESULTS_DIR = Path(__file__).resolve().parent / "results"
_REPO = Path(__file__).resolve().parent.parent
_PRIOS = (Priority.P30, Priority.P20, Priority.P10)
ISOLATION_GOAL_PCT = 99.9


def _fmt(v: float | None, d: int = 1) -> str:
    return "-" if v is None or v != v else f"{v:,.{d}f}"


def _wait_until(cond: Any, timeout_s: float, every_s: float = 0.02) -> float | None:
    """Poll ``cond()`` until true; return the monotonic time it became true, None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(every_s)
    return None


class Bench:
    """Shared state of one run: broker, offsets reader, workdir, the CPU of the broker."""

    def __init__(self, args: argparse.Namespace, broker: BenchBroker, workdir: Path) -> None:
        self.args = args
        self.broker = broker
        self.bootstrap = broker.bootstrap
        self.workdir = workdir
        self.offsets = Offsets(broker.bootstrap)

    def topics(self) -> Any:
        t = bench_topics(uuid.uuid4().hex[:10])
        create_topics(self.bootstrap, t.all_topics())
        return t

    def meter(self, pids: dict[str, int]) -> CpuMeter:
        if self.broker.pid is not None:
            pids = {**pids, "broker": self.broker.pid}
        return CpuMeter({**pids, "bench": __import__("os").getpid()})

    def lanes(self, topics: Any) -> list[str]:
        return [topics.lane_topic(k) for k in LANE_KEYS]

    def caught_up(self, group: str, topics: list[str]) -> bool:
        high = self.offsets.high(topics)
        committed = self.offsets.committed(group, topics)
        return all(committed.get(tp, 0) >= h for tp, h in high.items())


# -- 1. dispatch ------------------------------------------------------------------------


def _preload_lanes(b: Bench, topics: Any) -> dict[str, int]:
    n = b.args.events
    counts = {Priority.P30: n // 3, Priority.P20: n // 3, Priority.P10: n - 2 * (n // 3)}
    topic_of = {p: topics.lane_topic(p.name.lower()) for p in _PRIOS}
    t0 = time.monotonic()
    delivered = preload(b.bootstrap, topic_of, counts, b.args.payload_bytes)
    print(
        f"  preloaded {sum(delivered.values()):,} records in {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    return delivered


def dispatch_plain(b: Bench, topics: Any) -> dict[str, Any]:
    """The plain consumer drains the lane topics (own group), committing."""
    a = b.args
    lanes = b.lanes(topics)
    group = f"bench-plain-{uuid.uuid4().hex[:6]}"
    cpu0 = b.meter({}).sample()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench._fifo",
            "drain",
            "--bootstrap",
            b.bootstrap,
            "--group",
            group,
            "--topics",
            ",".join(lanes),
            "--expect",
            str(a.events),
            "--timeout-s",
            "150",
        ],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # The child reports its own CPU from the first record to the final commit.
    out, err = proc.communicate(timeout=200)
    cpu1 = b.meter({}).sample()
    problems = []
    try:
        res = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"system": "plain-consumer", "problems": [f"drain failed: {err.decode()[-500:]}"]}
    elapsed = res["done_s"] - res["first_s"]
    if res["records"] != a.events:
        problems.append(f"plain consumer read {res['records']} of {a.events}")
    if not b.caught_up(group, lanes):
        problems.append("plain consumer's committed offsets are below the high watermarks")
    per = 100_000 / a.events
    cpu = CpuMeter.delta(cpu0, cpu1)
    return {
        "system": "plain-consumer",
        "events": res["records"],
        "elapsed_s": round(elapsed, 3),
        "events_per_s": res["records"] / elapsed,
        "cpu_s_per_100k": {
            "consumer": res["cpu_s"] * per,
        },
        # the broker's CPU over the child's whole life (start-up and group join included)
        "broker_cpu_s_whole_life": cpu["broker"].total_s if "broker" in cpu else None,
        "problems": problems,
    }


def dispatch_eventgw(b: Bench, topics: Any, *, profile: bool = False) -> dict[str, Any]:
    """Orchestrator + no-op processors drain the lane topics; done when committed = HW."""
    a = b.args
    lanes = b.lanes(topics)
    group = f"bench-orch-{uuid.uuid4().hex[:6]}"
    rp = ReadPath(
        b.bootstrap,
        topics,
        b.workdir,
        group_id=group,
        handler="bench.handlers:noop",
        processors=a.processors,
        concurrency=a.concurrency,
        name=f"dispatch-{group}",
    )
    spies: dict[str, PySpy] = {}
    problems: list[str] = []
    try:
        rp.start()
        meter = b.meter(rp.pids())
        if profile:
            outdir = b.workdir / "profiles"
            outdir.mkdir(exist_ok=True)
            spies = {
                name: PySpy(pid, outdir / f"{name}.txt", native=False)
                for name, pid in rp.pids().items()
                if name in ("orchestrator", "processor0")
            }

        # Start: the first record the orchestrator consumed (buffered, served or ACKed).
        def started() -> bool:
            lns = rp.stats().get("lanes", [])
            return bool(sum(ln["buffered"] + ln["in_flight"] + ln["processed"] for ln in lns) > 0)

        t0 = _wait_until(started, 60, 0.005)
        cpu0 = meter.sample()
        if t0 is None:
            raise TimeoutError("orchestrator consumed nothing in 60 s:\n" + rp.log_tail("orch"))
        stats0 = rp.stats()
        t_acked = _wait_until(lambda: rp.processed_total() >= a.events, 150, 0.02)
        t_done = _wait_until(lambda: b.caught_up(group, lanes), 60, 0.05)
        cpu1 = meter.sample()
        processed = rp.processed()
        if t_acked is None or t_done is None:
            problems.append(f"not done: processed {processed}, committed below HW")
            t_done = t_done or time.monotonic()
            t_acked = t_acked or t_done
        if rp.processed_total() != a.events:
            problems.append(f"processed {rp.processed_total()} (ACKs) != {a.events} preloaded")
    finally:
        for spy in spies.values():
            spy.stop()
        rp.stop()
    cpu = CpuMeter.delta(cpu0, cpu1)
    per = 100_000 / a.events
    elapsed = t_done - t0
    out: dict[str, Any] = {
        "system": "eventgw" + ("-profiled" if profile else ""),
        "events": a.events,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": a.events / elapsed,
        "acked_elapsed_s": round(t_acked - t0, 3),
        "events_per_s_acked": a.events / (t_acked - t0),
        "consumed_at_start": sum(
            ln["buffered"] + ln["in_flight"] + ln["processed"] for ln in stats0.get("lanes", [])
        ),
        "cpu_s_per_100k": {
            "orchestrator": cpu["orchestrator"].total_s * per,
            "processors": sum(s.total_s for k, s in cpu.items() if k.startswith("processor")) * per,
            **({"broker": cpu["broker"].total_s * per} if "broker" in cpu else {}),
        },
        "cpu_threads_s": {k: s.threads_s for k, s in cpu.items()},
        "processed": processed,
        "problems": problems,
    }
    if spies:
        out["profile"] = {name: summarize(spy.output, top=15) for name, spy in spies.items()}
    return out


def _efficiency_round(b: Bench, r: int, nominal: float) -> dict[str, Any]:
    a = b.args
    topics = b.topics()
    n = a.eff_events
    counts = {Priority.P30: n // 3, Priority.P20: n // 3, Priority.P10: n - 2 * (n // 3)}
    preload(b.bootstrap, {p: topics.lane_topic(p.name.lower()) for p in _PRIOS}, counts, 256)
    rp = ReadPath(
        b.bootstrap,
        topics,
        b.workdir,
        group_id=f"bench-eff-{uuid.uuid4().hex[:6]}",
        handler="bench.handlers:fixed_cost",
        processors=a.eff_processors,
        concurrency=a.eff_concurrency,
        processor_env={"BENCH_HANDLER_COST_S": str(a.eff_cost_ms / 1000)},
        name=f"eff-{r}",
    )
    problems: list[str] = []
    try:
        rp.start()
        meter = b.meter(rp.pids())
        t20 = _wait_until(lambda: rp.processed_total() >= 0.2 * n, 120, 0.02)
        cpu0 = meter.sample()
        t80 = _wait_until(lambda: rp.processed_total() >= 0.8 * n, 120, 0.02)
        cpu1 = meter.sample()
        if t20 is None or t80 is None:
            problems.append(f"backlog not worked off: processed {rp.processed_total()}")
            t20, t80 = 0.0, 1.0
        if _wait_until(lambda: rp.processed_total() >= n, 120, 0.05) is None:
            problems.append(f"processed {rp.processed_total()} of {n}")
    finally:
        rp.stop()
    rate = 0.6 * n / (t80 - t20)
    cpu = CpuMeter.delta(cpu0, cpu1)
    per = 100_000 / (0.6 * n)
    return {
        "round": r,
        "events": n,
        "nominal_events_per_s": nominal,
        "events_per_s": rate,
        "efficiency": rate / nominal,
        "cpu_s_per_100k": {k: v.total_s * per for k, v in cpu.items()},
        "problems": problems,
    }


def run_efficiency(b: Bench) -> dict[str, Any]:
    """Dispatch efficiency: events handled per second / nominal worker capacity.

    A backlog of ``--eff-events`` records (a third per class) preloaded; ``--eff-processors``
    workers of ``--eff-concurrency`` slots run a handler that sleeps ``--eff-cost-ms``, so
    the nominal capacity is processors x concurrency / cost. The rate is taken over the
    middle of the run (from 20 % to 80 % of the backlog ACKed), where the workers are
    saturated: efficiency = that rate / nominal capacity (1.0: no slot ever idle).
    """
    a = b.args
    print("\n== dispatch efficiency ==", flush=True)
    nominal = a.eff_processors * a.eff_concurrency / (a.eff_cost_ms / 1000)
    runs = []
    for r in range(a.rounds):
        run = _efficiency_round(b, r, nominal)
        runs.append(run)
        print(
            f"  round {r}: {run['events_per_s']:,.0f} ev/s of nominal {nominal:,.0f}: "
            f"efficiency {run['efficiency']:.2f} "
            f"{'OK' if not run['problems'] else 'INVALID: ' + '; '.join(run['problems'])}",
            flush=True,
        )
    return {
        "runs": runs,
        "nominal_events_per_s": nominal,
        "efficiency_median": statistics.median(r["efficiency"] for r in runs),
        "problems": [p for r in runs for p in r["problems"]],
    }


def run_dispatch(b: Bench) -> dict[str, Any]:
    print("\n== dispatch throughput ==", flush=True)
    topics = b.topics()
    _preload_lanes(b, topics)
    runs = []
    for r in range(b.args.rounds):
        for fn in (dispatch_plain, dispatch_eventgw):
            res = fn(b, topics)
            res["round"] = r + 1
            runs.append(res)
            print(
                f"  round {r + 1} {res['system']:15s} {_fmt(res.get('events_per_s'), 0):>8} ev/s "
                f"{'OK' if not res['problems'] else 'INVALID: ' + '; '.join(res['problems'])}",
                flush=True,
            )
    profile = None
    if b.args.profile:
        ptopics = b.topics()
        _preload_lanes(b, ptopics)
        profile = dispatch_eventgw(b, ptopics, profile=True)
        print(f"  profiled eventgw {profile['events_per_s']:,.0f} ev/s", flush=True)
    return {"runs": runs, "profile": profile}


def dispatch_table(d: dict[str, Any]) -> str:
    rows = [
        "| system | events/s | vs plain | CPU-s/100k orchestrator or consumer | processors "
        "| broker |",
        "|---|---|---|---|---|---|",
    ]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in d["runs"]:
        by.setdefault(r["system"], []).append(r)
    plain = _report.median([r["events_per_s"] for r in by.get("plain-consumer", [])])
    for system, runs in by.items():
        eps = _report.median([r["events_per_s"] for r in runs])
        cpu = {
            k: _report.median([r["cpu_s_per_100k"].get(k, float("nan")) for r in runs])
            for k in ("orchestrator", "consumer", "processors", "broker")
        }
        main = cpu["orchestrator"] if system.startswith("eventgw") else cpu["consumer"]
        rows.append(
            f"| {system} | {_fmt(eps, 0)} | {_fmt(eps / plain, 2)} | {_fmt(main, 2)} "
            f"| {_fmt(cpu['processors'], 2)} | {_fmt(cpu['broker'], 2)} |"
        )
    return "\n".join(rows)


# -- 2. isolation -----------------------------------------------------------------------


def _read_records(prefix: Path) -> dict[str, tuple[int, int, int]]:
    """event_id → (priority, ingested_at_ms, first start_ms) from every ``prefix*`` file."""
    out: dict[str, tuple[int, int, int]] = {}
    dup = 0
    for f in prefix.parent.glob(prefix.name + "*"):
        for line in f.read_text().splitlines():
            parts = line.split(",")
            if len(parts) != 4:
                continue
            eid, prio, ing, start = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
            if eid in out:
                dup += 1
                if start >= out[eid][2]:
                    continue
            out[eid] = (prio, ing, start)
    out["__dups__"] = (dup, 0, 0)
    return out


def _class_report(
    gen: SteadyGenerator, recs: dict[str, tuple[int, int, int]]
) -> dict[str, dict[str, Any]]:
    out = {}
    for prio in gen.ids:
        ids = gen.ids[prio]
        lat = [(recs[e][2] - recs[e][1]) / 1000 for e in ids if e in recs]
        slo = SLO_SECONDS[prio]
        within = sum(1 for x in lat if x <= slo)
        out[prio.name] = {
            "produced": len(ids),
            "processed": len(lat),
            "p50_s": _report.percentile(lat, 50),
            "p99_s": _report.percentile(lat, 99),
            "p999_s": _report.percentile(lat, 99.9),
            "max_s": max(lat, default=float("nan")),
            "slo_s": slo,
            "within_slo_pct_of_produced": 100 * within / max(len(ids), 1),
            "within_slo_pct_of_processed": 100 * within / max(len(lat), 1),
        }
    return out


def _run_load(
    b: Bench,
    topic_of: dict[Priority, str],
    record_prefix: Path,
    meter: CpuMeter,
    sample_stats: Any = None,
) -> tuple[SteadyGenerator, dict[str, Any]]:
    """Generator for ``duration_s``, then until every P30 is recorded or ``drain_s``."""
    a = b.args
    cap = a.iso_processors * a.iso_concurrency / (a.iso_cost_ms / 1000)
    rates = {Priority.P10: a.flood_x * cap, Priority.P30: a.p30_share * cap}
    gen = SteadyGenerator(b.bootstrap, topic_of, rates, a.duration_s, a.payload_bytes)
    timeline = []
    cpu0 = meter.sample()
    t0 = time.monotonic()
    wall0_ms = time.time_ns() // 1_000_000
    gen.start()
    while gen.is_alive():
        time.sleep(1.0)
        if sample_stats is not None:
            timeline.append({"t": round(time.monotonic() - t0, 1), **sample_stats()})
    t_gen = time.monotonic()
    wall1_ms = time.time_ns() // 1_000_000
    p30 = gen.ids[Priority.P30]

    def p30_done() -> bool:
        recs = _read_records(record_prefix)
        return all(e in recs for e in p30)

    t_p30 = _wait_until(p30_done, a.drain_s, 0.5)
    cpu1 = meter.sample()
    cpu = CpuMeter.delta(cpu0, cpu1)
    return gen, {
        "rates_per_s": {p.name: r for p, r in rates.items()},
        "nominal_capacity_per_s": cap,
        "generator_elapsed_s": round(gen.elapsed_s, 2),
        "generator_max_lag_s": round(gen.lag_max_s, 3),
        "p30_done_after_load_s": None if t_p30 is None else round(t_p30 - t_gen, 2),
        "measured_s": round(time.monotonic() - t0, 1),
        "cpu_s": {k: round(s.total_s, 2) for k, s in cpu.items()},
        "timeline": timeline,
        "load_window_ms": [wall0_ms, wall1_ms],
    }


def _warmup(b: Bench, topic_of: dict[Priority, str], record_prefix: Path) -> None:
    """A few P30 events until one is handled: the group has joined, the loops are warm."""
    ids = []
    for _ in range(5):
        gen = SteadyGenerator(b.bootstrap, topic_of, {Priority.P30: 20}, 0.5, b.args.payload_bytes)
        gen.run()
        ids += list(gen.ids[Priority.P30])
        if _wait_until(
            lambda ids=ids: any(e in _read_records(record_prefix) for e in ids), 15, 0.5
        ):
            return
    raise TimeoutError("warm-up events were never handled")


def isolation_eventgw(b: Bench) -> dict[str, Any]:
    a = b.args
    topics = b.topics()
    prefix = b.workdir / f"iso-egw-{uuid.uuid4().hex[:6]}.rec"
    group = f"bench-iso-{uuid.uuid4().hex[:6]}"
    rp = ReadPath(
        b.bootstrap,
        topics,
        b.workdir,
        group_id=group,
        handler="bench.handlers:record_fixed_cost",
        processors=a.iso_processors,
        concurrency=a.iso_concurrency,
        name="iso",
        processor_env={
            "BENCH_HANDLER_COST_S": str(a.iso_cost_ms / 1000),
            "BENCH_RECORD_PATH": str(prefix),
        },
    )
    topic_of = {p: topics.lane_topic(p.name.lower()) for p in _PRIOS}
    problems: list[str] = []
    try:
        rp.start()
        _warmup(b, topic_of, prefix)

        def stats() -> dict[str, Any]:
            st = rp.stats()
            return {
                "buffer_mb": round(st["buffer_bytes"] / 1e6, 1),
                **{
                    ln["lane"]: [ln["processed"], ln["buffered"], ln["paused"]]
                    for ln in st["lanes"]
                    if ln["lane"] in ("p30", "p10")
                },
            }

        gen, info = _run_load(b, topic_of, prefix, b.meter(rp.pids()), stats)
        final_stats = rp.stats()
        time.sleep(b.args.orch_commit_wait_s)
        high = b.offsets.high([topic_of[Priority.P30], topic_of[Priority.P10]])
        committed = b.offsets.committed(group, [topic_of[Priority.P30], topic_of[Priority.P10]])
    finally:
        rp.stop()
    recs = _read_records(prefix)
    return _iso_result("eventgw", gen, recs, info, problems, high, committed, final_stats)


def isolation_fifo(b: Bench) -> dict[str, Any]:
    a = b.args
    topic = f"bench.fifo-{uuid.uuid4().hex[:10]}"
    create_topics(b.bootstrap, [topic])
    prefix = b.workdir / f"iso-fifo-{uuid.uuid4().hex[:6]}.rec"
    group = f"bench-fifo-{uuid.uuid4().hex[:6]}"
    with (b.workdir / "fifo.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._fifo",
                "fifo",
                "--bootstrap",
                b.bootstrap,
                "--group",
                group,
                "--topics",
                topic,
                "--concurrency",
                str(a.iso_processors * a.iso_concurrency),
                "--cost-s",
                str(a.iso_cost_ms / 1000),
                "--record",
                f"{prefix}.0",
            ],
            cwd=_REPO,
            env=base_env(b.bootstrap, bench_topics("x")),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    topic_of = dict.fromkeys(_PRIOS, topic)
    try:
        _warmup(b, topic_of, prefix)
        gen, info = _run_load(b, topic_of, prefix, b.meter({"fifo": proc.pid}))
        time.sleep(1.5)  # one auto-commit interval
        high = b.offsets.high([topic])
        committed = b.offsets.committed(group, [topic])
    finally:
        proc.terminate()
        proc.wait(30)
    recs = _read_records(prefix)
    return _iso_result("fifo-baseline", gen, recs, info, [], high, committed, None)


def _iso_result(
    system: str,
    gen: SteadyGenerator,
    recs: dict[str, tuple[int, int, int]],
    info: dict[str, Any],
    problems: list[str],
    high: dict[Any, int],
    committed: dict[Any, int],
    final_stats: dict[str, Any] | None,
) -> dict[str, Any]:
    dups = recs.pop("__dups__")[0]
    produced_ids = set().union(*gen.ids.values())
    if gen.errors:
        problems.append(f"{len(gen.errors)} produce errors: {gen.errors[0]}")
    # Every record handled must be one that was produced (warm-up events aside).
    foreign = [e for e, r in recs.items() if e not in produced_ids and r[1] > 0]
    total_high = sum(high.values())
    handled = sum(1 for e in recs if e in produced_ids)
    if any(committed[tp] > h for tp, h in high.items()):
        problems.append("committed offset beyond the high watermark")
    if handled > len(produced_ids):
        problems.append("more events handled than produced")
    if system == "eventgw":
        p30_tps = [tp for tp in high if "p30" in tp[0]]
        p30_ids = gen.ids[Priority.P30]
        if all(e in recs for e in p30_ids) and any(committed[tp] < high[tp] for tp in p30_tps):
            problems.append("every P30 handled but the p30 offsets are not all committed")
    classes = _class_report(gen, recs)
    w0, w1 = info["load_window_ms"]
    in_window = sum(1 for r in recs.values() if w0 <= r[2] < w1)
    info["handled_per_s_during_load"] = round(in_window / ((w1 - w0) / 1000), 1)
    return {
        "system": system,
        **info,
        "classes": classes,
        "handled_unique": handled,
        "duplicates": dups,
        "warmup_or_unknown_handled": len(foreign),
        "topic_records": total_high,
        "committed_records": sum(committed.values()),
        "orchestrator_final_stats": final_stats,
        "problems": problems,
    }


def run_isolation(b: Bench) -> dict[str, Any]:
    print("\n== priority isolation ==", flush=True)
    out = {}
    for fn in (isolation_eventgw, isolation_fifo):
        res = fn(b)
        out[res["system"]] = res
        c = res["classes"]
        print(
            f"  {res['system']:14s} P30 p99 {_fmt(c['P30']['p99_s'], 2)} s within 5 s "
            f"{_fmt(c['P30']['within_slo_pct_of_produced'], 2)} %; P10 handled "
            f"{c['P10']['processed']:,}/{c['P10']['produced']:,} "
            f"{'OK' if not res['problems'] else 'INVALID: ' + '; '.join(res['problems'])}",
            flush=True,
        )
    return out


def isolation_table(iso: dict[str, Any]) -> str:
    rows = [
        "| system | class | produced | handled by end | latency p50 s | p99 s | p99.9 s | max s "
        "| within SLO (% of produced) | (% of handled) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system, res in iso.items():
        for cls, c in res["classes"].items():
            rows.append(
                f"| {system} | {cls} | {c['produced']:,} | {c['processed']:,} "
                f"| {_fmt(c['p50_s'], 2)} | {_fmt(c['p99_s'], 2)} | {_fmt(c['p999_s'], 2)} "
                f"| {_fmt(c['max_s'], 2)} | {_fmt(c['within_slo_pct_of_produced'], 2)} "
                f"| {_fmt(c['within_slo_pct_of_processed'], 2)} |"
            )
    rows += [
        "",
        "| system | nominal capacity C /s | handled /s during load (all classes) "
        "| measured s | buffer MB max | P30 done after load s |",
        "|---|---|---|---|---|---|",
    ]
    for system, res in iso.items():
        mb = max((t.get("buffer_mb", 0) for t in res["timeline"]), default=float("nan"))
        rows.append(
            f"| {system} | {_fmt(res['nominal_capacity_per_s'], 0)} "
            f"| {_fmt(res['handled_per_s_during_load'], 0)} | {res['measured_s']} "
            f"| {_fmt(mb)} | {res['p30_done_after_load_s']} |"
        )
    return "\n".join(rows)


# -- 3. full loop -----------------------------------------------------------------------


def _loop_eventgw(b: Bench, layout: str, *, profile: bool = False) -> dict[str, Any]:
    """One full-loop run of eventgw: HTTP → ingest → publisher → … → processors → commit.

    With ``profile``, every gateway process is sampled by py-spy during the measured run.
    """
    a = b.args
    topics = b.topics()
    gw = Gateway(b.bootstrap, topics, b.workdir)
    group = f"bench-loop-{uuid.uuid4().hex[:6]}"
    rp = ReadPath(
        b.bootstrap,
        topics,
        b.workdir,
        group_id=group,
        handler="bench.handlers:noop",
        processors=a.processors,
        concurrency=a.concurrency,
        name=f"loop-{layout}",
    )
    lanes = b.lanes(topics)
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    problems: list[str] = []
    try:
        if layout == "colocated":
            gw.start_colocated_only()
            assert gw.colocated is not None
            http_port = gw.ports.colocated_http
            pids = {"ingest": gw.colocated.pid}
        else:
            gw.start()
            assert gw.ingest is not None
            assert gw.publisher is not None
            http_port = gw.ports.http
            pids = {"ingest": gw.ingest.pid, "publisher": gw.publisher.pid}
        rp.start()
        meter = b.meter({**pids, **rp.pids()})
        warm = _load.Workload(
            a.loop_batch * a.loop_concurrency * 2, a.loop_batch, a.loop_concurrency, a.payload_bytes
        )
        runner.run(_load.run_http(http_port, warm, 60))
        if _wait_until(lambda: b.caught_up(group, lanes), 60, 0.1) is None:
            raise TimeoutError("warm-up events never committed:\n" + rp.log_tail("orch"))
        before_high = sum(b.offsets.high(lanes).values())
        before_processed = rp.processed_total()
        fw_before = sum(b.offsets.high([topics.failed_writes]).values())
        w = _load.Workload(a.loop_events, a.loop_batch, a.loop_concurrency, a.payload_bytes)
        spies: dict[str, PySpy] = {}
        if profile:
            outdir = b.workdir / f"profiles-{layout}"
            outdir.mkdir(exist_ok=True)
            spies = {
                name: PySpy(pid, outdir / f"{name}.txt", native=False)
                for name, pid in {**pids, **rp.pids()}.items()
            }
        cpu0 = meter.sample()
        t0 = time.monotonic()
        res = runner.run(_load.run_http(http_port, w, 180))
        t_ingested = time.monotonic()
        target = before_processed + w.events
        t_acked = _wait_until(lambda: rp.processed_total() >= target, 120, 0.02)
        t_done = _wait_until(lambda: b.caught_up(group, lanes), 60, 0.05)
        cpu1 = meter.sample()
        for spy in spies.values():
            spy.stop()
        written = sum(b.offsets.high(lanes).values()) - before_high
        processed = rp.processed_total() - before_processed
        problems += res.errors
        if res.events != w.events:
            problems.append(f"{res.events} of {w.events} acknowledged PUBLISHED")
        if written != w.events:
            problems.append(f"lane topics grew by {written}, expected {w.events}")
        if processed != w.events:
            problems.append(f"{processed} ACKed by processors, expected {w.events}")
        if t_done is None:
            problems.append("committed offsets did not reach the high watermarks")
            t_done = time.monotonic()
        t_acked = t_acked or t_done
        if sum(b.offsets.high([topics.failed_writes]).values()) != fw_before:
            problems.append("events went to the failed-writes topic")
        if gw.spooled_bytes():
            problems.append("events went to the backup spool")
    finally:
        runner.close()
        rp.stop()
        gw.stop()
    cpu = CpuMeter.delta(cpu0, cpu1)
    per = 100_000 / w.events
    comp = {
        "ingest": cpu["ingest"].total_s,
        "publisher": cpu["publisher"].total_s if "publisher" in cpu else 0.0,
        "orchestrator": cpu["orchestrator"].total_s,
        "processors": sum(s.total_s for k, s in cpu.items() if k.startswith("processor")),
        **({"broker": cpu["broker"].total_s} if "broker" in cpu else {}),
        "load generator": cpu["bench"].total_s,
    }
    elapsed = t_done - t0
    return {
        **(
            {"profile": {name: summarize(spy.output, top=25) for name, spy in spies.items()}}
            if spies
            else {}
        ),
        "system": f"eventgw-{layout}",
        "events": w.events,
        "ingest_events_per_s": w.events / (t_ingested - t0),
        "acked_events_per_s": w.events / (t_acked - t0),
        "events_per_s": w.events / elapsed,
        "elapsed_s": round(elapsed, 2),
        "cpu_s_per_100k": {k: v * per for k, v in comp.items()},
        "cpu_cores_busy": {k: v / elapsed for k, v in comp.items()},
        "cpu_threads_s": {k: s.threads_s for k, s in cpu.items()},
        "problems": problems,
    }


def _loop_raw(b: Bench) -> dict[str, Any]:
    """The yardstick: a raw producer and the minimal at-least-once loop (`bench._fifo` loop)."""
    a = b.args
    topics = b.topics()
    group = f"bench-raw-{uuid.uuid4().hex[:6]}"
    n = a.loop_events
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench._fifo",
            "loop",
            "--bootstrap",
            b.bootstrap,
            "--group",
            group,
            "--topics",
            topics.p20,
            "--results-topic",
            topics.response,
            "--expect",
            str(n),
        ],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    problems: list[str] = []
    try:
        meter = b.meter({})  # the loop process reports its own CPU (it exits at the end)
        cpu0 = meter.sample()
        t0 = time.monotonic()
        delivered = preload(
            b.bootstrap, {Priority.P20: topics.p20}, {Priority.P20: n}, a.payload_bytes
        )
        t_produced = time.monotonic()
        out, _ = proc.communicate(timeout=180)
        cpu1 = meter.sample()
    finally:
        if proc.poll() is None:
            proc.kill()
    line = json.loads(out.strip().splitlines()[-1])
    if sum(delivered.values()) != n:
        problems.append(f"produced {sum(delivered.values())} of {n}")
    if line["records"] != n:
        problems.append(f"loop handled {line['records']} of {n}")
    if not b.caught_up(group, [topics.p20]):
        problems.append("raw loop did not commit everything")
    results = sum(b.offsets.high([topics.response]).values())
    if results < n:
        problems.append(f"{results} result records, expected {n}")
    cpu = CpuMeter.delta(cpu0, cpu1)
    per = 100_000 / n
    comp = {
        "producer": cpu["bench"].total_s,
        "raw loop": float(line["cpu_s"]),
        **({"broker": cpu["broker"].total_s} if "broker" in cpu else {}),
    }
    elapsed = line["done_s"] - t0
    return {
        "system": "raw-loop",
        "events": n,
        "ingest_events_per_s": n / (t_produced - t0),
        "acked_events_per_s": n / elapsed,
        "events_per_s": n / elapsed,
        "elapsed_s": round(elapsed, 2),
        "cpu_s_per_100k": {k: v * per for k, v in comp.items()},
        "cpu_cores_busy": {k: v / elapsed for k, v in comp.items()},
        "problems": problems,
    }


def run_loop(b: Bench) -> dict[str, Any]:
    """Rounds of the full loop, each layout and the raw loop once per round, order rotated."""
    print("\n== full loop ==", flush=True)
    systems = ["raw", *b.args.loop_layouts.split(",")]
    warmup = b.args.loop_warmup_events
    if warmup:
        # The broker is a fresh JVM: its JIT compiled the paths a system first used during
        # that system's first round (C2 threads: 2 CPU-s of a 500k-event eventgw round),
        # charged to whichever ran first. One unmeasured round of each system first.
        measured, b.args.loop_events = b.args.loop_events, warmup
        for system in systems:
            run = _loop_raw(b) if system == "raw" else _loop_eventgw(b, system)
            print(f"  warm-up {run['system']}: {run['events_per_s']:,.0f} ev/s", flush=True)
        b.args.loop_events = measured
    runs: list[dict[str, Any]] = []
    for r in range(b.args.rounds):
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for system in order:
            run = (
                _loop_raw(b)
                if system == "raw"
                else _loop_eventgw(b, system, profile=b.args.profile)
            )
            run["round"] = r
            runs.append(run)
            print(
                f"  round {r} {run['system']}: {run['events_per_s']:,.0f} ev/s end to end, "
                f"{sum(run['cpu_s_per_100k'].values()):.2f} CPU-s/100k "
                f"{'OK' if not run['problems'] else 'INVALID: ' + '; '.join(run['problems'])}",
                flush=True,
            )
    by_system: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_system.setdefault(run["system"], []).append(run)
    summary: dict[str, Any] = {}
    raw_by_round = {run["round"]: run["events_per_s"] for run in by_system["raw-loop"]}
    for system, rs in by_system.items():
        comps = rs[0]["cpu_s_per_100k"].keys()
        summary[system] = {
            "events_per_s": statistics.median(x["events_per_s"] for x in rs),
            "ratio_to_raw": statistics.median(
                x["events_per_s"] / raw_by_round[x["round"]] for x in rs
            ),
            "cpu_s_per_100k": {
                c: statistics.median(x["cpu_s_per_100k"][c] for x in rs) for c in comps
            },
            "cpu_s_per_100k_total": statistics.median(
                sum(x["cpu_s_per_100k"].values()) for x in rs
            ),
        }
    return {
        "runs": runs,
        "summary": summary,
        "problems": [p for run in runs for p in run["problems"]],
    }


def loop_table(lp: dict[str, Any]) -> str:
    """Medians over rounds: throughput, ratio to the raw loop, CPU per component."""
    rows = [
        "| system | events/s end to end | vs raw loop | CPU-s per 100k (total) | per component |",
        "|---|---|---|---|---|",
    ]
    for system, m in lp["summary"].items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in m["cpu_s_per_100k"].items())
        rows.append(
            f"| {system} | {_fmt(m['events_per_s'], 0)} | {m['ratio_to_raw']:.2f} | "
            f"{m['cpu_s_per_100k_total']:.2f} | {parts} |"
        )
    return "\n".join(rows)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.read_path", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--scenario", choices=["dispatch", "efficiency", "isolation", "loop", "all"], default="all"
    )
    p.add_argument("--bootstrap", help="use this broker instead of starting a private one")
    p.add_argument("--payload-bytes", type=int, default=256)
    g = p.add_argument_group("dispatch and loop")
    g.add_argument("--events", type=int, default=100_000, help="records pre-loaded (dispatch)")
    g.add_argument("--rounds", type=int, default=1)
    g.add_argument("--processors", type=int, default=2, help="no-op worker processes")
    g.add_argument("--concurrency", type=int, default=64)
    g.add_argument("--profile", action="store_true", help="py-spy the orchestrator (extra run)")
    g.add_argument(
        "--loop-events",
        type=int,
        default=500_000,
        # 100k events made a ~2 s round in which the raw loop spent much of its time starting
        # up: it flattered eventgw's ratio (docs/benchmarks.md, "Fourth session").
        help="events per full-loop round",
    )
    g.add_argument(
        "--loop-warmup-events",
        type=int,
        default=100_000,
        help="events of one unmeasured round of each system before the rounds (0: none)",
    )
    g.add_argument("--loop-batch", type=int, default=500)
    g.add_argument("--loop-concurrency", type=int, default=8)
    g.add_argument(
        "--loop-layouts",
        default="two-process,colocated",
        help="eventgw layouts of the loop scenario, comma-separated (two-process, colocated)",
    )
    g = p.add_argument_group("efficiency")
    g.add_argument("--eff-events", type=int, default=120_000)
    g.add_argument("--eff-processors", type=int, default=2)
    g.add_argument("--eff-concurrency", type=int, default=50)
    g.add_argument("--eff-cost-ms", type=float, default=10.0)
    g = p.add_argument_group("isolation")
    g.add_argument("--iso-processors", type=int, default=1)
    g.add_argument("--iso-concurrency", type=int, default=10)
    g.add_argument("--iso-cost-ms", type=float, default=10.0)
    g.add_argument("--flood-x", type=float, default=5.0, help="P10 rate as a multiple of C")
    g.add_argument("--p30-share", type=float, default=0.05, help="P30 rate as a share of C")
    g.add_argument("--duration-s", type=float, default=60.0)
    g.add_argument("--drain-s", type=float, default=20.0, help="after load: wait for P30 at most")
    g.add_argument("--orch-commit-wait-s", type=float, default=1.5)
    p.add_argument("--output", type=Path)
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and records")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    machine = _report.machine()
    workdir = Path(tempfile.mkdtemp(prefix="eventgw-readbench-"))
    print(f"workdir {workdir}; starting Kafka …", flush=True)
    broker = BenchBroker(workdir, args.bootstrap)
    record: dict[str, Any] = {
        "benchmark": "read_path",
        "command": "python -m bench.read_path " + " ".join(sys.argv[1:]),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    want = (
        {"dispatch", "efficiency", "isolation", "loop"}
        if args.scenario == "all"
        else {args.scenario}
    )
    try:
        b = Bench(args, broker, workdir)
        if "dispatch" in want:
            record["dispatch"] = run_dispatch(b)
        if "efficiency" in want:
            record["efficiency"] = run_efficiency(b)
        if "isolation" in want:
            record["isolation"] = run_isolation(b)
        if "loop" in want:
            record["loop"] = run_loop(b)
        b.offsets.close()
    finally:
        broker.close()
        if not args.keep_workdir:
            remove_tree(workdir)
    problems = []
    for r in record.get("dispatch", {}).get("runs", []):
        problems += r["problems"]
    for r in record.get("isolation", {}).values():
        problems += r["problems"]
    problems += record.get("loop", {}).get("problems", [])
    problems += record.get("efficiency", {}).get("problems", [])
    record["valid"] = not problems
    record["machine"] = {**machine, "kafka_broker": broker.kafka_version}
    record["started_at"] = started.isoformat(timespec="seconds")
    record["wall_s"] = round(time.monotonic() - t0, 1)
    print()
    if "dispatch" in record:
        print("dispatch throughput\n" + dispatch_table(record["dispatch"]) + "\n")
        prof = (record["dispatch"].get("profile") or {}).get("profile")
        if prof:
            for name, s in prof.items():
                print(f"py-spy {name} (self, top 8):")
                for f in s["self"][:8]:
                    print(f"  {f['pct']:5.1f} %  {f['function']}")
    if "isolation" in record:
        iso = record["isolation"]
        print("\npriority isolation\n" + isolation_table(iso))
        e = iso["eventgw"]["classes"]["P30"]["within_slo_pct_of_produced"]
        f = iso["fifo-baseline"]["classes"]["P30"]["within_slo_pct_of_produced"]
        met = e >= ISOLATION_GOAL_PCT and f < ISOLATION_GOAL_PCT
        print(
            f"goal: P30 >= {ISOLATION_GOAL_PCT} % within 5 s for eventgw ({e:.2f} %) while "
            f"FIFO misses it ({f:.2f} %): {'MET' if met else 'NOT MET'}"
        )
        record["isolation_goal_met"] = met
    if "efficiency" in record:
        eff = record["efficiency"]
        print(
            f"\ndispatch efficiency: median {eff['efficiency_median']:.2f} of nominal "
            f"{eff['nominal_events_per_s']:,.0f} events/s (goal >= 0.9)"
        )
    if "loop" in record:
        print("\nfull loop\n" + loop_table(record["loop"]))
    path = args.output or _RESULTS_DIR / f"read_path-{started.date().isoformat()}.json"
    _report.write_json(path, record)
    print(f"\nresults: {path} (wall {record['wall_s']} s)")
    if problems:
        print("INVALID: " + "; ".join(problems), file=sys.stderr)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
