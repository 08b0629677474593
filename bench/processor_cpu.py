"""The processor worker's own CPU per 100k tasks, without Kafka or an orchestrator to share it.

Run: ``.venv/bin/python -m bench.processor_cpu [--tasks 200000] [--rounds 3]``.

A fake orchestrator in a child process (``--serve``) speaks the orchestrator side of the
``Work`` stream (docs/dispatch-protocol.md): it welcomes the worker, sends tasks (pre-built
``TaskBatch`` bytes, 256-byte payloads, a third each of P30/P20/P10) up to the credit the
worker grants, and counts the ACKs. The worker (`eventgw.processor.worker.Worker`, no-op
handler, ``--concurrency`` slots, uvloop and the serving processes' GC thresholds) runs in
this process; its CPU (every thread: ``time.process_time``) from the first task handled to
the last ACK written is reported as CPU-s per 100k tasks, with tasks/s. The full read path
(`bench.read_path`) measures the same worker next to a real orchestrator; this isolates it, so
a change to the worker's hot path shows above the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import grpc
import uvloop

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.cli.local_procs import free_port
from eventgw.cli.runner import GC_THRESHOLDS
from eventgw.config.settings import ProcessorSettings
from eventgw.core.protowire import varint
from eventgw.metrics.backend import Metrics
from eventgw.processor.worker import Worker


def _tasks(n: int, payload_bytes: int) -> list[bytes]:
    """``n`` serialized ``Task`` messages, as the orchestrator leases them."""
    now_ms = int(time.time() * 1000)
    payload = b'{"k":"' + b"x" * max(0, payload_bytes - 8) + b'"}'
    prios = (pb.P30, pb.P20, pb.P10)
    out = []
    for i in range(n):
        prio = prios[i % 3]
        event = pb.EventData(
            event_id=f"0192f3a4-{i:08d}-7000-8000-000000000000",
            company_id=f"acme-{i % 7}",
            source_name="api",
            payload=payload,
            priority=prio,
            ingested_at_ms=now_ms,
            slo_deadline_ms=now_ms + 60_000,
        )
        task = pb.Task(
            task_id=f"eventgw.p{prio}/{i % 12}/{i}",
            event=event,
            delivery_count=1,
            lease_expires_ms=now_ms + 600_000,
            lane=f"p{prio}",
            rank=now_ms + 60_000 + i // 50,  # deadlines: events of one ms share a rank
        )
        out.append(task.SerializeToString())
    return out


def _batch(tasks: list[bytes], backlog: int) -> bytes:
    """A serialized ``TaskBatch`` of already serialized tasks (field 2, length-delimited)."""
    parts: list[bytes] = []
    for t in tasks:
        parts += (b"\x12", varint(len(t)), t)
    trailer: bytes = pb.TaskBatch(backlog=backlog).SerializeToString()
    return b"".join(parts) + trailer


async def _serve(port: int, n: int, payload_bytes: int) -> None:
    """The fake orchestrator: tasks up to the credit, until every task is ACKed."""
    tasks = _tasks(n, payload_bytes)
    done = asyncio.Event()

    async def work(request_iterator: Any, context: Any) -> None:
        first = await context.read()
        if not first.worker_id:
            raise RuntimeError("the worker's first request names no worker_id")
        await context.write(pb.TaskBatch(backlog=n).SerializeToString())
        sent = acked = credit = requests = batches = 0
        while acked < n:
            request = await context.read()
            if request is grpc.aio.EOF:
                break
            requests += 1
            acked += len(request.acked) + len(request.results)
            credit += request.credit
            while credit and sent < n:
                k = min(credit, n - sent)
                await context.write(_batch(tasks[sent : sent + k], n - sent - k))
                sent += k
                credit -= k
                batches += 1
        print(f"fake: {requests} requests, {batches} task batches", file=sys.stderr, flush=True)
        done.set()

    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        work, request_deserializer=pb.WorkRequest.FromString, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("eventgw.v1.Orchestrator", {"Work": handler}),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"serving {bound}", flush=True)
    await done.wait()
    await asyncio.sleep(0.5)
    await server.stop(1)


async def _run_worker(target: str, n: int, concurrency: int) -> dict[str, Any]:
    stop = asyncio.Event()
    handled = 0
    first: list[float] = []

    async def noop(event: pb.EventData) -> None:
        nonlocal handled
        if not handled:
            first.extend((time.monotonic(), time.process_time()))
        handled += 1
        if handled >= n:
            stop.set()

    settings = ProcessorSettings(orchestrators=[target], concurrency=concurrency, metrics_port=0)
    worker = Worker(
        settings=settings, worker_id="bench", handler=noop, metrics=Metrics(), show=print
    )
    await worker.run(stop)  # returns once the last results are written and the stream ended
    wall1, cpu1 = time.monotonic(), time.process_time()
    stats = worker.statistics()
    if stats.results.get("ack") != n:
        raise RuntimeError(f"expected {n} ACKs, got {stats.results}")
    return {"tasks": n, "wall_s": wall1 - first[0], "cpu_s": cpu1 - first[1]}


def _one_round(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.processor_cpu", "--serve", str(port)),
            *("--tasks", str(args.tasks), "--payload-bytes", str(args.payload_bytes)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline() if server.stdout is not None else ""

        if not line.startswith("serving"):
            raise RuntimeError(f"fake orchestrator did not start: {line!r}")
        gc.collect()
        gc.freeze()
        res = uvloop.run(_run_worker(f"127.0.0.1:{port}", args.tasks, args.concurrency))
        gc.unfreeze()
    finally:
        server.wait(30)
    per = 100_000 / res["tasks"]
    return {
        "cpu_s_per_100k": res["cpu_s"] * per,
        "tasks_per_s": res["tasks"] / res["wall_s"],
        **res,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--payload-bytes", type=int, default=256)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the fake orchestrator's port
    args = p.parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)
    if args.serve is not None:
        uvloop.run(_serve(args.serve, args.tasks, args.payload_bytes))
        return 0
    runs = []
    for r in range(args.rounds):
        res = _one_round(args)
        runs.append(res)
        print(
            f"round {r + 1}: {res['cpu_s_per_100k']:.3f} CPU-s/100k tasks, "
            f"{res['tasks_per_s']:,.0f} tasks/s (pid {os.getpid()})",
            flush=True,
        )
    cpu = statistics.median(x["cpu_s_per_100k"] for x in runs)
    rate = statistics.median(x["tasks_per_s"] for x in runs)
    print(f"median of {len(runs)}: {cpu:.3f} CPU-s/100k tasks, {rate:,.0f} tasks/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
