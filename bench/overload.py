"""Overload benchmark (issue #4): a step load through eventgw (AIMD on, AIMD off) and RabbitMQ.

Run: ``scripts/bench-overload`` (or ``.venv/bin/python -m bench.overload [--systems ...]
[--capacity C] [--normal-s N] [--overload-s O] [--after-s A] [--drain-cap-s D]``).

Capacity C: ``--processors`` worker processes x ``--concurrency`` slots, each event costing
``--cost-ms`` (``bench.handlers:record_fixed_cost``, an ``asyncio.sleep``), so
C = processors * concurrency / cost. The same handler, cost and concurrency serve RabbitMQ.

Step load (open loop, sent every 100 ms whatever the answers): ``normal`` x C for N s, then
3 x C for O s, then ``normal`` x C for A s. Class mix 10 % P30 (``source_name=flow``),
40 % P20 (default class), 50 % P10 (``source_name=bulk``). During the overload one hot
company (``hot-co``) sends ``--hot-share`` of the P20 traffic; otherwise 5 % of it. The rest
is spread over 20 companies.

Systems:

- ``eventgw``: private Kafka broker, ``eventgw publisher`` + ``ingest`` + ``orchestrator`` +
  processors, HTTP ``POST /v1/events``; dynamic config with AIMD and hot-tenant isolation
  scaled to C (the defaults are sized for 170k events/s);
- ``eventgw-noaimd``: the same with ``{"aimd": {"enabled": false}, "hot_tenants":
  {"enabled": false}}``;
- ``rabbitmq``: Debian's ``rabbitmq-server`` on loopback, a durable queue with
  ``x-max-priority=3``, persistent messages, publisher confirms (each publish awaits its
  confirm, many in flight), one consumer process with manual acks and prefetch = concurrency.

Per event the sender keeps (id, class, company, sent time, lane from the answer); the handler
writes (id, priority, ingested_at_ms, start_ms). Latency = handler start - ingested_at_ms
(for RabbitMQ, ingested_at_ms = the publish time). An event meets its SLO when it is processed
within P30 5 s / P20 60 s / P10 20 min; one never processed counts as a miss. After the load
the run waits until every event is processed, up to ``--drain-cap-s``.

Writes ``bench/results/overload-<date>.json`` and ``docs/overload.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._readstack import ReadPath
from bench._stack import BenchBroker, Gateway, bench_topics, create_topics, remove_tree

_REPO = Path(__file__).resolve().parent.parent
_RESULTS_DIR = _REPO / "bench" / "results"
SLO_MS = {30: 5_000, 20: 60_000, 10: 1_200_000}
CLASSES = (30, 20, 10)
MIX = {30: 0.10, 20: 0.40, 10: 0.50}
SOURCE = {30: "flow", 20: "api", 10: "bulk"}
HOT = "hot-co"
N_COMPANIES = 20
BUCKET_S = 5.0
TICK_S = 0.1
SYSTEMS = ("eventgw", "eventgw-noaimd", "rabbitmq")
GOALS = {30: 99.9, 20: 99.0}


@dataclass
class Sent:
    """What the sender knows of one event."""

    eid: str
    prio: int
    company: str
    sent_ms: int
    lane: str = ""


@dataclass
class RunData:
    """Everything one system's run produced."""

    system: str
    t0_ms: int
    sent: list[Sent]
    records: dict[str, tuple[int, int, int]]  # eid -> (prio, ingested_ms, start_ms)
    status: list[dict[str, Any]] = field(default_factory=list)  # ingest /status samples
    errors: list[str] = field(default_factory=list)
    drain_s: float = 0.0
    lag_max_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- load


