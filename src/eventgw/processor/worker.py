"""The worker loop: lease a batch, run the handler on each task, report the batch's results.

``pipeline_depth`` batches are in flight at a time: each of that many loops sends its next
``GetBatch`` only after every task of its current batch has a result and the results are
reported. So while one batch's last tasks run and its results are written, the next batch
is already fetched and running. A worker holds at most ``pipeline_depth x
max_tasks_per_batch`` leases and never runs more than ``concurrency`` handlers (one
semaphore for all loops). A dry run uses one loop, so its output stays in batch order.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.clock import SystemClock
from eventgw.core.lifecycle import sleep_or_stop, wait_any
from eventgw.processor.batch_client import OrchestratorUnavailable
from eventgw.processor.handlers import RELEASED, Reject, Retry, outcome_of
from eventgw.processor.results import results_record, task_result

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventgw.config.settings import ProcessorSettings
    from eventgw.core.clock import Clock
    from eventgw.core.envelope import Headers
    from eventgw.metrics.backend import Metrics
    from eventgw.processor.batch_client import BatchClient
    from eventgw.processor.handlers import Handler, Outcome

logger = logging.getLogger(__name__)

H_WORKER_ID: Final = "eventgw-worker-id"
H_BATCH_ID: Final = "eventgw-batch-id"

ACK_ATTEMPTS: Final = 3
"""gRPC ``Ack`` tries per batch before its results are given up (the leases then expire)."""

REPORT_TIMEOUT_S: Final = 30.0
"""Deadline of producing one results record before falling back to gRPC ``Ack``."""

PAYLOAD_PREVIEW_BYTES: Final = 200
"""Dry run shows at most this much of each payload."""

_RESULT_LABELS: Final = {pb.ACK: "ack", pb.NACK: "nack", pb.REJECT: "reject", pb.RELEASE: "release"}


class Backoff:
    """Capped exponential backoff with jitter.

    Attempt ``n`` (from 0) waits a random time in ``[base/2, base]`` where
    ``base = min(max_s, initial_s * 2**n)``: bounded, and many workers that lost the same
    orchestrator do not come back in lock-step.
    """

    def __init__(
        self, initial_s: float = 0.1, max_s: float = 5.0, rng: random.Random | None = None
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s=} {max_s=}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()  # noqa: S311  # jitter, not cryptography

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        base = min(self.max_s, self.initial_s * 2 ** min(attempt, 32))
        return self._rng.uniform(base / 2, base)


class DeliveryReport(Protocol):
    """What the worker reads of a produced record's outcome (`eventgw.kafka.producer.Delivery`)."""

    @property
    def ok(self) -> bool:
        """True when Kafka confirmed the write."""
        ...

    @property
    def error(self) -> str:
        """Why the write failed; empty on success."""
        ...


class ResultsProducer(Protocol):
    """The Kafka producer the worker needs (`eventgw.kafka.producer.BatchProducer`)."""

    async def send(
        self,
        topic: str,
        records: Sequence[tuple[bytes, bytes, Headers]],
        partition: int | None = None,
    ) -> Sequence[DeliveryReport]:
        """Produce ``records`` to ``topic`` (at ``partition``); one report per record."""
        ...


class WorkerState(enum.Enum):
    """Lifecycle of a `Worker`: IDLE → RUNNING → (DRAINING →) STOPPED; ``run`` once."""

    IDLE = "idle"  # constructed, run() not called yet
    RUNNING = "running"  # fetching and handling batches
    DRAINING = "draining"  # stop seen mid-batch: running handlers finish, no new ones start
    STOPPED = "stopped"  # run() returned; every fetched task has had its result reported


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """Counters of one worker since it started (see `Worker.statistics`)."""

    state: WorkerState
    batches: int  # non-empty batches fetched
    tasks_handled: int  # handler ran to an outcome (execute) or task shown (dry run)
    running: int  # handler calls in progress now
    results: dict[str, int]  # results reported, by kind (ack, nack, reject, release)
    late_results: int  # results produced after their lease expired (may count stale)
    fetch_failures: int  # GetBatch calls that failed
    report_fallbacks: int  # results-topic writes that failed and went over gRPC instead
    reports_lost: int  # batches whose results no path took (their leases expire)


