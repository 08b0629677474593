"""Baselines for the read-path benchmark: plain confluent-kafka consumers, one process each.

``python -m bench._fifo drain --bootstrap B --group G --topics t1,t2 --expect N``
    Reads ``N`` records as fast as it can (``consume`` in batches), commits every
    ``--commit-interval-s`` and once more at the end (synchronously), then prints one JSON
    line: ``{"records", "first_s", "done_s", ...}`` (monotonic seconds of the first record
    and of the final commit). The plain consumer the orchestrator is compared with.

``python -m bench._fifo loop --bootstrap B --group G --topics t1,t2 --results-topic R
--expect N``
    The minimal at-least-once loop written directly on confluent-kafka, the yardstick of the
    full-loop benchmark: consume a batch, "handle" each record (parse the ``EventData``),
    produce one result record per event to ``R``, wait until Kafka confirmed the results,
    then commit the batch's offsets (asynchronously; synchronously at the end). Prints the
    same JSON line as ``drain``.

``python -m bench._fifo fifo --bootstrap B --group G --topics t --concurrency C --cost-s S
--record PATH``
    A single-topic FIFO worker pool: one consumer hands records in order to ``C`` asyncio
    workers (queue of ``2 C``), each "runs a handler" that records
    ``event_id,priority,ingested_at_ms,start_ms`` and sleeps ``S``. Offsets auto-commit.
    Runs until SIGTERM. The FIFO baseline of the priority-isolation scenario: the same
    workers and per-event cost as the gateway's processors, without priorities.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time

import uvloop
from confluent_kafka import Consumer, Producer

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb


def _consumer(args: argparse.Namespace, **extra: object) -> Consumer:
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        **extra,
    }
    c = Consumer(conf)
    c.subscribe(args.topics.split(","))
    return c


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def drain(args: argparse.Namespace) -> int:
    c = _consumer(args, **{"enable.auto.commit": False})
    n = 0
    first = None
    last_commit = time.monotonic()
    deadline = time.monotonic() + args.timeout_s
    while n < args.expect and time.monotonic() < deadline:
        msgs = c.consume(1000, 0.1)
        for m in msgs:
            if m.error() is None:
                n += 1
        if msgs and first is None:
            first = time.monotonic()
            cpu_first = _cpu()
        if time.monotonic() - last_commit >= args.commit_interval_s:
            c.commit(asynchronous=True)
            last_commit = time.monotonic()
    c.commit(asynchronous=False)
    done = time.monotonic()
    c.close()
    cpu_s = _cpu() - cpu_first if first is not None else 0.0
    print(json.dumps({"records": n, "first_s": first, "done_s": done, "cpu_s": cpu_s}), flush=True)
    return 0 if n == args.expect else 1


def loop(args: argparse.Namespace) -> int:
    c = _consumer(args, **{"enable.auto.commit": False})
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.size": 256 << 10,
        }
    )
    failed: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    n = 0
    first = None
    cpu_first = 0.0
    deadline = time.monotonic() + args.timeout_s
    while n < args.expect and time.monotonic() < deadline:
        msgs = [m for m in c.consume(1000, 0.1) if m.error() is None]
        if not msgs:
            continue
        if first is None:
            first = time.monotonic()
            cpu_first = _cpu()
        for m in msgs:
            event = pb.EventData.FromString(m.value())  # the "handler"
            producer.produce(
                args.results_topic, event.event_id.encode(), m.key(), on_delivery=on_delivery
            )
        producer.flush(30)  # results durable before the offsets move: at-least-once
        if failed:
            raise RuntimeError(f"result writes failed: {failed[:3]}")
        c.commit(asynchronous=True)
        n += len(msgs)
    c.commit(asynchronous=False)
    done = time.monotonic()
    c.close()
    cpu_s = _cpu() - cpu_first if first is not None else 0.0
    print(json.dumps({"records": n, "first_s": first, "done_s": done, "cpu_s": cpu_s}), flush=True)
    return 0 if n == args.expect else 1


async def fifo(args: argparse.Namespace) -> None:
    c = _consumer(args, **{"enable.auto.commit": True, "auto.commit.interval.ms": 1000})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=2 * args.concurrency)
    out = open(args.record, "a")  # noqa: SIM115, ASYNC230  (opened once, before the load)
    lines: list[str] = []

    async def worker() -> None:
        while True:
            value = await queue.get()
            ev = pb.EventData.FromString(value)
            now_ms = time.time_ns() // 1_000_000
            lines.append(f"{ev.event_id},{ev.priority},{ev.ingested_at_ms},{now_ms}\n")
            await asyncio.sleep(args.cost_s)

    async def reader() -> None:
        while not stop.is_set():
            msgs = await asyncio.to_thread(c.consume, 500, 0.1)
            for m in msgs:
                value = m.value()
                if m.error() is None and value is not None:
                    await queue.put(value)

    async def flusher() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            out.write("".join(lines))
            lines.clear()
            out.flush()

    tasks = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    tasks.append(asyncio.create_task(flusher()))
    rd = asyncio.create_task(reader())
    await stop.wait()
    await rd
    for t in tasks:
        t.cancel()
    out.write("".join(lines))
    out.close()
    c.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["drain", "fifo", "loop"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topics", required=True)
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--commit-interval-s", type=float, default=1.0)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--cost-s", type=float, default=0.01)
    p.add_argument("--record", default="/dev/null")
    p.add_argument("--results-topic", default="")
    args = p.parse_args()
    if args.mode == "drain":
        return drain(args)
    if args.mode == "loop":
        return loop(args)
    uvloop.run(fifo(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
