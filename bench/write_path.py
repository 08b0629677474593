"""Write-path benchmark: the gateway (HTTP and gRPC) against a plain producer, same broker.

Run: ``.venv/bin/python -m bench.write_path [--events N] [--batch B] [--payload-bytes P]
[--concurrency C] [--rounds R] [--profile]``.

It starts a private single-node Kafka broker on free ports (or uses ``--bootstrap``), creates
uniquely named topics, starts ``eventgw publisher`` and ``eventgw ingest`` as two separate
processes, and then runs the scenarios interleaved over R rounds (the order rotates each
round) so that machine noise hits all of them alike:

- ``raw-producer``: a confluent_kafka.Producer with the configuration of the gateway's p20
  lane (``producer_config``: acks=all, one request in flight, linger.ms=5,
  batch.size=512 KiB) writing records of the same key, value size and headers as the gateway's;
- ``gateway-http``: ``POST /v1/events`` with B events per request, C keep-alive connections;
- ``gateway-grpc``: ``eventgw.v1.IngestService/Ingest`` with B events per call, C callers;
- ``publisher-grpc``: ``eventgw.v1.PrepPublisher/Publish`` directly, to separate the costs;
- ``colocated-http``: ``POST /v1/events`` to ``eventgw ingest`` with
  ``ingest.embedded_publisher`` (the co-located layout: one process, no gRPC hop);
- ``workers-http``: the same with ``ingest.workers`` = ``--workers`` (default 2) processes
  sharing the port, so the gateway is not bound to one Python thread.

Events come from a pool of companies (``--companies``, ``--companies-per-batch``), as from
many tenants; a single company would be isolated by the gateway's hot-tenant protection.

Every scenario is the same closed loop: C batches of B in flight. Each round is verified: the
topic must have grown by exactly the number of events acknowledged, nothing may have gone to
the failed-writes topic or the backup spool. It reports medians over rounds (events/s, batch
and record ack latency, CPU-seconds per 100k events per process) and writes
``bench/results/write_path-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka
import uvloop

from bench import _load, _report
from bench._profile import PySpy, py_spy_path, summarize
from bench._stack import (
    BenchBroker,
    CpuMeter,
    Gateway,
    OffsetReader,
    bench_topics,
    create_topics,
    remove_tree,
)
from eventgw.config.settings import KafkaClusterSettings, PublisherSettings
from eventgw.kafka.client_config import producer_config

SCENARIOS = (
    "raw-producer",
    "gateway-http",
    "gateway-grpc",
    "publisher-grpc",
    "colocated-http",
    "workers-http",
)
DEFAULT_SCENARIOS = SCENARIOS
GOAL_RATIO = 0.5
_RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Which processes a scenario exercises; the others idle and are left out of its CPU figures.
_ACTIVE = {
    "raw-producer": ("client", "broker"),
    "gateway-http": ("ingest", "publisher", "client", "broker"),
    "gateway-grpc": ("ingest", "publisher", "client", "broker"),
    "publisher-grpc": ("publisher", "client", "broker"),
    "colocated-http": ("colocated", "client", "broker"),
    "workers-http": ("workers", "client", "broker"),
}


class WritePathBench:
    """Runs scenarios against one broker and one gateway; ``measure`` verifies each run."""

    def __init__(
        self, args: argparse.Namespace, broker: BenchBroker, gateway: Gateway, raw_topic: str
    ) -> None:
        self.args = args
        self.gateway = gateway
        self.raw_topic = raw_topic
        self.reader = OffsetReader(broker.bootstrap)
        pids = {"ingest": gateway.ingest.pid, "publisher": gateway.publisher.pid}  # type: ignore[union-attr]
        if gateway.colocated is not None:
            pids["colocated"] = gateway.colocated.pid
        if gateway.workers is not None:
            pids["workers"] = gateway.workers.pid
        pids["client"] = os.getpid()
        if broker.pid is not None:
            pids["broker"] = broker.pid
        self.meter = CpuMeter(pids, with_children=("workers",))
        lane = PublisherSettings().lanes["p20"]
        self.producer_conf = producer_config(
            KafkaClusterSettings(bootstrap_servers=broker.bootstrap), lane, "bench-raw-producer"
        )
        self.producer = confluent_kafka.Producer(self.producer_conf)
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)

    def close(self) -> None:
        """Flush and drop the clients."""
        self.producer.flush(10)
        self.reader.close()
        self.runner.close()

    def _drive(self, scenario: str, w: _load.Workload) -> _load.LoadResult:
        timeout_s = self.args.scenario_timeout_s
        ports = self.gateway.ports
        if scenario == "raw-producer":
            return _load.run_raw_producer(self.producer, self.raw_topic, w, timeout_s)
        if scenario == "gateway-http":
            coro = _load.run_http(ports.http, w, timeout_s, self.args.http_client)
        elif scenario == "colocated-http":
            coro = _load.run_http(ports.colocated_http, w, timeout_s, self.args.http_client)
        elif scenario == "workers-http":
            coro = _load.run_http(ports.workers_http, w, timeout_s, self.args.http_client)
        elif scenario == "gateway-grpc":
            coro = _load.run_ingest_grpc(ports.ingest_grpc, w, timeout_s)
        else:
            coro = _load.run_publisher_grpc(ports.publisher_grpc, w, timeout_s)
        return self.runner.run(coro)

    def measure(self, scenario: str, w: _load.Workload) -> dict[str, Any]:
        """Run one scenario once; return its figures and the problems verification found."""
        topic = self.raw_topic if scenario == "raw-producer" else self.gateway.topics.p20
        fw_topic = self.gateway.topics.failed_writes
        offload_topic = self.gateway.topics.offload
        before, fw_before = self.reader.records(topic), self.reader.records(fw_topic)
        offload_before = self.reader.records(offload_topic)
        spool_before = self.gateway.spooled_bytes()
        cpu_before = self.meter.sample()
        result = self._drive(scenario, w)
        cpu_after = self.meter.sample()
        cpu = CpuMeter.delta(cpu_before, cpu_after)
        m0, m1 = cpu_before["machine"].threads_s, cpu_after["machine"].threads_s
        ours = sum(s.total_s for s in cpu.values())
        noise = {
            "foreign_cpu_s": round(m1["busy"] - m0["busy"] - ours, 3),
            "steal_s": round(m1["steal"] - m0["steal"], 3),
            "cpu_pressure_pct": round(
                100 * (m1["pressure_some"] - m0["pressure_some"]) / result.elapsed_s, 1
            ),
        }
        written = self.reader.records(topic) - before
        problems = list(result.errors)
        if result.events != w.events:
            problems.append(f"{result.events} of {w.events} events acknowledged")
        if written != w.events:
            problems.append(f"topic {topic} grew by {written} records, expected {w.events}")
        if self.reader.records(fw_topic) != fw_before:
            problems.append("events went to the failed-writes topic")
        if (offloaded := self.reader.records(offload_topic) - offload_before) != 0:
            problems.append(f"{offloaded} events went to the offload lane (admission control)")
        if self.gateway.spooled_bytes() != spool_before:
            problems.append("events went to the backup spool")
        ms = [x * 1000 for x in result.batch_latencies_s]
        rec_ms = [x * 1000 for x in result.record_latencies_s]
        return {
            "scenario": scenario,
            "events": w.events,
            "elapsed_s": round(result.elapsed_s, 4),
            "events_per_s": result.events / result.elapsed_s,
            "batch_p50_ms": _report.percentile(ms, 50),
            "batch_p99_ms": _report.percentile(ms, 99),
            "record_p50_ms": _report.percentile(rec_ms, 50),
            "record_p99_ms": _report.percentile(rec_ms, 99),
            "cpu_s": {name: s.total_s for name, s in cpu.items()},
            "cpu_s_per_100k": {
                name: s.total_s / w.events * 100_000
                for name, s in cpu.items()
                if name in _ACTIVE[scenario]
            },
            "cpu_threads_s": {name: s.threads_s for name, s in cpu.items()},
            "noise": noise,
            "problems": problems,
        }

    def profile(self, w: _load.Workload, outdir: Path) -> dict[str, Any]:
        """Run the two gateway scenarios once more under py-spy; summarise each process."""
        out: dict[str, Any] = {}
        two = (("ingest", self.gateway.ingest), ("publisher", self.gateway.publisher))
        procs = {
            "gateway-http": two,
            "gateway-grpc": two,
            "colocated-http": (("colocated", self.gateway.colocated),),
        }
        for scenario in [s for s in procs if s in self.args.scenarios]:
            spies = {
                name: PySpy(
                    proc.pid, outdir / f"{scenario}-{name}.txt", native=self.args.profile_native
                )
                for name, proc in procs[scenario]
                if proc is not None
            }
            time.sleep(1.0)  # py-spy attaches and reads symbols before it samples
            run = self.measure(scenario, w)
            for spy in spies.values():
                spy.stop()
            out[scenario] = {
                "events_per_s_under_profiler": round(run["events_per_s"]),
                "cpu_threads_s": run["cpu_threads_s"],
                "problems": run["problems"],
                **{name: summarize(spy.output) for name, spy in spies.items()},
            }
        return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench.write_path", description=__doc__.split("\n")[0]
    )
    p.add_argument("--events", type=int, default=100_000, help="events per scenario and round")
    p.add_argument("--batch", type=int, default=500, help="events per request / batch")
    p.add_argument("--payload-bytes", type=int, default=256, help="size of each JSON payload")
    p.add_argument("--concurrency", type=int, default=8, help="batches in flight")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--companies", type=int, default=1000, help="size of the company pool")
    p.add_argument(
        "--companies-per-batch", type=int, default=10, help="distinct companies in each batch"
    )
    p.add_argument("--warmup-events", type=int, default=10_000, help="untimed, per scenario")
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)} (colocated-http: ingest with "
        "the publisher embedded, one process)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="ingest.workers of the workers-http scenario"
    )
    p.add_argument("--http-client", choices=["raw", "httpx"], default="raw")
    p.add_argument("--bootstrap", help="use this broker instead of starting a private one")
    p.add_argument("--scenario-timeout-s", type=float, default=120.0)
    p.add_argument("--profile", action="store_true", help="py-spy the gateway (extra run)")
    p.add_argument("--profile-events", type=int, default=300_000, help="events per profiled run")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames)")
    p.add_argument("--profile-dir", type=Path, help="keep the raw py-spy stacks here")
    p.add_argument("--output", type=Path, help="JSON path (default bench/results/...)")
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown or "raw-producer" not in args.scenarios:
        p.error(
            f"--scenarios must include raw-producer and name only {SCENARIOS}; "
            f"got {sorted(unknown) or args.scenarios}"
        )
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    try:
        _workload(args, args.events)
    except ValueError as exc:
        p.error(str(exc))
    if args.profile:
        py_spy_path()
    return args


def _workload(args: argparse.Namespace, events: int) -> _load.Workload:
    return _load.Workload(
        events,
        args.batch,
        args.concurrency,
        args.payload_bytes,
        companies=args.companies,
        companies_per_batch=args.companies_per_batch,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every round verified, 1 otherwise."""
    args = parse_args(argv)
    w = _workload(args, args.events)
    warm = _workload(args, max(args.batch, args.warmup_events // args.batch * args.batch))
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    machine = _report.machine()
    workdir = Path(tempfile.mkdtemp(prefix="eventgw-bench-"))
    print(f"workdir {workdir}; starting Kafka and the gateway …", flush=True)
    try:
        broker = BenchBroker(workdir, args.bootstrap)
    except BaseException:
        remove_tree(workdir)
        raise
    try:
        topics = bench_topics(uuid.uuid4().hex[:10])
        gateway = Gateway(broker.bootstrap, topics, workdir)
        raw_topic = f"bench.raw-{topics.p20.rsplit('-', 1)[-1]}"
        create_topics(broker.bootstrap, [*topics.all_topics(), raw_topic])
        gateway.start(
            colocated="colocated-http" in args.scenarios,
            workers=args.workers if "workers-http" in args.scenarios else 0,
        )
        bench = WritePathBench(args, broker, gateway, raw_topic)
        try:
            record = _run(args, w, warm, bench, broker, workdir)
        finally:
            bench.close()
            gateway.stop()
            if args.bootstrap:
                from eventgw.kafka.admin import delete_topics

                delete_topics(broker.bootstrap, [*topics.all_topics(), raw_topic])
    finally:
        broker.close()
        remove_tree(workdir)
    record["machine"] = {**machine, "kafka_broker": broker.kafka_version}
    record["started_at"] = started.isoformat(timespec="seconds")
    record["wall_s"] = round(time.monotonic() - t0, 1)
    path = args.output or _RESULTS_DIR / f"write_path-{started.date().isoformat()}.json"
    _report.write_json(path, record)
    print(f"\nresults: {path} (wall {record['wall_s']} s)")
    return 0 if record["valid"] else 1


def _run(
    args: argparse.Namespace,
    w: _load.Workload,
    warm: _load.Workload,
    bench: WritePathBench,
    broker: BenchBroker,
    workdir: Path,
) -> dict[str, Any]:
    scenarios = list(args.scenarios)
    for scenario in scenarios:
        run = bench.measure(scenario, warm)
        print(
            f"warm-up {scenario}: {run['events_per_s']:,.0f} ev/s {run['problems'] or ''}",
            flush=True,
        )
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = scenarios[r % len(scenarios) :] + scenarios[: r % len(scenarios)]
        for scenario in order:
            time.sleep(1.0)  # let the broker settle (log flushes, segment rolls)
            run = bench.measure(scenario, w)
            run["round"] = r + 1
            rounds.append(run)
            print(
                f"round {r + 1}/{args.rounds} {scenario:15s} {run['events_per_s']:>9,.0f} ev/s "
                f"batch p50 {run['batch_p50_ms']:7.1f} ms p99 {run['batch_p99_ms']:7.1f} ms "
                f"foreign CPU {run['noise']['foreign_cpu_s']:5.2f} s "
                f"{'OK' if not run['problems'] else 'INVALID: ' + '; '.join(run['problems'])}",
                flush=True,
            )
    summary = _report.summarize_rounds(rounds, SCENARIOS)
    profile: dict[str, Any] | None = None
    if args.profile:
        outdir = args.profile_dir or workdir / "profiles"
        outdir.mkdir(parents=True, exist_ok=True)
        print("profiling the gateway with py-spy …", flush=True)
        pw = _workload(args, max(w.batch, args.profile_events // w.batch * w.batch))
        profile = bench.profile(pw, outdir)
    print()
    print(_report.table(summary))
    for layout, names in (
        ("two processes (ingest → gRPC → publisher)", ("gateway-http", "gateway-grpc")),
        ("co-located (ingest.embedded_publisher)", ("colocated-http", "workers-http")),
    ):
        ratios = ", ".join(f"{s} {summary[s]['ratio_vs_raw']:.2f}x" for s in names if s in summary)
        if ratios:
            print(f"goal: gateway >= {GOAL_RATIO}x raw producer; {layout}: {ratios}")
    valid = all(not r["problems"] for r in rounds) and not any(
        p["problems"] for p in (profile or {}).values()
    )
    if not valid:
        print(
            "INVALID: some rounds lost or misplaced events; see 'problems' in the JSON",
            file=sys.stderr,
        )
    return {
        "benchmark": "write_path",
        "command": "python -m bench.write_path " + " ".join(sys.argv[1:]),
        "params": {
            "events": w.events,
            "batch": w.batch,
            "concurrency": w.concurrency,
            "payload_bytes": w.payload_bytes,
            "companies": w.companies,
            "companies_per_batch": w.companies_per_batch,
            "record_value_bytes": len(_load.raw_record(w.payload_bytes)[1]),
            "rounds": args.rounds,
            "warmup_events": warm.events,
            "http_client": args.http_client,
            "partitions": 3,
            "broker": "private" if args.bootstrap is None else args.bootstrap,
        },
        "raw_producer_config": {
            k: v for k, v in bench.producer_conf.items() if isinstance(v, str | int | float)
        },
        "goal_ratio": GOAL_RATIO,
        "valid": valid,
        "summary": summary,
        "rounds": rounds,
        "profile": profile,
    }


if __name__ == "__main__":
    sys.exit(main())
