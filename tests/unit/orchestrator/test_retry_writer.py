"""The retry/DLQ writer: batched per topic, retried with backoff, bounded, owned, drained."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventgw.core.retry import Backoff
from eventgw.kafka.producer import Delivery
from eventgw.metrics.backend import Metrics
from eventgw.orchestrator.retry_writer import RetryWriter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.kafka.producer import Record


@dataclass
class FakeProducer:
    """Answers each send with the next scripted errors (per record); then success."""

    script: list[list[str]] = field(default_factory=list)
    sends: list[tuple[str, int]] = field(default_factory=list)

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
        self.sends.append((topic, len(records)))
        errors = self.script.pop(0) if self.script else []
        errors += [""] * (len(records) - len(errors))
        return [Delivery(partition=0, offset=0, error=e) for e in errors]


def writer(producer: FakeProducer, attempts: int = 3) -> RetryWriter:
    return RetryWriter(producer, Metrics(), attempts=attempts, backoff=Backoff(0.001, 0.002))


RECORD: Record = (b"k", b"v", [])


async def test_records_submitted_together_go_out_in_one_send_per_topic() -> None:
    producer = FakeProducer()
    w = writer(producer)
    outcomes: list[bool] = []
    for topic in ("retry-60s", "dlq", "retry-60s"):
        w.submit(topic, RECORD, outcomes.append)
    stop = asyncio.Event()
    stop.set()  # drain: write what is pending, then return
    async with asyncio.timeout(5):
        await w.run(stop)
    assert sorted(producer.sends) == [("dlq", 1), ("retry-60s", 2)]
    assert outcomes == [True, True, True]
    assert w.pending() == 0
    assert w.statistics().written == 3


async def test_a_failed_record_is_retried_then_given_up() -> None:
    producer = FakeProducer(script=[["broker down"], ["broker down"], ["broker down"]])
    w = writer(producer, attempts=3)
    outcomes: list[bool] = []
    w.submit("retry-60s", RECORD, outcomes.append)
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(5):
        await w.run(stop)
    assert outcomes == [False], "given up after 3 attempts: the task is served again"
    assert len(producer.sends) == 3
    st = w.statistics()
    assert (st.retried, st.given_up, st.pending) == (2, 1, 0)


async def test_a_forever_record_is_retried_until_kafka_takes_it() -> None:
    producer = FakeProducer(script=[["down"]] * 6)
    w = writer(producer, attempts=2)
    outcomes: list[bool] = []
    w.submit("dlq", RECORD, outcomes.append, forever=True)
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(5):
        await w.run(stop)
    assert outcomes == [True]
    assert len(producer.sends) == 7


async def test_a_send_that_raises_counts_as_failed_for_every_record() -> None:
    class Raising(FakeProducer):
        async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]:
            self.sends.append((topic, len(records)))
            if len(self.sends) == 1:
                raise RuntimeError("producer closed")
            return [Delivery(partition=0, offset=0) for _ in records]

    producer = Raising()
    w = writer(producer)
    outcomes: list[bool] = []
    w.submit("dlq", RECORD, outcomes.append)
    w.submit("dlq", RECORD, outcomes.append)
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(5):
        await w.run(stop)
    assert outcomes == [True, True]
    assert producer.sends == [("dlq", 2), ("dlq", 2)]


async def test_run_waits_for_work_and_returns_on_stop() -> None:
    producer = FakeProducer()
    w = writer(producer)
    stop = asyncio.Event()
    outcomes: list[bool] = []
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        task = tg.create_task(w.run(stop))
        await asyncio.sleep(0)
        w.submit("dlq", RECORD, outcomes.append)
        while not outcomes:  # noqa: ASYNC110  (the callback is the only signal)
            await asyncio.sleep(0.001)
        stop.set()
    assert task.done()
    assert outcomes == [True]
