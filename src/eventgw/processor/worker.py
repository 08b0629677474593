"""The worker: tasks in from every orchestrator, the handler on each, results back.

Credit-based (docs/dispatch-protocol.md): the worker keeps one ``Work`` stream per
orchestrator (`Link`) and gives each credit — how many more tasks it can take. It never
holds more than ``concurrency`` running tasks plus a small prefetch (what its slots start
within ``prefetch_window_ms``, `PrefetchEstimator`), and it starts the prefetched ones in
the orchestrators' order (`TaskQueue`, by rank), so a P30 task that arrives behind P10 work
starts at the next free slot. Results go back on the stream they came from, several per
message, together with the credit the finished tasks freed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.clock import SystemClock
from eventgw.core.lifecycle import wait_any
from eventgw.metrics.backend import LATENCY_BUCKETS
from eventgw.processor.credit import PrefetchEstimator, plan_credit
from eventgw.processor.handlers import ACKED, RELEASED, Reject, Retry, outcome_of
from eventgw.processor.link import GRPC_OPTIONS, Link, LinkState
from eventgw.processor.results import results_record
from eventgw.processor.start_latency import StartLatency
from eventgw.processor.task_queue import TaskQueue

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventgw.config.settings import ProcessorSettings
    from eventgw.core.clock import Clock
    from eventgw.core.envelope import Headers
    from eventgw.core.retry import Backoff
    from eventgw.grpc_auth import Metadata
    from eventgw.metrics.backend import Metrics
    from eventgw.processor.handlers import Handler, Outcome
    from eventgw.processor.results import Result

logger = logging.getLogger(__name__)

__all__ = [
    "DeliveryReport",
    "ResultsProducer",
    "Worker",
    "WorkerState",
    "WorkerStatistics",
    "task_summary",
]

H_WORKER_ID: Final = "eventgw-worker-id"

FALLBACK_TIMEOUT_S: Final = 30.0
"""Deadline of writing undeliverable results to the response topic."""

PAYLOAD_PREVIEW_BYTES: Final = 200
"""Dry run shows at most this much of each payload."""

_RESULT_LABELS: Final = {pb.ACK: "ack", pb.NACK: "nack", pb.REJECT: "reject", pb.RELEASE: "release"}
_ESTIMATE_EVERY: Final = 64  # handler calls between two re-estimates of the prefetch

_Held = tuple[pb.Task, Link, int]  # a task, the link it came by, that link's generation then


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
    RUNNING = "running"  # taking and handling tasks
    DRAINING = "draining"  # stopping: unstarted tasks released, running handlers finish
    STOPPED = "stopped"  # run() returned; every result it could deliver is delivered


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """Counters of one worker since it started (see `Worker.statistics`)."""

    state: WorkerState
    tasks_received: int  # tasks the orchestrators sent
    tasks_handled: int  # handler ran to an outcome (execute) or task shown (dry run)
    running: int  # handler calls in progress now
    queued: int  # tasks held, not started (at most the prefetch, give or take a grant)
    prefetch: int  # the current prefetch target
    results: dict[str, int]  # results reported, by kind (ack, nack, reject, release)
    late_results: int  # results produced after their lease expired (may count stale)
    dropped: int  # unstarted tasks dropped because their stream ended (lease returned)
    connect_failures: int  # streams that failed or could not be opened
    report_fallbacks: int  # result sets written to the response topic instead of a stream
    results_lost: int  # results no path took (their tasks are served again)


class Worker:
    """Takes tasks from the orchestrators and reports one result per task.

    Execute (``settings.execute``): ``concurrency`` runner coroutines take tasks from the
    local queue, most urgent first, and run the handler; the outcome comes from
    `eventgw.processor.handlers.outcome_of`. A handler past its lease is not cancelled; its
    late result is still reported.

    Dry run (``execute=False``): each task is shown with ``show`` (one line, payload cut to
    ``PAYLOAD_PREVIEW_BYTES``), no handler runs, and every task is released (RELEASE, no
    attempt counted) — with ``max_tasks`` only at the end, so no task is shown twice.

    Credit: the worker grants what it can take — ``concurrency`` + prefetch, less what it
    runs, holds and has granted — in steps of a quarter of that (or at once when its queue
    is empty), so credit and results travel together, a few per message.

    Stop (``stop`` set, or ``max_tasks`` handled): no more credit; unstarted tasks are
    RELEASEd; running handlers get ``shutdown_timeout_s`` to finish (drain), then are
    cancelled and RELEASEd (terminate); the results are written to the streams, which the
    worker then ends. Results a stream cannot take go to the response topic (partition =
    the orchestrator's index) when a producer is given — ``rollout_producer`` for an
    orchestrator of the rollout fleet; else they are lost with a warning and their tasks are
    served again after the lease (nothing is lost, work is repeated).
    """

    def __init__(
        self,
        *,
        settings: ProcessorSettings,
        worker_id: str,
        handler: Handler,
        metrics: Metrics,
        show: Callable[[str], None],
        producer: ResultsProducer | None = None,
        results_topic: str = "",
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        call_metadata: Metadata = (),
        rollout_producer: ResultsProducer | None = None,
    ) -> None:
        if producer is not None and not results_topic:
            raise ValueError("a results producer needs a results_topic")
        if not settings.orchestrators:
            raise ValueError("orchestrators: at least one address is needed")
        self._settings = settings
        self.worker_id = worker_id
        self._handler = handler
        self._show = show
        self._producer = producer
        self._rollout_producer = rollout_producer  # fallback results of the rollout fleet
        self._results_topic = results_topic
        clock = clock or SystemClock()
        self._wall_ms = clock.wall_ms  # bound once: read per handler call
        self._monotonic = clock.monotonic
        self._state = WorkerState.IDLE
        self._queue: TaskQueue[_Held] = TaskQueue()
        self._prefetch = PrefetchEstimator(
            settings.concurrency, settings.prefetch_window_ms / 1000, settings.max_prefetch
        )
        self._links = [
            Link(
                target,
                worker_id,
                on_batch=self._on_batch,
                on_state=self._on_link_state,
                fallback=self._fall_back,
                backoff=backoff,
                call_metadata=call_metadata,
            )
            for target in settings.orchestrators
        ]
        self._accepting = True  # grants credit; False once stopping
        self._done = asyncio.Event()  # max_tasks handled
        self._stop = asyncio.Event()  # run()'s stop, once it runs
        self._received = self._handled = self._running = 0
        self._held = 0  # received and not yet reported or dropped: queued, handed or running
        self._late = self._dropped = 0
        self._busy_s = 0.0  # handler time not yet folded into the prefetch estimate
        self._busy_n = 0
        self._held_releases: list[tuple[Link, int, Result]] = []  # dry run with max_tasks
        self._results = dict.fromkeys(_RESULT_LABELS.values(), 0)
        # Counted in plain integers on the hot path; Prometheus reads them when it scrapes.
        metrics.counter_from(
            "eventgw_processor_tasks_total",
            "task results reported",
            ["result"],
            lambda: {(kind,): float(n) for kind, n in self._results.items()},
        )
        metrics.counter_from(
            "eventgw_processor_tasks_received_total",
            "tasks received from orchestrators",
            [],
            lambda: {(): float(self._received)},
        )
        self._duration = metrics.bulk_histogram(
            "eventgw_processor_handler_duration_seconds",
            "one handler call",
            buckets=LATENCY_BUCKETS,
        ).labels()
        # Credit bookkeeping kept incrementally: the hot path must not sum over links.
        self._outstanding = 0  # credit granted on every link and not used yet
        self._capacity = settings.concurrency + self._prefetch.prefetch()
        self._threshold = max(1, self._capacity // 4)
        self._since_estimate = 0  # handler calls since the prefetch was last re-estimated
        self._start_latency = StartLatency(metrics)

    def statistics(self) -> WorkerStatistics:
        """A snapshot of the counters and state."""
        links = self._links
        return WorkerStatistics(
            state=self._state,
            tasks_received=self._received,
            tasks_handled=self._handled,
            running=self._running,
            queued=len(self._queue),
            prefetch=self._prefetch.prefetch(),
            results=dict(self._results),
            late_results=self._late,
            dropped=self._dropped,
            connect_failures=sum(link.connect_failures for link in links),
            report_fallbacks=sum(link.fallbacks for link in links),
            results_lost=sum(link.results_lost for link in links),
        )

    # -- run ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Take and handle tasks until ``stop`` or ``max_tasks``; see the class docstring.

        Returns:
            The number of tasks handled (dry run: shown).

        Raises:
            RuntimeError: ``run`` was called before.
        """
        if self._state is not WorkerState.IDLE:
            raise RuntimeError(f"worker already ran (state {self._state.value})")
        self._state = WorkerState.RUNNING
        self._stop = stop
        s = self._settings
        channels = [grpc.aio.insecure_channel(t, options=GRPC_OPTIONS) for t in s.orchestrators]
        closing = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                for link, channel in zip(self._links, channels, strict=True):
                    tg.create_task(link.run(channel, closing), name=f"link-{link.target}")
                runners = [
                    tg.create_task(self._runner(stop), name=f"runner-{n}")
                    for n in range(s.concurrency)
                ]
                await wait_any(stop, self._done)
                await self._drain(runners)
                closing.set()
        finally:
            self._state = WorkerState.STOPPED
            for channel in channels:
                await channel.close()
        return self._handled

    async def _drain(self, runners: list[asyncio.Task[None]]) -> None:
        """Stop taking tasks; release unstarted ones; give running handlers their grace."""
        self._state = WorkerState.DRAINING
        self._accepting = False
        for task, link, generation in self._queue.take_all():
            self._report(link, generation, task, RELEASED)
            self._held -= 1
        self._queue.close()  # idle runners return; busy ones after their current task
        for link, generation, result in self._held_releases:
            if link.generation == generation:
                link.add_result(result)
        self._held_releases.clear()
        pending = [r for r in runners if not r.done()]
        if not pending:
            return
        grace_s = self._settings.shutdown_timeout_s
        logger.info("processor.draining running=%d grace_s=%.1f", self._running, grace_s)
        _done, still = await asyncio.wait(pending, timeout=grace_s)
        if still:
            logger.warning(
                "processor.handlers_cancelled count=%d (past shutdown_timeout_s)", len(still)
            )
            for r in still:
                r.cancel()
            await asyncio.wait(still)

    # -- tasks in -------------------------------------------------------------------------

    def _on_batch(self, link: Link, batch: pb.TaskBatch) -> None:
        tasks = batch.tasks
        n = len(tasks)
        credit = link.credit
        credit.credit = max(0, credit.credit - n - batch.credit_returned)
        credit.backlog = batch.backlog
        credit.revoking = False
        self._outstanding = max(0, self._outstanding - n - batch.credit_returned)
        if n:
            self._received += n
            generation = link.generation
            put = self._queue.put
            if self._accepting:
                self._held += n
                for task in tasks:
                    put(task.rank, (task, link, generation))
            else:  # stopping: hand them straight back
                for task in tasks:
                    self._report(link, generation, task, RELEASED)
        self._plan(force=batch.credit_returned > 0 or (n == 0 and batch.backlog > 0))

    def _on_link_state(self, link: Link) -> None:
        if link.state is LinkState.OPEN:
            self._plan(force=True)
            return
        # The stream ended: the orchestrator returned its leases. Unstarted tasks from it
        # would be run twice; drop them. (Running ones finish; their results go by fallback.)
        # Its recent ACKs go to the other orchestrators too: if the replica died, its
        # partitions move to one of them, which then finishes those records when it reads
        # them again instead of serving them twice.
        if self._accepting:
            acks = link.recent_acks()
            for other in self._links:
                if other is not link and other.fleet == link.fleet:  # task ids are per cluster
                    other.replay(acks)
        dropped = self._queue.remove_if(lambda held: held[1] is link)
        if dropped:
            self._dropped += len(dropped)
            self._held -= len(dropped)
            logger.info(
                "processor.tasks_dropped target=%s tasks=%d (stream ended: leases returned)",
                link.target,
                len(dropped),
            )
        self._plan(force=True)

    def _plan(self, *, force: bool = False) -> None:
        """Grant the credit the worker can take now (see the class docstring).

        The common call — a handler finished, work still queued — is a few comparisons:
        credit goes out in steps of a quarter of the capacity. ``force`` (a stream opened or
        ended, credit came back, a backlog was hinted) re-estimates and re-plans at once.
        """
        free = self._capacity - self._held - self._outstanding
        if not force and free < self._threshold and len(self._queue):
            return
        if not self._accepting or self._stop.is_set() or self._done.is_set():
            return
        if force or self._since_estimate >= _ESTIMATE_EVERY:
            self._estimate()
            free = self._capacity - self._held - self._outstanding
        max_tasks = self._settings.max_tasks
        if max_tasks:
            free = min(free, max_tasks - self._handled - self._held - self._outstanding)
        links = self._links
        if len(links) == 1:
            # What plan_credit gives a single orchestrator: all the free credit, no revoke.
            link = links[0]
            if free > 0 and link.credit.connected:
                link.grant(free)
                self._outstanding += free
            return
        grants, revokes = plan_credit([link.credit for link in links], max(free, 0))
        for link, grant, revoke in zip(links, grants, revokes, strict=True):
            if grant:
                link.grant(grant)
                self._outstanding += grant
            if revoke:
                link.revoke(revoke)

    def _estimate(self) -> None:
        """Fold the recent handler durations into the prefetch; recount the credit."""
        if self._busy_n:
            self._prefetch.observe(self._busy_s, self._busy_n)
            self._busy_s, self._busy_n = 0.0, 0
        self._since_estimate = 0
        self._capacity = self._settings.concurrency + self._prefetch.prefetch()
        self._threshold = max(1, self._capacity // 4)
        self._outstanding = sum(
            link.credit.credit for link in self._links if link.state is LinkState.OPEN
        )

    # -- running ----------------------------------------------------------------------------

    async def _runner(self, stop: asyncio.Event) -> None:
        """Start held tasks one at a time, most urgent first, until the queue closes.

        This is the worker's per-task hot path, so the handler is awaited here, not in a
        coroutine of its own; the wall clock is read once per task (the lease check adds the
        monotonic duration to the start) and the metrics are plain additions.
        """
        queue = self._queue
        get, get_nowait = queue.get, queue.get_nowait
        execute = self._settings.execute
        done = self._done
        handler = self._handler
        wall_ms, monotonic = self._wall_ms, self._monotonic
        record_start = self._start_latency.record
        observe_duration = self._duration.observe
        results = self._results
        open_ = LinkState.OPEN  # a local: an Enum member lookup costs ~60 ns, per task here
        while True:
            held = get_nowait()
            if held is None:
                held = await get()
                if held is None:
                    return
            task, link, generation = held
            if link.generation != generation or link.state is not open_:
                self._dropped += 1  # its stream ended: the lease was returned
                self._held -= 1
                continue
            if stop.is_set() or done.is_set():
                # Stopping: a task not started yet is handed back, not run.
                self._report(link, generation, task, RELEASED)
                self._held -= 1
                continue
            if not execute:
                self._show(task_summary(task))
                self._handled += 1
                self._report(link, generation, task, RELEASED, hold=bool(self._settings.max_tasks))
            else:
                event = task.event
                self._running += 1
                started_ms = wall_ms()
                record_start(event, started_ms)
                started = monotonic()
                try:
                    try:
                        await handler(event)
                    except Retry as exc:
                        logger.debug(
                            "processor.retry event_id=%s delay_s=%g", event.event_id, exc.delay
                        )
                        outcome = outcome_of(exc)
                    except Reject as exc:
                        logger.warning(
                            "processor.rejected event_id=%s reason=%s", event.event_id, exc.reason
                        )
                        outcome = outcome_of(exc)
                    except Exception as exc:
                        # Task boundary: the user's handler failed; the event is NACKed, the
                        # worker lives.
                        logger.warning(
                            "processor.handler_failed event_id=%s task_id=%s error=%s",
                            event.event_id,
                            task.task_id,
                            exc,
                            exc_info=True,
                        )
                        outcome = outcome_of(exc)
                    else:
                        outcome = ACKED
                    finally:
                        self._running -= 1
                        took = monotonic() - started
                        self._busy_s += took
                        self._busy_n += 1
                        self._since_estimate += 1
                        observe_duration(took)
                        # It ended at its start plus what it took: no second wall clock read.
                        lease_ms = task.lease_expires_ms
                        if lease_ms and lease_ms < started_ms + took * 1000:
                            self._late += 1
                except asyncio.CancelledError:
                    self._report(link, generation, task, RELEASED)
                    self._held -= 1
                    raise
                self._handled += 1
                # _report inline, with the event at hand.
                results[_RESULT_LABELS[outcome.kind]] += 1
                link.add_result(
                    (task.task_id, task.delivery_count, event.event_id, outcome), generation
                )
            self._held -= 1
            max_tasks = self._settings.max_tasks
            if max_tasks and self._handled >= max_tasks:
                self._done.set()
            else:
                self._plan()

    def _report(
        self, link: Link, generation: int, task: pb.Task, outcome: Outcome, *, hold: bool = False
    ) -> None:
        result: Result = (task.task_id, task.delivery_count, task.event.event_id, outcome)
        self._results[_RESULT_LABELS[outcome.kind]] += 1
        if hold:
            self._held_releases.append((link, generation, result))
        else:
            link.add_result(result, generation)

    async def _fall_back(self, link: Link, results: list[Result]) -> bool:
        """Write results a stream could not take to the response topic, if there is one."""
        # The response topic of the cluster the orchestrator serves (its fleet).
        producer = self._rollout_producer if link.fleet == "rollout" else self._producer
        index = link.orchestrator_index
        if producer is None or index is None:
            return False
        record = (
            self.worker_id.encode(),
            results_record(results, self.worker_id, index),
            [(H_WORKER_ID, self.worker_id.encode())],
        )
        try:
            async with asyncio.timeout(FALLBACK_TIMEOUT_S):
                [delivery] = await producer.send(self._results_topic, [record], partition=index)
        except TimeoutError:
            logger.warning("processor.results_fallback_timeout target=%s", link.target)
            return False
        if not delivery.ok:
            logger.warning(
                "processor.results_fallback_failed target=%s error=%s", link.target, delivery.error
            )
            return False
        logger.info(
            "processor.results_fallback target=%s partition=%d results=%d",
            link.target,
            index,
            len(results),
        )
        return True


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