class StepLoad:
    """Which events are due at time t: per (class, company-kind) stream, fractional carry."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.c = args.capacity
        self.total_s = args.normal_s + args.overload_s + args.after_s
        self._sent: dict[tuple[int, str], float] = {}
        self._seq = 0
        self._rr = 0

    def level(self, t: float) -> float:
        """Offered load as a multiple of C."""
        if self.a.normal_s <= t < self.a.normal_s + self.a.overload_s:
            return self.a.overload_x
        return self.a.normal_x

    def rates(self, t: float) -> dict[tuple[int, str], float]:
        """events/s per (class, 'hot' | 'other')."""
        total = self.level(t) * self.c
        overload = self.level(t) > self.a.normal_x
        hot_share = self.a.hot_share if overload else 0.05
        out = {}
        for p in CLASSES:
            r = total * MIX[p]
            if p == 20:
                out[(p, "hot")] = r * hot_share
                out[(p, "other")] = r * (1 - hot_share)
            else:
                out[(p, "other")] = r
        return out

    def due(self, t_prev: float, t: float, prefix: str) -> list[tuple[str, int, str]]:
        """Events to send for (t_prev, t]: (event_id, priority, company)."""
        out = []
        for key, rate in self.rates(t).items():
            acc = self._sent.get(key, 0.0) + rate * (t - t_prev)
            n = int(acc)
            self._sent[key] = acc - n
            p, kind = key
            for _ in range(n):
                self._seq += 1
                if kind == "hot":
                    company = HOT
                else:
                    self._rr = (self._rr + 1) % N_COMPANIES
                    company = f"co-{self._rr:02d}"
                out.append((f"{prefix}{self._seq}", p, company))
        return out


async def drive(load: StepLoad, prefix: str, send: Any, data: RunData) -> None:
    """Open loop: every TICK_S hand the due events to ``send`` (a coroutine, run as a task)."""
    started = time.monotonic()
    data.t0_ms = time.time_ns() // 1_000_000
    t_prev = 0.0
    tasks: set[asyncio.Task[None]] = set()
    while t_prev < load.total_s:
        t = min(time.monotonic() - started, load.total_s)
        batch = load.due(t_prev, t, prefix)
        t_prev = t
        if batch:
            task = asyncio.create_task(send(batch))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        nxt = started + (int(t / TICK_S) + 1) * TICK_S
        lag = time.monotonic() - (started + t)
        data.lag_max_s = max(data.lag_max_s, lag)
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=120)


# --------------------------------------------------------------------------- eventgw


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def dynamic_config(args: argparse.Namespace, aimd: bool) -> dict[str, Any]:
    """AIMD and hot tenants scaled to C (on), or both off."""
    if not aimd:
        return {"aimd": {"enabled": False}, "hot_tenants": {"enabled": False}}
    c = args.capacity
    return {
        "aimd": {
            "enabled": True,
            "classes": {
                "P10": {
                    "initial": c,
                    "floor": max(1.0, c * 0.05),
                    "ceiling": c * 4,
                    "increase_step": c * 0.1,
                    "decrease_factor": 0.5,
                    "cooldown_s": 5,
                    "burst_s": 2,
                },
                "P20": {
                    "initial": c,
                    "floor": max(1.0, c * 0.1),
                    "ceiling": c * 4,
                    "increase_step": c * 0.1,
                    "decrease_factor": 0.7,
                    "cooldown_s": 5,
                    "burst_s": 1,
                },
            },
        },
        "hot_tenants": {
            "enabled": True,
            "window_s": 5,
            "max_rate_per_company": c * 0.25,
            "action": "offload",
        },
    }


def read_records(path: str) -> dict[str, tuple[int, int, int]]:
    """Handler records of all processes; the first start of each event (redeliveries later)."""
    out: dict[str, tuple[int, int, int]] = {}
    for f in glob.glob(f"{path}.*"):
        for line in Path(f).read_text().splitlines():
            parts = line.split(",")
            if len(parts) != 4:
                continue
            eid, prio, ing, start = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
            old = out.get(eid)
            if old is None or start < old[2]:
                out[eid] = (prio, ing, start)
    return out


async def run_eventgw(args: argparse.Namespace, workdir: Path, aimd: bool) -> RunData:
    system = "eventgw" if aimd else "eventgw-noaimd"
    data = RunData(system, 0, [], {})
    suffix = uuid.uuid4().hex[:8]
    broker = BenchBroker(workdir, None)
    gateway: Gateway | None = None
    rp: ReadPath | None = None
    record_path = str(workdir / f"{system}-records")
    try:
        topics = bench_topics(suffix)
        create_topics(
            broker.bootstrap, [v for k, v in topics.model_dump().items() if k != "partitions"]
        )
        dyn = workdir / f"{system}-dynamic.json"
        dyn.write_text(json.dumps(dynamic_config(args, aimd)))
        gateway = Gateway(broker.bootstrap, topics, workdir)
        gateway._env.update(
            {  # bench-only knobs on top of the stack's env
                "EVENTGW_INGEST__CLASS_RULES": json.dumps(
                    [
                        {"priority": 30, "source_name": "flow"},
                        {"priority": 10, "source_name": "bulk"},
                    ]
                ),
                "EVENTGW_INGEST__DYNAMIC_CONFIG_PATH": str(dyn),
            }
        )
        gateway.start()
        rp = ReadPath(
            broker.bootstrap,
            topics,
            workdir,
            group_id=f"ov-{suffix}",
            handler="bench.handlers:record_fixed_cost",
            processors=args.processors,
            concurrency=args.concurrency,
            processor_env={
                "BENCH_RECORD_PATH": record_path,
                "BENCH_HANDLER_COST_S": str(args.cost_ms / 1000),
            },
            name=system,
        )
        rp.start()
        status_url = f"http://127.0.0.1:{gateway.ports.http}/status"
        post_url = f"http://127.0.0.1:{gateway.ports.http}/v1/events"
        data.notes["status_at_start"] = _get_json(status_url)
        load = StepLoad(args)
        stop_poll = asyncio.Event()

        async def poll() -> None:
            while not stop_poll.is_set():
                with contextlib.suppress(Exception):
                    st = await asyncio.to_thread(_get_json, status_url)
                    orch = await asyncio.to_thread(rp.stats)
                    data.status.append(
                        {"t_ms": time.time_ns() // 1_000_000, "ingest": st, "orch": orch}
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop_poll.wait(), 1.0)

        conn = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def send(batch: list[tuple[str, int, str]]) -> None:
                now_ms = time.time_ns() // 1_000_000
                recs = [Sent(eid, p, co, now_ms) for eid, p, co in batch]
                body = {
                    "events": [
                        {
                            "event_id": eid,
                            "company_id": co,
                            "source_name": SOURCE[p],
                            "statistic_key": "bench.overload",
                            "payload": {"n": 1},
                        }
                        for eid, p, co in batch
                    ]
                }
                for attempt in range(10):
                    try:
                        async with session.post(post_url, json=body) as resp:
                            raw = await resp.read()
                            if resp.status == 202:
                                ans = json.loads(raw)["events"]
                                for r, a in zip(recs, ans, strict=True):
                                    r.lane = a["lane"]
                                data.sent.extend(recs)
                                return
                            data.errors.append(f"HTTP {resp.status}: {raw[:200]!r}")
                    except aiohttp.ClientError as exc:
                        data.errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.2 * (attempt + 1))
                data.errors.append(f"gave up on a batch of {len(batch)}")

            poller = asyncio.create_task(poll())
            await drive(load, "e", send, data)
            data.notes["sent"] = len(data.sent)
            # drain: wait until the orchestrator processed every event (or the cap)
            end = time.monotonic()
            n = len(data.sent)
            while time.monotonic() - end < args.drain_cap_s:
                with contextlib.suppress(Exception):
                    if rp.processed_total() >= n:
                        break
                await asyncio.sleep(1.0)
            data.drain_s = time.monotonic() - end
            await asyncio.sleep(2.0)
            stop_poll.set()
            await poller
        with contextlib.suppress(Exception):
            data.notes["orch_stats_end"] = rp.stats()
            data.notes["status_end"] = _get_json(status_url)
    finally:
        if rp is not None:
            rp.stop()  # SIGTERM: processors flush their records at exit
        if gateway is not None:
            gateway.stop()
        broker.close()
    data.records = read_records(record_path)
    return data


# --------------------------------------------------------------------------- rabbitmq


async def run_rabbit(args: argparse.Namespace, workdir: Path) -> RunData:
    import aio_pika

    from bench.rabbit import AMQP_PRIORITY, RabbitServer, declare_queue, queue_depth

    data = RunData("rabbitmq", 0, [], {})
    server = RabbitServer(workdir)
    record_path = str(workdir / "rabbitmq-records")
    consumers: list[subprocess.Popen[bytes]] = []
    queue_name = "events-bench"
    try:
        server.start()
        conn = await aio_pika.connect_robust(server.url)
        channel = await conn.channel(publisher_confirms=True)
        queue = await declare_queue(channel, queue_name)
        env = {
            **os.environ,
            "BENCH_RECORD_PATH": record_path,
            "BENCH_HANDLER_COST_S": str(args.cost_ms / 1000),
            "PYTHONPATH": str(_REPO),
        }
        for i in range(args.processors):
            with (workdir / f"rabbit-consumer{i}.log").open("ab") as log:
                consumers.append(
                    subprocess.Popen(  # noqa: ASYNC220  (started once at set-up, not on a hot path)
                        [
                            sys.executable,
                            "-m",
                            "bench.rabbit",
                            "consume",
                            server.url,
                            queue_name,
                            str(args.concurrency),
                        ],
                        env=env,
                        cwd=_REPO,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        await asyncio.sleep(3.0)
        exchange = channel.default_exchange
        sem = asyncio.Semaphore(2000)

        async def publish_one(eid: str, p: int, co: str) -> None:
            async with sem:
                now_ms = time.time_ns() // 1_000_000
                msg = aio_pika.Message(
                    f"{eid},{p},{co},{now_ms}".encode(),
                    priority=AMQP_PRIORITY[p],
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=eid,
                )
                for _attempt in range(10):
                    try:
                        await exchange.publish(msg, routing_key=queue_name)
                        data.sent.append(Sent(eid, p, co, now_ms, lane=f"prio{AMQP_PRIORITY[p]}"))
                        return
                    except Exception as exc:  # noqa: BLE001  # nack / connection: retry
                        data.errors.append(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.2)

        async def send(batch: list[tuple[str, int, str]]) -> None:
            await asyncio.gather(*(publish_one(*b) for b in batch))

        stop_poll = asyncio.Event()
        pub_channel = await conn.channel()

        async def poll() -> None:
            while not stop_poll.is_set():
                with contextlib.suppress(Exception):
                    depth = await queue_depth(pub_channel, queue_name)
                    data.status.append({"t_ms": time.time_ns() // 1_000_000, "queue_depth": depth})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop_poll.wait(), 1.0)

        poller = asyncio.create_task(poll())
        load = StepLoad(args)
        await drive(load, "r", send, data)
        data.notes["sent"] = len(data.sent)
        end = time.monotonic()
        idle = 0
        while time.monotonic() - end < args.drain_cap_s:
            idle = idle + 1 if await queue_depth(pub_channel, queue_name) == 0 else 0
            if idle >= 3:  # empty for 3 s: the last prefetched messages are done
                break
            await asyncio.sleep(1.0)
        data.drain_s = time.monotonic() - end
        stop_poll.set()
        await poller
        data.notes["queue_left"] = await queue_depth(pub_channel, queue_name)
        await conn.close()
        del queue
    finally:
        for c in consumers:
            if c.poll() is None:
                c.terminate()
        for c in consumers:
            try:
                c.wait(20)
            except subprocess.TimeoutExpired:
                c.kill()
        server.stop()
    data.records = read_records(record_path)
    return data


# --------------------------------------------------------------------------- analysis


def _pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def _capacity(sample: dict[str, Any]) -> dict[int, float]:
    """Per-class AIMD capacity from an ingest /status document (shape-tolerant)."""
    out: dict[int, float] = {}
    classes = sample.get("ingest", {}).get("classes", {})
    if isinstance(classes, dict):
        for name, v in classes.items():
            if isinstance(v, dict) and "capacity" in v and name in ("P10", "P20", "P30"):
                out[int(name[1:])] = float(v["capacity"])
    elif isinstance(classes, list):
        for v in classes:
            name = str(v.get("class") or v.get("priority") or "")
            if name in ("P10", "P20", "P30") and "capacity" in v:
                out[int(name[1:])] = float(v["capacity"])
    return out


def analyse(data: RunData, load_s: float) -> dict[str, Any]:
    """Per class overall numbers and per 5 s bucket time series."""
    t0 = data.t0_ms
    n_buckets = int(load_s // BUCKET_S) + 1
    overall: dict[str, Any] = {}
    series: dict[str, Any] = {"t_s": [i * BUCKET_S for i in range(n_buckets)]}
    for p in CLASSES:
        evs = [s for s in data.sent if s.prio == p]
        lat: list[int] = []
        ok = 0
        ok_nohot = n_nohot = 0
        processed = 0
        b_sent = [0] * n_buckets
        b_off = [0] * n_buckets
        b_lat: list[list[int]] = [[] for _ in range(n_buckets)]
        b_ok = [0] * n_buckets
        b_proc = [0] * (n_buckets + 200)
        for s in evs:
            b = min(n_buckets - 1, max(0, int((s.sent_ms - t0) / 1000 / BUCKET_S)))
            b_sent[b] += 1
            if s.lane == "offload":
                b_off[b] += 1
            r = data.records.get(s.eid)
            hit = False
            if r is not None:
                processed += 1
                latency = r[2] - r[1]
                lat.append(latency)
                b_lat[b].append(latency)
                hit = latency <= SLO_MS[p]
                pb_ = max(0, int((r[2] - t0) / 1000 / BUCKET_S))
                if pb_ < len(b_proc):
                    b_proc[pb_] += 1
            ok += hit
            b_ok[b] += hit
            if s.company != HOT:
                n_nohot += 1
                ok_nohot += hit
        n = len(evs)
        overall[f"P{p}"] = {
            "sent": n,
            "processed": processed,
            "offloaded": sum(b_off),
            "attainment_pct": round(100.0 * ok / n, 3) if n else None,
            "attainment_excl_hot_pct": round(100.0 * ok_nohot / n_nohot, 3) if n_nohot else None,
            "p50_ms": _pct(lat, 0.50),
            "p99_ms": _pct(lat, 0.99),
            "max_ms": max(lat) if lat else None,
        }
        last = max((i for i, v in enumerate(b_proc) if v), default=n_buckets - 1)
        series[f"P{p}"] = {
            "sent_rate": [x / BUCKET_S for x in b_sent],
            "admitted_rate": [(x - o) / BUCKET_S for x, o in zip(b_sent, b_off, strict=True)],
            "offloaded_rate": [x / BUCKET_S for x in b_off],
            "processed_rate": [x / BUCKET_S for x in b_proc[: last + 1]],
            "p50_ms": [_pct(x, 0.5) for x in b_lat],
            "p99_ms": [_pct(x, 0.99) for x in b_lat],
            "attainment_pct": [
                round(100.0 * o / s, 2) if s else None for o, s in zip(b_ok, b_sent, strict=True)
            ],
        }
    cap_t, caps = [], {p: [] for p in CLASSES}
    for sample in data.status:
        c = _capacity(sample)
        if not c:
            continue
        cap_t.append((sample["t_ms"] - t0) / 1000)
        for p in CLASSES:
            caps[p].append(c.get(p))
    series["capacity"] = {"t_s": cap_t, **{f"P{p}": caps[p] for p in CLASSES}}
    return {
        "system": data.system,
        "events_sent": len(data.sent),
        "events_processed": sum(1 for s in data.sent if s.eid in data.records),
        "send_errors": len(data.errors),
        "first_errors": data.errors[:5],
        "drain_s": round(data.drain_s, 1),
        "sender_lag_max_s": round(data.lag_max_s, 3),
        "overall": overall,
        "series": series,
        "notes": data.notes,
        "status_samples": data.status[-3:] if data.system != "rabbitmq" else data.status,
    }


# --------------------------------------------------------------------------- report


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| system | class | sent | processed | offloaded | SLO attainment | excl. hot-co | "
        "p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"

    for r in results:
        for p in CLASSES:
            o = r["overall"][f"P{p}"]
            att = "-" if o["attainment_pct"] is None else f"{o['attainment_pct']:.2f} %"
            ex = (
                "-"
                if o["attainment_excl_hot_pct"] is None
                else (f"{o['attainment_excl_hot_pct']:.2f} %")
            )
            lines.append(
                f"| {r['system']} | P{p} | {o['sent']} | {o['processed']} | {o['offloaded']} | "
                f"{att} | {ex} | {ms(o['p50_ms'])} | {ms(o['p99_ms'])} | {ms(o['max_ms'])} |"
            )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {30: "tab:red", 20: "tab:blue", 10: "tab:green"}
    fig, axes = plt.subplots(len(results), 2, figsize=(14, 3.6 * len(results)), squeeze=False)
    ov0, ov1 = args.normal_s, args.normal_s + args.overload_s
    for row, r in enumerate(results):
        s = r["series"]
        ax = axes[row][0]
        for p in CLASSES:
            ys = [None if v is None else v / 1000 for v in s[f"P{p}"]["p99_ms"]]
            ax.plot(
                s["t_s"],
                [float("nan") if v is None else v for v in ys],
                "-o",
                ms=3,
                color=colors[p],
                label=f"P{p} p99",
            )
            ax.axhline(SLO_MS[p] / 1000, color=colors[p], ls=":", lw=1)
        ax.set_yscale("log")
        ax.axvspan(ov0, ov1, color="grey", alpha=0.15)
        ax.set_title(f"{r['system']}: p99 latency ingest→handler by send time (dotted: SLO)")
        ax.set_xlabel("send time (s)")
        ax.set_ylabel("s (log)")
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[row][1]
        for p in CLASSES:
            pr = s[f"P{p}"]["processed_rate"]
            ax.plot(
                [i * BUCKET_S for i in range(len(pr))],
                pr,
                color=colors[p],
                label=f"P{p} processed/s",
            )
            ax.plot(
                s["t_s"],
                s[f"P{p}"]["admitted_rate"],
                color=colors[p],
                ls="--",
                lw=1,
                label=f"P{p} admitted/s",
            )
            if any(s[f"P{p}"]["offloaded_rate"]) and r["system"] != "rabbitmq":
                ax.plot(
                    s["t_s"],
                    s[f"P{p}"]["offloaded_rate"],
                    color=colors[p],
                    ls=":",
                    lw=1.5,
                    label=f"P{p} offloaded/s",
                )
            cap = s["capacity"]
            if r["system"] == "eventgw" and cap["t_s"] and p != 30:
                ax.plot(
                    cap["t_s"],
                    cap[f"P{p}"],
                    color=colors[p],
                    ls="-.",
                    lw=1,
                    label=f"P{p} AIMD capacity",
                )
        ax.axhline(args.capacity, color="black", lw=0.8, ls=":", label="C (processors)")
        ax.axvspan(ov0, ov1, color="grey", alpha=0.15)
        ax.set_ylim(0, args.capacity * args.overload_x * 0.6)
        ax.set_title(f"{r['system']}: rates (events/s)")
        ax.set_xlabel("time (s)")
        ax.legend(fontsize=6, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--processors", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--cost-ms", type=float, default=20.0)
    ap.add_argument("--normal-x", type=float, default=0.5)
    ap.add_argument("--overload-x", type=float, default=3.0)
    ap.add_argument("--normal-s", type=float, default=30.0)
    ap.add_argument("--overload-s", type=float, default=30.0)
    ap.add_argument("--after-s", type=float, default=60.0)
    ap.add_argument("--hot-share", type=float, default=0.6)
    ap.add_argument("--drain-cap-s", type=float, default=120.0)
    ap.add_argument("--png", type=Path, default=_REPO / "docs" / "overload.png")
    args = ap.parse_args()
    args.capacity = args.processors * args.concurrency / (args.cost_ms / 1000)
    workdir = Path(tempfile.mkdtemp(prefix="eventgw-overload-"))
    load_s = args.normal_s + args.overload_s + args.after_s
    print(
        f"C = {args.capacity:.0f} events/s; load {args.normal_x}xC {args.normal_s:.0f}s → "
        f"{args.overload_x}xC {args.overload_s:.0f}s → {args.normal_x}xC {args.after_s:.0f}s; "
        f"workdir {workdir}",
        flush=True,
    )
    results = []
    try:
        for system in args.systems:
            print(f"[{system}] running…", flush=True)
            t = time.monotonic()
            if system == "rabbitmq":
                data = asyncio.run(run_rabbit(args, workdir))
            else:
                data = asyncio.run(run_eventgw(args, workdir, aimd=(system == "eventgw")))
            res = analyse(data, load_s + args.drain_cap_s)
            results.append(res)
            print(
                f"[{system}] {res['events_processed']}/{res['events_sent']} processed, "
                f"drain {res['drain_s']} s, {time.monotonic() - t:.0f} s wall, "
                f"errors {res['send_errors']} {res['first_errors'][:2]}",
                flush=True,
            )
    finally:
        remove_tree(workdir)
    print(table(results))
    _RESULTS_DIR.mkdir(exist_ok=True)
    date = datetime.datetime.now(datetime.UTC).date().isoformat()
    out = {
        "benchmark": "overload",
        "date": date,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "dynamic_config_eventgw": dynamic_config(args, True),
        "results": results,
    }
    path = _RESULTS_DIR / f"overload-{date}.json"
    path.write_text(json.dumps(out, indent=1))
    plot(results, args, args.png)
    print(f"wrote {path} and {args.png}")


if __name__ == "__main__":
    main()