class Worker:
    """Pulls batches from the orchestrators and reports one result per task.

    Fetch: ``GetBatch`` long-polls round-robin over the orchestrators. A failed call moves
    on to the next one at once; after a full round of failures the worker backs off
    (`Backoff`, interrupted by stop) and tries again, indefinitely.

    Execute (``settings.execute``): the batch's tasks run concurrently, at most
    ``concurrency`` handler calls at once; each gets its result from
    `eventgw.processor.handlers.outcome_of`. A handler past its lease is not cancelled;
    its late result is still reported. Report: the whole batch in ONE message — a
    ``TaskResults`` record to ``results_topic`` at partition ``orchestrator_index`` (key:
    the worker id), awaiting Kafka's confirmation; if that write fails, or
    ``results_via="grpc"``, one ``Ack`` call to the orchestrator that served the batch
    (``ACK_ATTEMPTS`` tries with backoff). If no path takes the results, they are dropped
    with a warning: nothing is lost, the leases expire and the tasks are served again.

    Dry run (``execute=False``): each task is shown with ``show`` (one line, payload cut to
    ``PAYLOAD_PREVIEW_BYTES``), no handler runs, and every task is released (RELEASE, no
    attempt counted) over gRPC ``Ack``.

    Shutdown (``stop`` set): no new ``GetBatch`` is sent; a poll already in flight is
    allowed to finish (bounded by ``wait_ms`` plus the client's slack) so the tasks it
    leased are released at once instead of waiting out their lease. In the current batch,
    tasks not started are RELEASEd; running handlers get ``shutdown_timeout_s`` to finish
    (drain), then are cancelled and RELEASEd (terminate). The batch's results are reported
    before ``run`` returns. ``max_batches > 0`` ends the run after that many non-empty
    batches, the same way.
    """

    def __init__(
        self,
        *,
        settings: ProcessorSettings,
        client: BatchClient,
        handler: Handler,
        metrics: Metrics,
        show: Callable[[str], None],
        producer: ResultsProducer | None = None,
        results_topic: str = "",
        backoff: Backoff | None = None,
        clock: Clock | None = None,
    ) -> None:
        if (
            settings.execute
            and settings.results_via == "topic"
            and (producer is None or not results_topic)
        ):
            raise ValueError("results_via='topic' needs a producer and a results_topic")
        self._settings = settings
        self._client = client
        self._handler = handler
        self._show = show
        self._producer = producer if settings.results_via == "topic" else None
        self._results_topic = results_topic
        self._backoff = backoff or Backoff()
        self._clock = clock or SystemClock()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._state = WorkerState.IDLE
        self._target = 0  # next orchestrator to ask (round-robin over all loops)
        self._failures = 0  # consecutive fetch failures, over all targets and loops
        self._fetching = 0  # GetBatch calls in flight
        self._batches = 0
        self._handled = 0
        self._running = 0
        self._late = 0
        self._fetch_failures = 0
        self._fallbacks = 0
        self._lost = 0
        self._results = dict.fromkeys(_RESULT_LABELS.values(), 0)
        tasks_total = metrics.counter(
            "eventgw_processor_tasks_total", "task results reported", ["result"]
        )
        self._result_counters = {k: tasks_total.labels(v) for k, v in _RESULT_LABELS.items()}
        self._duration = metrics.histogram(
            "eventgw_processor_handler_duration_seconds", "one handler call"
        )
        self._batches_total = metrics.counter(
            "eventgw_processor_batches_total", "non-empty batches fetched"
        )

    def statistics(self) -> WorkerStatistics:
        """A snapshot of the counters and state."""
        return WorkerStatistics(
            state=self._state,
            batches=self._batches,
            tasks_handled=self._handled,
            running=self._running,
            results=dict(self._results),
            late_results=self._late,
            fetch_failures=self._fetch_failures,
            report_fallbacks=self._fallbacks,
            reports_lost=self._lost,
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Fetch and handle batches until ``stop`` or ``max_batches``; see the class docstring.

        Returns:
            The number of tasks handled (dry run: shown).

        Raises:
            RuntimeError: ``run`` was called before.
        """
        if self._state is not WorkerState.IDLE:
            raise RuntimeError(f"worker already ran (state {self._state.value})")
        self._state = WorkerState.RUNNING
        depth = self._settings.pipeline_depth if self._settings.execute else 1
        try:
            async with asyncio.TaskGroup() as tg:
                for n in range(depth):
                    tg.create_task(self._loop(stop), name=f"processor-loop-{n}")
        finally:
            self._state = WorkerState.STOPPED
        return self._handled

    async def _loop(self, stop: asyncio.Event) -> None:
        """One fetch → handle → report cycle after another (`run` runs ``pipeline_depth``)."""
        s = self._settings
        targets = len(self._client.targets)
        while not stop.is_set():
            # Fetches in flight count against max_batches, so that it is never exceeded.
            if s.max_batches and self._batches + self._fetching >= s.max_batches:
                return
            served_by = self._target
            self._target = (self._target + 1) % targets
            self._fetching += 1
            try:
                batch = await self._client.get_batch(served_by, s.max_tasks_per_batch, s.wait_ms)
            except OrchestratorUnavailable as exc:
                self._failures += 1
                self._fetch_failures += 1
                failures = self._failures
                logger.warning(
                    "processor.fetch_failed target=%s failures=%d error=%s",
                    exc.target,
                    failures,
                    exc,
                )
                if failures % targets == 0:
                    await sleep_or_stop(stop, self._backoff.delay_s(failures // targets - 1))
                continue
            finally:
                self._fetching -= 1
            if self._failures:
                logger.info("processor.fetch_recovered target=%s", self._client.targets[served_by])
                self._failures = 0
            if batch.tasks:
                await self._handle_batch(served_by, batch, stop)

    async def _handle_batch(
        self, target: int, batch: pb.GetBatchResponse, stop: asyncio.Event
    ) -> None:
        self._batches += 1
        self._batches_total.inc()
        logger.debug(
            "processor.batch batch_id=%s tasks=%d orchestrator_index=%d",
            batch.batch_id,
            len(batch.tasks),
            batch.orchestrator_index,
        )
        if not self._settings.execute:
            for task in batch.tasks:
                self._show(task_summary(task))
            self._handled += len(batch.tasks)
            await self._ack(target, batch, [RELEASED] * len(batch.tasks))
            return
        outcomes = [o or RELEASED for o in await self._run_tasks(batch.tasks, stop)]
        now_ms = self._clock.wall_ms()
        late = sum(1 for t in batch.tasks if t.lease_expires_ms and t.lease_expires_ms < now_ms)
        if late:
            self._late += late
            logger.warning(
                "processor.results_late batch_id=%s tasks=%d (lease expired: may count stale)",
                batch.batch_id,
                late,
            )
        await self._report(target, batch, outcomes)

    async def _run_tasks(
        self, tasks: Sequence[pb.Task], stop: asyncio.Event
    ) -> list[Outcome | None]:
        """Run the handler on ``tasks`` (bounded); None marks a task not run to an outcome.

        A pool of at most ``concurrency`` runner coroutines takes the tasks in order (not an
        asyncio task per event: creating one cost more than a quick handler); each runner
        holds a slot of the worker-wide semaphore while a handler runs.
        """
        outcomes: list[Outcome | None] = [None] * len(tasks)
        pending = iter(enumerate(tasks))
        all_done = asyncio.Event()
        runners_left = min(self._settings.concurrency, len(tasks))
        slots = self._slots

        async def runner() -> None:
            nonlocal runners_left
            try:
                for i, task in pending:
                    async with slots:
                        # Checked after the slot is ours: a task that waited for a slot
                        # while stop was set must not start (it is released instead).
                        if stop.is_set():
                            return
                        outcomes[i] = await self._call_handler(task)
            finally:
                runners_left -= 1
                if runners_left == 0:
                    all_done.set()

        async with asyncio.TaskGroup() as tg:
            runners = [tg.create_task(runner()) for _ in range(runners_left)]
            await wait_any(stop, all_done)
            if not all_done.is_set():
                self._state = WorkerState.DRAINING
                grace_s = self._settings.shutdown_timeout_s
                logger.info("processor.draining running=%d grace_s=%.1f", self._running, grace_s)
                try:
                    async with asyncio.timeout(grace_s):
                        await all_done.wait()
                except TimeoutError:
                    logger.warning(
                        "processor.handlers_cancelled count=%d (past shutdown_timeout_s)",
                        self._running,
                    )
                    for r in runners:
                        r.cancel()
        self._handled += sum(1 for o in outcomes if o is not None)
        return outcomes

    async def _call_handler(self, task: pb.Task) -> Outcome:
        event = task.event
        self._running += 1
        started = self._clock.monotonic()
        try:
            await self._handler(event)
        except Retry as exc:
            logger.debug("processor.retry event_id=%s delay_s=%g", event.event_id, exc.delay)
            return outcome_of(exc)
        except Reject as exc:
            logger.warning("processor.rejected event_id=%s reason=%s", event.event_id, exc.reason)
            return outcome_of(exc)
        except Exception as exc:
            # Task boundary: the user's handler failed; the event is NACKed, the worker lives.
            logger.warning(
                "processor.handler_failed event_id=%s task_id=%s error=%s",
                event.event_id,
                task.task_id,
                exc,
                exc_info=True,
            )
            return outcome_of(exc)
        finally:
            self._running -= 1
            self._duration.observe(self._clock.monotonic() - started)
        return outcome_of(None)

    async def _report(
        self, target: int, batch: pb.GetBatchResponse, outcomes: list[Outcome]
    ) -> None:
        """Report the batch's results: results topic first (if configured), else gRPC."""
        if self._producer is not None:
            worker_id = self._client.worker_id
            record = (
                worker_id.encode(),
                results_record(batch.tasks, outcomes, worker_id, batch.orchestrator_index),
                [(H_WORKER_ID, worker_id.encode()), (H_BATCH_ID, batch.batch_id.encode())],
            )
            error = ""
            try:
                async with asyncio.timeout(REPORT_TIMEOUT_S):
                    [delivery] = await self._producer.send(
                        self._results_topic, [record], partition=batch.orchestrator_index
                    )
                error = delivery.error
            except TimeoutError:
                error = f"no delivery report within {REPORT_TIMEOUT_S:g}s"
            if not error:
                self._count(outcomes)
                return
            self._fallbacks += 1
            logger.warning(
                "processor.results_produce_failed topic=%s partition=%d error=%s "
                "(falling back to gRPC Ack)",
                self._results_topic,
                batch.orchestrator_index,
                error,
            )
        await self._ack(target, batch, outcomes)

    async def _ack(self, target: int, batch: pb.GetBatchResponse, outcomes: list[Outcome]) -> None:
        # Not interrupted by stop on purpose: results are flushed before the worker returns.
        # Bounded by ACK_ATTEMPTS x the client's deadline.
        worker_id, index = self._client.worker_id, batch.orchestrator_index
        results = [
            task_result(task, outcome, worker_id, index)
            for task, outcome in zip(batch.tasks, outcomes, strict=True)
        ]
        for attempt in range(ACK_ATTEMPTS):
            try:
                response = await self._client.ack(target, results)
            except OrchestratorUnavailable as exc:
                logger.warning(
                    "processor.ack_failed batch_id=%s attempt=%d error=%s",
                    batch.batch_id,
                    attempt + 1,
                    exc,
                )
                if attempt + 1 < ACK_ATTEMPTS:
                    await asyncio.sleep(self._backoff.delay_s(attempt))
                continue
            if response.stale:
                logger.warning(
                    "processor.results_stale batch_id=%s stale=%d accepted=%d",
                    batch.batch_id,
                    response.stale,
                    response.accepted,
                )
            self._count(outcomes)
            return
        self._lost += 1
        logger.warning(
            "processor.results_lost batch_id=%s tasks=%d (served again after lease expiry)",
            batch.batch_id,
            len(results),
        )

    def _count(self, outcomes: list[Outcome]) -> None:
        by_kind: dict[pb.ResultKind, int] = {}
        for o in outcomes:
            by_kind[o.kind] = by_kind.get(o.kind, 0) + 1
        for kind, n in by_kind.items():  # one counter update per kind and batch
            self._results[_RESULT_LABELS[kind]] += n
            self._result_counters[kind].inc(n)


def task_summary(task: pb.Task) -> str:
    """One line describing ``task`` for a dry run; the payload is cut to 200 bytes."""
    event = task.event
    payload = event.payload[:PAYLOAD_PREVIEW_BYTES].decode("utf-8", errors="replace")
    more = len(event.payload) - PAYLOAD_PREVIEW_BYTES
    suffix = f"... (+{more} bytes)" if more > 0 else ""
    cls = pb.Priority.Name(event.priority) if event.priority in pb.Priority.values() else "?"
    return (
        f"task_id={task.task_id} event_id={event.event_id} class={cls} lane={task.lane} "
        f"company={event.company_id} delivery_count={task.delivery_count} "
        f"attempt={event.attempt} payload={payload!r}{suffix}"
    )
