"""The failed-writes processor's loops: nothing is deleted or committed before it is in Kafka
(or the backup store), and a failing object or batch does not hold the others back.

docs/failure-handling.md, "Replay". A fake store and replayer script the outcomes; the loops
are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from eventgw.config.settings import EventGwSettings, RecoverySettings
from eventgw.core.backup_codec import CorruptBackup
from eventgw.core.retry import Backoff
from eventgw.kafka.consumer import ConsumedRecord
from eventgw.kafka.testing import InMemoryKafka
from eventgw.recovery import service as recovery_service
from eventgw.recovery.replayer import Captured, Outcome, ReplayReport
from eventgw.recovery.service import RecoveryService
from eventgw.recovery.takeover import Takeover

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterator,
        Callable,
        Collection,
        Mapping,
        Sequence,
    )
    from collections.abc import Set as AbstractSet

    import pytest

    from eventgw.core.backup_codec import CorruptionKind
    from eventgw.kafka.scanner import Scanner


class FakeStore:
    """Objects in memory, handed out ``batch`` records at a time, as the real stores do."""

    name = "spool"

    def __init__(
        self,
        objects: dict[str, list[bytes]],
        corrupt: AbstractSet[str] | dict[str, CorruptionKind] = frozenset(),
        batch: int = 1000,
    ) -> None:
        self.objects = dict(objects)
        self.corrupt: dict[str, CorruptionKind] = (
            dict(corrupt) if isinstance(corrupt, dict) else dict.fromkeys(corrupt, "record_crc")
        )
        self.batch = batch
        self.deleted: list[str] = []
        self.gets: list[str] = []
        self.handed_out: list[list[bytes]] = []
        self._next = 0

    async def put(self, records: Sequence[bytes]) -> str:
        self._next += 1
        key = f"z{self._next}"  # sorts after the test's own keys: newest
        self.objects[key] = list(records)
        return key

    async def list_keys(self) -> list[str]:
        return sorted(self.objects)

    async def read(
        self, key: str, *, batch_bytes: int = 4 << 20
    ) -> AsyncGenerator[list[bytes], None]:
        self.gets.append(key)
        if key in self.corrupt:  # found on the verifying pass: nothing is handed out
            raise CorruptBackup(self.corrupt[key], 0, f"{key}: {self.corrupt[key]}")
        values = self.objects[key]
        for start in range(0, len(values), self.batch):
            self.handed_out.append(values[start : start + self.batch])
            yield values[start : start + self.batch]

    async def delete(self, key: str) -> None:
        self.deleted.append(key)
        del self.objects[key]

    async def close(self) -> None:
        pass  # nothing to release: the objects are a dict


class FakeReplayer:
    """Values starting with ``pending`` stay PENDING ``fails`` times; ``bad`` ones for good
    unless ``give_up`` (then parked). ``refused`` ones: the DLQ refuses them for good."""

    def __init__(self, fails: int = 0) -> None:
        self.fails = fails
        self.calls: list[tuple[list[bytes], bool]] = []
        self.sent: list[bytes] = []  # values that reached a topic (lane or DLQ)

    def cluster_of(self, value: bytes) -> str:
        return "primary"

    async def replay(self, captured: Sequence[Captured], *, give_up: bool = False) -> ReplayReport:
        values = [c.value for c in captured]
        self.calls.append((values, give_up))
        await asyncio.sleep(0)  # a real replay awaits Kafka: other tasks (commits) run
        outcomes: list[Outcome] = []
        refused: list[int] = []
        for i, v in enumerate(values):
            if v.startswith(b"pending") and self.fails > 0:
                outcomes.append(Outcome.PENDING)
            elif v.startswith(b"bad"):
                outcomes.append(Outcome.PARKED if give_up else Outcome.PENDING)
            elif v.startswith(b"refused"):
                outcomes.append(Outcome.PENDING)
                refused.append(i)
            else:
                outcomes.append(Outcome.REPLAYED)
        if any(v.startswith(b"pending") for v in values):
            self.fails -= 1
        self.sent += [v for v, o in zip(values, outcomes, strict=True) if o is not Outcome.PENDING]
        parked = sum(o is Outcome.PARKED for o in outcomes)
        return ReplayReport(tuple(outcomes), {"gave_up": parked} if parked else {}, tuple(refused))


def service(max_attempts: int = 5, backoff: Backoff | None = None) -> RecoveryService:
    settings = EventGwSettings(
        recovery=RecoverySettings(
            backup_scan_interval_s=0.01,
            backoff_initial_s=0.01,
            backoff_max_s=0.05,
            max_attempts=max_attempts,
        )
    )
    return RecoveryService(settings, backoff=backoff)


async def run_backup_loop_until(
    svc: RecoveryService, store: FakeStore, replayer: FakeReplayer, done: Callable[[], bool]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(svc._backup_loop(store, replayer, stop))
    try:
        async with asyncio.timeout(10):
            while not done():  # noqa: ASYNC110  (no event to await in the fake)
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await loop


async def test_objects_are_deleted_only_after_a_complete_replay_and_corrupt_ones_never() -> None:
    store = FakeStore({"k1": [b"a"], "k2": [b"pending-b"], "k3": [b"x"]}, corrupt={"k3"})
    replayer = FakeReplayer(fails=2)  # k2's event is not in Kafka, twice
    await run_backup_loop_until(service(), store, replayer, lambda: "k2" not in store.objects)
    assert store.deleted == ["k1", "k2"]
    assert [vs for vs, _ in replayer.calls].count([b"pending-b"]) == 3, "k2 kept until complete"
    assert "k3" in store.objects, "a corrupt object is kept (its events are at risk)"
    assert store.gets.count("k3") < 10, "a corrupt object is re-read only after a backoff"


async def test_a_failing_object_waits_while_newer_ones_go_on_and_keeps_only_what_is_left() -> None:
    """The fault run: a poison event in the oldest object blocked everything after it."""
    store = FakeStore({"k1": [b"a1", b"bad", b"a2"], "k2": [b"b1"], "k3": [b"c1", b"c2"]})
    replayer = FakeReplayer()
    svc = service(max_attempts=3)
    await run_backup_loop_until(svc, store, replayer, lambda: not store.objects)
    # Newer objects were replayed (and deleted) while the poison waited for its retries.
    assert store.deleted[:3] == ["k1", "k2", "k3"]
    # k1 was rewritten with only its poison event: retries repeat nothing else.
    poison_calls = [(vs, give_up) for vs, give_up in replayer.calls if b"bad" in vs]
    assert poison_calls == [
        ([b"a1", b"bad", b"a2"], False),
        ([b"bad"], False),
        ([b"bad"], True),  # third attempt of max_attempts=3: parked
    ]
    assert sorted(replayer.sent) == sorted([b"a1", b"a2", b"b1", b"c1", b"c2", b"bad"])


async def test_a_topic_batch_retries_only_what_is_pending_then_parks_it() -> None:
    svc = service(max_attempts=3)
    replayer = FakeReplayer()
    store = FakeStore({})
    batch = [_captured(b"a"), _captured(b"bad"), _captured(b"b")]
    assert await svc._settle(batch, replayer, store, asyncio.Event())
    assert replayer.calls == [
        ([b"a", b"bad", b"b"], False),
        ([b"bad"], False),
        ([b"bad"], True),
    ]
    assert not store.objects


async def test_a_topic_record_the_dlq_refuses_for_good_moves_to_the_backup_store() -> None:
    svc = service()
    replayer = FakeReplayer()
    store = FakeStore({})
    batch = [_captured(b"a"), _captured(b"refused-huge")]
    assert await svc._settle(batch, replayer, store, asyncio.Event())
    assert list(store.objects.values()) == [[b"refused-huge"]]
    assert len(replayer.calls) == 1, "committed at once: the backup store holds it now"
    assert b"eventgw_recovery_moved_to_backup_total 1.0" in svc.metrics.render()


async def test_a_stop_leaves_a_pending_topic_batch_uncommitted() -> None:
    svc = service()
    stop = asyncio.Event()
    stop.set()
    batch = [_captured(b"pending-a")]
    assert not await svc._settle(batch, FakeReplayer(fails=100), FakeStore({}), stop)


def _captured(value: bytes) -> Captured:
    return Captured(value, "fw:0:1")


class RecordingBackoff(Backoff):
    """The project's backoff, with tiny delays, recording the attempts it was asked for."""

    def __init__(self) -> None:
        super().__init__(0.001, 0.002)
        self.attempts: list[int] = []

    def delay_s(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return super().delay_s(attempt)


async def test_retries_wait_with_the_one_backoff_growing_per_attempt() -> None:
    backoff = RecordingBackoff()
    svc = service(backoff=backoff)
    batch = [_captured(b"pending-a")]
    assert await svc._settle(batch, FakeReplayer(fails=3), FakeStore({}), asyncio.Event())
    assert backoff.attempts == [0, 1, 2], "one wait per failed round, growing"
    store = FakeStore({"k1": [b"pending-b"]})
    await run_backup_loop_until(svc, store, FakeReplayer(fails=1), lambda: not store.objects)
    assert backoff.attempts[3:] == [0], "a deferred object waits on the same backoff"


def test_the_default_backoff_takes_the_recovery_settings() -> None:
    svc = service()
    assert (svc._backoff.initial_s, svc._backoff.max_s) == (0.01, 0.05)


class FakeConsumer:
    """Hands out ``batch`` once, then nothing; owns the partitions of ``batch``; records
    every commit (next offsets, and metadata apart), and answers `committed` with the last
    one (and its metadata)."""

    def __init__(self, batch: list[ConsumedRecord]) -> None:
        self.batch = batch
        self.assigned = {(r.topic, r.partition) for r in batch}
        self.commits: list[dict[tuple[str, int], int]] = []
        self.metadata: list[dict[tuple[str, int], str]] = []
        self.stored: dict[tuple[str, int], tuple[int, str]] = {}

    async def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        batch, self.batch = self.batch[:max_records], self.batch[max_records:]
        await asyncio.sleep(0 if batch else 0.01)
        return batch

    async def commit(self, offsets: dict[tuple[str, int], tuple[int, str]]) -> None:
        self.commits.append({tp: offset for tp, (offset, _) in offsets.items()})
        self.metadata.append({tp: metadata for tp, (_, metadata) in offsets.items()})
        self.stored.update(offsets)

    async def committed(
        self, partitions: Sequence[tuple[str, int]], timeout_s: float
    ) -> dict[tuple[str, int], tuple[int, str]]:
        return {tp: self.stored[tp] for tp in partitions if tp in self.stored}


def fw_records(values: list[bytes], partition: int = 0) -> list[ConsumedRecord]:
    return [ConsumedRecord("fw", partition, o, b"k", v, []) for o, v in enumerate(values)]


def takeover(svc: RecoveryService, kafka: InMemoryKafka) -> Takeover:
    """The real takeover, reading the lanes back from ``kafka`` (the primary cluster)."""

    @contextlib.asynccontextmanager
    async def scanners(names: Collection[str]) -> AsyncIterator[Mapping[str, Scanner]]:
        assert names == {"primary"}, "every record here is meant for the primary cluster"
        yield {"primary": kafka}

    s = svc.settings
    return Takeover(scanners, s.topics, s.recovery, svc.metrics, svc._clock)


async def run_topic_loop_until(
    svc: RecoveryService,
    consumer: FakeConsumer,
    replayer: FakeReplayer,
    done: Callable[[], bool],
    stop: asyncio.Event | None = None,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.create_task(
        svc._topic_loop(
            consumer,  # type: ignore[arg-type]  # fakes
            replayer,
            FakeStore({}),
            takeover(svc, InMemoryKafka()),
            stop,
        )
    )
    try:
        async with asyncio.timeout(10):
            while not done() and not loop.done():  # noqa: ASYNC110  (no event in the fakes)
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await loop


async def test_a_topic_batch_is_committed_chunk_by_chunk_never_past_a_pending_event() -> None:
    """A kill repeats what was in flight, not the batch: each chunk's settled prefix is
    committed while the next one is sent; a pending event holds back only what follows it."""
    chunk = recovery_service.REPLAY_CHUNK
    values = [b"a%d" % i for i in range(2 * chunk + chunk // 2)]
    values[chunk + 20] = b"pending-x"  # in the second chunk; in Kafka on the third attempt
    consumer = FakeConsumer(fw_records(values))
    replayer = FakeReplayer(fails=2)
    svc = service()
    await run_topic_loop_until(
        svc, consumer, replayer, lambda: {("fw", 0): len(values)} in consumer.commits
    )
    assert consumer.commits == [
        {("fw", 0): 0},  # the write-ahead: where the group is, with a replay intent
        {("fw", 0): chunk},  # the first chunk, committed while the second was sent
        {("fw", 0): chunk + 20},  # up to the pending event, before its retries
        {("fw", 0): len(values)},  # once it is in Kafka
    ]
    # After the transient failure the rest went at once (one delivery timeout per round),
    # and the retries repeated only the pending event.
    assert [len(vs) for vs, _ in replayer.calls] == [chunk, chunk, chunk // 2, 1, 1]


async def test_a_stop_between_chunks_commits_what_settled_and_sends_nothing_more() -> None:
    chunk = recovery_service.REPLAY_CHUNK
    consumer = FakeConsumer(fw_records([b"a%d" % i for i in range(3 * chunk)]))
    stop = asyncio.Event()

    class StoppingReplayer(FakeReplayer):
        async def replay(
            self, captured: Sequence[Captured], *, give_up: bool = False
        ) -> ReplayReport:
            stop.set()  # SIGTERM arrives while the first chunk is in flight
            return await super().replay(captured, give_up=give_up)

    replayer = StoppingReplayer()
    await run_topic_loop_until(service(), consumer, replayer, lambda: False, stop)
    assert len(replayer.calls) == 1, "the drain sends no further chunk"
    # After the write-ahead (position 0, with an intent), what settled, on the drain.
    assert consumer.commits == [{("fw", 0): 0}, {("fw", 0): chunk}]


async def test_an_untrusted_object_is_never_replayed_kept_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore(
        {"k1": [b"forged"], "k2": [b"a"], "k3": [b"unsigned"]},
        corrupt={"k1": "bad_signature", "k3": "unsigned"},
    )
    replayer = FakeReplayer()
    svc = service()
    with caplog.at_level("ERROR"):
        await run_backup_loop_until(svc, store, replayer, lambda: "k2" not in store.objects)
    assert replayer.sent == [b"a"], "nothing of an untrusted object reaches Kafka"
    assert {"k1", "k3"} <= set(store.objects), "kept for an operator"
    rendered = svc.metrics.render().decode()
    assert 'eventgw_recovery_backup_rejected_total{reason="bad_signature"}' in rendered
    assert 'eventgw_recovery_backup_rejected_total{reason="unsigned"}' in rendered
    untrusted = [r for r in caplog.records if "recovery.untrusted_backup" in r.getMessage()]
    assert untrusted
    assert all(r.levelname == "ERROR" for r in untrusted)


async def test_an_object_handed_out_in_batches_is_deleted_after_the_last_one() -> None:
    values = [b"a1", b"pending-x", b"a2", b"a3", b"pending-y"]
    store = FakeStore({"k1": values}, batch=2)
    replayer = FakeReplayer(fails=2)  # each batch with a pending event fails once
    await run_backup_loop_until(service(), store, replayer, lambda: not store.objects)
    assert store.handed_out[:3] == [values[0:2], values[2:4], values[4:5]]
    # Both pending events, from two batches, were rewritten as one new object, alone.
    assert store.deleted == ["k1", "z1"]
    assert [vs for vs, _ in replayer.calls][3:] == [[b"pending-x", b"pending-y"]]


async def test_more_left_than_can_be_held_retries_the_whole_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recovery_service, "_REWRITE_MAX_BYTES", 10)
    values = [b"a1", b"pending-x-long", b"a2"]
    store = FakeStore({"k1": values})
    replayer = FakeReplayer(fails=1)
    await run_backup_loop_until(service(), store, replayer, lambda: not store.objects)
    assert store.deleted == ["k1"], "not rewritten: what was left did not fit in memory"
    assert [vs for vs, _ in replayer.calls] == [values, values], "duplicates, never loss"
