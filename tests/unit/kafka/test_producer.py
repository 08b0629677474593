"""BatchProducer's per-batch bookkeeping without a broker (real Kafka: tests/integration)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import confluent_kafka
import msgspec
import pytest

from eventgw.kafka.producer import PERMANENT_ERROR_CODES, BatchProducer, Delivery, Record, _Batch

DeliveryCallback = Callable[[confluent_kafka.KafkaError | None, "Msg"], None]


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


def test_delivery_ok_and_immutable() -> None:
    assert Delivery(1, 2).ok
    assert not Delivery(-1, -1, "boom").ok
    assert Delivery(1, 2) == Delivery(1, 2, "")
    with pytest.raises(AttributeError):
        Delivery(1, 2).offset = 3  # type: ignore[misc]
    assert msgspec.structs.asdict(Delivery(1, 2)) == {
        "partition": 1,
        "offset": 2,
        "error": "",
        "code": "",
    }


@pytest.mark.parametrize(
    "code",
    [
        "_UNKNOWN_TOPIC",
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_PARTITION",
        "TOPIC_AUTHORIZATION_FAILED",
        "MSG_SIZE_TOO_LARGE",
        "INVALID_RECORD",
        "_INVALID_ARG",
    ],
)
def test_failures_the_same_record_cannot_overcome_are_permanent(code: str) -> None:
    assert Delivery(-1, -1, "refused", code).permanent


@pytest.mark.parametrize(
    "code",
    [
        "_MSG_TIMED_OUT",
        "_QUEUE_FULL",
        "NOT_LEADER_FOR_PARTITION",
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        "_INVALID_DIFFERENT_RECORD",  # another record of the batch was the bad one
        "",  # no code: e.g. our own "local queue full"
    ],
)
def test_failures_that_may_pass_later_are_transient(code: str) -> None:
    assert not Delivery(-1, -1, "failed", code).permanent


def test_permanent_codes_are_real_librdkafka_error_names() -> None:
    """A misspelt name would never match what `KafkaError.name()` returns."""
    for code in PERMANENT_ERROR_CODES:
        value = getattr(confluent_kafka.KafkaError, code)
        assert confluent_kafka.KafkaError(value).name() == code


def test_a_delivery_report_carries_kafkas_error_name() -> None:
    loop = asyncio.new_event_loop()
    try:
        batch = _Batch(loop, 1)
        err = confluent_kafka.KafkaError(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE)
        batch.on_delivery(0, err, None)
        [delivery] = batch.results
        assert delivery is not None
        assert (delivery.code, delivery.permanent) == ("MSG_SIZE_TOO_LARGE", True)
    finally:
        loop.close()


async def test_batch_waits_for_its_guard_then_resolves_once_with_every_report() -> None:
    batch = _Batch(asyncio.get_running_loop(), 2)
    batch.on_delivery(0, None, Msg(0, 10))
    batch.on_delivery(1, "broker down", None)
    await asyncio.sleep(0.01)
    assert not batch.future.done()  # still producing: the +1 guard is held
    batch.release()
    assert await batch.future == [Delivery(0, 10), Delivery(-1, -1, "broker down")]


async def test_reports_on_another_thread_race_with_failures_on_the_loop() -> None:
    """No lock per record: completion is counted with next() on one itertools.count."""
    n = 20_000
    loop = asyncio.get_running_loop()
    for _ in range(5):
        batch = _Batch(loop, n)
        resolved: list[asyncio.Future[list[Delivery]]] = []
        batch.future.add_done_callback(resolved.append)
        # Odd indexes are "delivered" by a poll thread while the loop settles the even
        # ones as produce() failures, as BatchProducer.send does.
        poll = threading.Thread(
            target=lambda b=batch: [b.on_delivery(i, None, Msg(1, i)) for i in range(1, n, 2)]
        )
        poll.start()
        for i in range(0, n, 2):
            batch.settle(i, Delivery(-1, -1, "local queue full"))
        batch.release()
        await asyncio.to_thread(poll.join)
        results = await batch.future
        await asyncio.sleep(0)
        assert len(resolved) == 1
        assert results[1::2] == [Delivery(1, i) for i in range(1, n, 2)]
        assert results[0::2] == [Delivery(-1, -1, "local queue full")] * (n // 2)


class ScriptedProducer:
    """Stands in for confluent_kafka.Producer: produce() fails as scripted, per record."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.script: list[str] = []  # per call: "ok", "full" (BufferError), "bad", "fatal", "hold"
        self.calls = 0
        self.held: list[DeliveryCallback] = []
        self.purged = False

    def produce(  # confluent-kafka's positional order, which BatchProducer.send uses
        self,
        topic: str,
        value: bytes,
        key: bytes,
        partition: int,
        callback: DeliveryCallback,  # optional in confluent-kafka; BatchProducer always asks
        on_delivery: None,
        timestamp: int,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        step = self.script[self.calls] if self.calls < len(self.script) else "ok"
        self.calls += 1
        if step == "full":
            raise BufferError("Local: Queue full")
        if step == "bad":
            raise confluent_kafka.KafkaException(
                confluent_kafka.KafkaError(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE)
            )
        if step == "fatal":
            raise confluent_kafka.KafkaException(
                confluent_kafka.KafkaError(
                    confluent_kafka.KafkaError._FATAL, "idempotence broken", fatal=True
                )
            )
        if step == "hold":  # accepted, reported only when purged
            self.held.append(callback)
            return
        callback(None, Msg(0, self.calls))

    def purge(self, in_queue: bool = True, in_flight: bool = True) -> None:
        self.purged = True
        for on_delivery in self.held:
            on_delivery(
                confluent_kafka.KafkaError(confluent_kafka.KafkaError._PURGE_QUEUE), Msg(-1, -1)
            )
        self.held.clear()

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedProducer]:
    """Every ScriptedProducer that BatchProducer creates, in order (it stands in for Producer)."""
    created: list[ScriptedProducer] = []

    def factory(conf: dict[str, Any]) -> ScriptedProducer:
        created.append(ScriptedProducer(conf))
        return created[-1]

    monkeypatch.setattr(confluent_kafka, "Producer", factory)
    return created


async def test_produce_failures_become_failed_deliveries_in_order(
    made: list[ScriptedProducer],
) -> None:
    """A full queue is waited out; a record produce() refuses is a failed Delivery, not an
    exception: the publisher then captures it (docs/failure-handling.md, "Capture order")."""
    producer = BatchProducer("t", {"message.timeout.ms": 2000})
    producer.start()
    try:
        made[0].script = ["ok", "full", "full", "ok", "bad", "ok"]
        records: list[Record] = [(b"k", b"v%d" % i, []) for i in range(4)]
        deliveries = await asyncio.wait_for(producer.send("topic", records), 5)
        assert [d.ok for d in deliveries] == [True, True, False, True]
        assert "produce failed" in deliveries[2].error
        assert deliveries[2].permanent  # the same record is refused again: not retried
        assert made[0].calls == 6  # the full queue was retried, not given up
    finally:
        await producer.close(1)


async def test_a_queue_that_stays_full_fails_the_record_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stuck = ScriptedProducer({})
    stuck.script = ["full"] * 10_000
    monkeypatch.setattr(confluent_kafka, "Producer", lambda conf: stuck)
    producer = BatchProducer("t", {"message.timeout.ms": 100})
    producer.start()
    try:
        [delivery] = await asyncio.wait_for(producer.send("topic", [(b"k", b"v", [])]), 5)
        assert delivery.error == "local queue full"
    finally:
        await producer.close(1)


async def test_a_fatal_producer_is_replaced_and_its_outstanding_records_fail(
    made: list[ScriptedProducer],
) -> None:
    """A fatal librdkafka producer fails every record for good: the next send uses a new one,
    and what the old one still held is reported failed (the publisher captures it)."""
    producer = BatchProducer("t", {"message.timeout.ms": 2000})
    producer.start()
    try:
        made[0].script = ["hold", "fatal"]
        held = asyncio.create_task(producer.send("topic", [(b"k", b"held", [])]))
        await asyncio.sleep(0)
        [failed] = await asyncio.wait_for(producer.send("topic", [(b"k", b"v", [])]), 5)
        assert failed.code == "_FATAL"
        assert not failed.permanent, "transient: captured, then retried"
        [ok] = await asyncio.wait_for(producer.send("topic", [(b"k", b"v", [])]), 5)
        assert ok.ok
        assert len(made) == 2
        assert producer.replacements == 1
        [purged] = await asyncio.wait_for(held, 5)
        assert made[0].purged
        assert purged.code == "_PURGE_QUEUE"
    finally:
        await producer.close(1)


async def test_a_fatal_error_reported_by_librdkafka_replaces_the_producer(
    made: list[ScriptedProducer],
) -> None:
    producer = BatchProducer("t", {"message.timeout.ms": 2000})
    producer.start()
    try:
        producer._on_error(  # what librdkafka's error_cb hands over, on the poll thread
            confluent_kafka.KafkaError(confluent_kafka.KafkaError._FATAL, "fenced", fatal=True)
        )
        producer._on_error(confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT))
        assert len(made) == 1, "nothing is replaced before the next send"
        [ok] = await asyncio.wait_for(producer.send("topic", [(b"k", b"v", [])]), 5)
        assert ok.ok
        assert len(made) == 2
        assert made[1].calls == 1
        [again] = await asyncio.wait_for(producer.send("topic", [(b"k", b"v", [])]), 5)
        assert again.ok
        assert len(made) == 2, "a transport error replaces nothing"
    finally:
        await producer.close(1)
