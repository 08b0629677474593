"""The orchestrator's core: records in, ready tasks out to workers with credit, results applied.

`Dispatcher` owns the `PriorityBuffer` (what is buffered, leased or delayed), the
`AckTracker` (what may be committed) and the open worker sessions (`WorkerSession`: one per
``Work`` stream). It is driven by the service, all on one event loop, no locks: fetch loops
call `add_records`, the ``Work`` streams call `open_session` / `grant` / `revoke_credit` /
`apply_results` / `close_session`, the response-topic reader calls `apply_results`, a timer
calls `tick`. Protocol: docs/dispatch-protocol.md.

Dispatch (credit-based): a ready task goes to a worker that has credit as soon as it is
ready, in the buffer's order (docs/priorities-and-backpressure.md), never more tasks than
the credit: whatever a worker holds unstarted is bounded by what it asked for. Every change
that can make a task ready or give credit ends in `_dispatch`.

Result rules (the unit suite tests/unit/orchestrator/test_dispatcher.py states each):
- ACK: done → the offset becomes committable; accepted for a task in any state (the work
  was done, even if the lease expired or the worker's stream ended since) except one leased
  now to another stream: a stream cannot finish another worker's lease (that worker runs
  the task anyway; its own ACK finishes it). From the response topic, any state.
- RELEASE: served again, no attempt counted (dry run, worker shutdown).
- NACK(delay, error): attempt += 1. Past ``max_attempts`` → DLQ. Delay below
  ``memory_retry_max_s`` → held in memory, then served again. Otherwise → the retry topic for
  this attempt (60 s, 120 s, 240 s, 480 s); done once Kafka confirmed the retry record.
- REJECT(error): straight to the DLQ.
- RELEASE, NACK and REJECT apply only to the current lease, and a result arriving on a
  stream only to a lease of that stream: anything else is stale (counted, ignored).
Retry and DLQ records keep the original class and deadline; headers carry the original
topic, the attempt and the last error.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    H_LAST_ERROR,
    H_ORIGINAL_TOPIC,
    H_REDRIVEN,
    H_RETRY_AT_MS,
    SLO_SECONDS,
    Priority,
    event_headers,
    header_value,
)
from eventgw.metrics.slo import class_label
from eventgw.orchestrator import commit_metadata
from eventgw.orchestrator.ack_tracker import AckTracker
from eventgw.orchestrator.priority_buffer import BUFFER_LANES, PriorityBuffer
from eventgw.orchestrator.sessions import WorkerSession
from eventgw.orchestrator.slo_recorder import SloRecorder
from eventgw.orchestrator.task_heaps import BufferedTask
from eventgw.orchestrator.wire import hint, task_batches

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventgw.config.settings import OrchestratorSettings, TopicSettings
    from eventgw.core.envelope import BufferLane, Headers
    from eventgw.kafka.consumer import ConsumedRecord
    from eventgw.kafka.producer import Record
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

__all__ = ["RETRY_DELAYS_S", "Dispatcher", "LaneCounters", "RecordWriter"]

# Wire priority → class, as a dict: calling the enum (``Priority(20)``) per record cost more.
_PRIORITY_OF: dict[int, Priority] = {p.value: p for p in Priority}
_P10 = Priority.P10  # unknown or missing priority: the least urgent class
_ACK, _RELEASE, _REJECT = pb.ACK, pb.RELEASE, pb.REJECT

RETRY_DELAYS_S = (60.0, 120.0, 240.0, 480.0)
_MAX_EARLY_ACKS = 100_000  # ACKs for unknown tasks kept (bounded memory)
_STANDARD_HEADERS = 4  # event id, class, deadline, attempt (core.envelope.lane_headers)

_MAX_ATTEMPT = 2**32 - 1  # EventData.attempt is a uint32
_MAX_RETRY_AT_DIGITS = 15  # a wall-clock ms value has 13; more is not a time (bounded parse)


class RecordWriter(Protocol):
    """Where retry and DLQ records go (`eventgw.orchestrator.retry_writer.RetryWriter`)."""

    def submit(
        self, topic: str, record: Record, done: Callable[[bool], None], *, forever: bool = False
    ) -> None:
        """Write ``record`` to ``topic`` in the background; ``done(ok)`` once settled."""
        ...


@dataclass
class LaneCounters:
    """Cumulative outcomes per lane (or class), for stats and metrics."""

    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    expired: int = 0


class Dispatcher:
    """See the module docstring."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        topics: TopicSettings,
        writer: RecordWriter,
        metrics: Metrics,
        *,
        now_ms: Callable[[], int] | None = None,
        monotonic: Callable[[], float] | None = None,
        now_wall: Callable[[], float] = time.time,
        fleet: str = "primary",
        time_scale: float = 1.0,
    ) -> None:
        # time_scale (tests only, OrchestratorService): retry delays and leases x time_scale.
        if not 0 < time_scale <= 1:
            raise ValueError(f"time_scale must be in (0, 1], got {time_scale}")
        self._time_scale = time_scale
        self._s = settings
        self.fleet = fleet  # the Kafka cluster served (config/fleets.py), told in the welcome
        self._topics = topics
        self._writer = writer
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self._mono = monotonic or time.monotonic
        self._wall = now_wall
        self._lease_s = settings.lease_s * time_scale
        self.buffer = PriorityBuffer(
            settings.buffer_budget_bytes,
            settings.lane_shares,
            hysteresis=settings.resume_hysteresis,
            late_share_every=settings.late_share_every,
            now_ms=self._now_ms,
            monotonic=self._mono,
        )
        self.tracker = AckTracker()
        self.slo = SloRecorder(metrics, self._now_ms)  # met/missed per ACK, per message
        # Where the SLO budget goes (docs/operations.md, "Where a class waits"): ingest →
        # taken into the buffer, and ingest → leased to a worker, per class.
        stages = metrics.bulk_histogram(
            "eventgw_orchestrator_stage_latency_seconds",
            "ingest to a read-path stage (intake: taken into the buffer; leased: handed to "
            "a worker), by class",
            ["class", "stage"],
        )
        self._m_intake = {p: stages.labels(class_label(p), "intake").observe for p in Priority}
        self._m_leased = {p: stages.labels(class_label(p), "leased").observe for p in Priority}
        self.lane_of_topic: dict[str, BufferLane] = {
            topics.p30: "p30",
            topics.p20: "p20",
            topics.p10: "p10",
            topics.offload: "offload",
        }
        self.retry_topics = (
            topics.retry_60s,
            topics.retry_120s,
            topics.retry_240s,
            topics.retry_480s,
        )
        for t in self.retry_topics:
            self.lane_of_topic[t] = "retry"
        self.counters: dict[BufferLane, LaneCounters] = {
            lane: LaneCounters() for lane in BUFFER_LANES
        }
        self.class_counters: dict[int, LaneCounters] = {p.value: LaneCounters() for p in Priority}
        self.serving = True
        self.sessions: set[WorkerSession] = set()
        # Sessions with credit, in the order they get served next (round robin).
        self._credited: dict[WorkerSession, None] = {}
        # Retry-lane tasks: the lane topic they first came from (from their headers).
        self._origin: dict[str, str] = {}
        self._writing: set[str] = set()  # task ids whose retry/DLQ write is in flight
        # Redriven from the DLQ (eventgw-redriven): carried onto retry records; the parking
        # lot instead of the DLQ if they fail for good again (docs/failure-handling.md).
        self._redriven: dict[str, bytes] = {}
        self.stale_results = 0
        self.returned_on_disconnect = 0
        # Crash-dedupe (docs/delivery-semantics.md, "Duplicates"). Per partition, runs of
        # offsets a previous owner finished above its committed offset (its commit metadata):
        # those records are finished at once when read again, not served.
        self._finished_before: dict[tuple[str, int], deque[tuple[int, int]]] = {}
        # ACKs for tasks not (yet) in the buffer — a worker's result after this replica
        # restarted, before it read the record again: task id -> monotonic expiry.
        self._early_acks: dict[str, float] = {}
        self.skipped_finished = 0  # records finished at intake by the two above
        dispatched = metrics.counter(
            "eventgw_orchestrator_dispatched_total", "tasks leased to workers", ["lane"]
        )
        self._m_dispatched = {lane: dispatched.labels(lane) for lane in BUFFER_LANES}
        results = metrics.counter(
            "eventgw_orchestrator_results_total", "worker results by kind", ["result"]
        )
        self._m_results = {
            kind: results.labels(name)
            for kind, name in (
                (pb.ACK, "ack"),
                (pb.NACK, "nack"),
                (pb.RELEASE, "release"),
                (pb.REJECT, "reject"),
                (pb.RESULT_KIND_UNSPECIFIED, "unspecified"),
            )
        }
        self._m_stale = results.labels("stale")
        invalid = metrics.counter(
            "eventgw_orchestrator_invalid_records_total",
            "records that are not what their topic should hold",
            ["source", "action"],
        )
        self._m_undecodable = {
            "lane": invalid.labels("lane", "dead_lettered"),
            "retry": invalid.labels("retry", "dead_lettered"),
        }
        self._m_returned = metrics.counter(
            "eventgw_orchestrator_leases_returned_total",
            "leases ended early because the worker's stream ended",
        )
        metrics.gauge(
            "eventgw_orchestrator_worker_sessions", "open Work streams (connected workers)"
        ).set_function(lambda: float(len(self.sessions)))

    # -- intake -------------------------------------------------------------------------

    def add_records(self, records: Sequence[ConsumedRecord]) -> int:
        """Buffer consumed records and dispatch; returns how many became tasks.

        A record that is not an ``EventData`` goes to the DLQ as it is (no processor can
        take it); its offset is finished once Kafka confirmed that.
        """
        added = 0
        buffer, tracker = self.buffer, self.tracker
        push, track = buffer.push, tracker.track
        lane_of_topic = self.lane_of_topic
        priority_of = _PRIORITY_OF
        new_event = pb.EventData
        finished_before, early = self._finished_before, self._early_acks
        observe_intake = self._m_intake
        now_ms = self._now_ms()
        for r in records:
            topic, partition, offset, value = r.topic, r.partition, r.offset, r.value
            lane = lane_of_topic.get(topic)
            if lane is None:
                logger.warning("orchestrator.unknown_topic topic=%s", topic)
                continue
            if (finished_before or early) and self._done_before(topic, partition, offset):
                track(topic, partition, offset)
                tracker.finish(topic, partition, offset)
                continue
            event = new_event()
            try:
                event.ParseFromString(value)
            except Exception:  # noqa: BLE001  (protobuf raises several DecodeError types)
                track(topic, partition, offset)
                self._dead_letter_undecodable(r, lane)
                continue
            if not event.event_id:  # a tombstone parses as an empty EventData: no event
                track(topic, partition, offset)
                self._dead_letter_undecodable(r, lane)
                continue
            task_id = f"{topic}/{partition}/{offset}"  # make_task_id, inlined: per record
            priority = priority_of.get(event.priority, _P10)
            ingested_ms = event.ingested_at_ms
            task = BufferedTask(
                task_id,
                topic,
                partition,
                offset,
                lane,
                priority,
                event.slo_deadline_ms or ingested_ms,
                ingested_ms,
                value,
                event.attempt,
            )
            if lane != "retry":  # a retried record's ingest time includes its retry delay
                waited_ms = now_ms - ingested_ms
                observe_intake[priority](waited_ms / 1000 if waited_ms > 0 else 0.0)
            # The second tier, for the SLO counts: the offload lane's events, and theirs
            # retried (EventData.offloaded); read only there, not per class-lane record.
            if lane == "offload" or (lane == "retry" and event.offloaded):
                task.offloaded = True
            headers = r.headers
            # A lane record from ingest has the four standard headers; only a longer list
            # (retry, redrive) can carry an origin or the redriven mark: no scan otherwise.
            if len(headers) > _STANDARD_HEADERS:
                if lane == "retry":
                    origin = header_value(headers, H_ORIGINAL_TOPIC)
                    if origin:
                        self._origin[task_id] = origin.decode(errors="replace")
                redriven = header_value(headers, H_REDRIVEN)
                if redriven:
                    self._redriven[task_id] = redriven
            track(topic, partition, offset)
            push(task)
            added += 1
        if added:
            self._dispatch()
        return added

    def _done_before(self, topic: str, partition: int, offset: int) -> bool:
        """Whether this record was finished already: by a previous owner of its partition
        (commit metadata), or ACKed by a worker before this replica read it again."""
        runs = self._finished_before.get((topic, partition))
        if runs:
            while runs and runs[0][1] < offset:
                runs.popleft()
            if not runs:
                del self._finished_before[topic, partition]
            elif runs[0][0] <= offset:
                self.skipped_finished += 1
                return True
        early = self._early_acks
        if early and early.pop(f"{topic}/{partition}/{offset}", None) is not None:
            self.skipped_finished += 1
            return True
        return False

    def preset_finished(self, topic: str, partition: int, committed: int, metadata: str) -> int:
        """A partition was assigned: what the group committed for it says which records
        above ``committed`` are finished already. Returns how many offsets that covers."""
        runs = commit_metadata.decode(committed, metadata)
        if runs:
            self._finished_before[topic, partition] = deque(runs)
            logger.info(
                "orchestrator.finished_before topic=%s partition=%d committed=%d runs=%d",
                topic,
                partition,
                committed,
                len(runs),
            )
        return sum(end - start + 1 for start, end in runs)

    def commit_metadata(self, topic: str, partition: int, offset: int) -> str:
        """The metadata of a commit at ``offset``: the finished runs above it."""
        return commit_metadata.encode(offset, self.tracker.finished_runs(topic, partition))

    def retry_due_ms(self, record: ConsumedRecord) -> int:
        """When a retry-topic record may be served (wall-clock ms; 0 if absent or not a time)."""
        raw = header_value(record.headers, H_RETRY_AT_MS)
        if not raw or len(raw) > _MAX_RETRY_AT_DIGITS or not raw.isdigit():
            return 0
        return int(raw)

    # -- worker sessions ----------------------------------------------------------------

    def open_session(self, worker_id: str) -> WorkerSession:
        """A worker opened a ``Work`` stream: track it and welcome it (no credit yet).

        The welcome is a ``TaskBatch`` without tasks: it tells the worker this replica's
        index and fleet (where its fallback results go) and the backlog.
        """
        session = WorkerSession(worker_id)
        self.sessions.add(session)
        session.push(hint(self._s.index, self.buffer.ready_count(), fleet=self.fleet))
        logger.info(
            "orchestrator.worker_connected worker_id=%s session=%d", worker_id, session.number
        )
        return session

    def grant(self, session: WorkerSession, credit: int) -> None:
        """The worker can take ``credit`` more tasks: dispatch what is ready."""
        if credit <= 0 or session.closed:
            return
        session.credit += credit
        session.hinted = False
        self._credited[session] = None
        self._dispatch()

    def revoke_credit(self, session: WorkerSession, wanted: int) -> int:
        """Take back up to ``wanted`` unused credit; tell the worker how much (may be 0)."""
        taken = min(max(wanted, 0), session.credit)
        session.credit -= taken
        if session.credit == 0:
            self._credited.pop(session, None)
        if not session.closed:
            session.push(
                hint(self._s.index, self.buffer.ready_count(), credit_returned=taken), alone=True
            )
        return taken

    def close_session(self, session: WorkerSession) -> int:
        """The stream ended: every lease it still holds is returned at once (not at expiry).

        A task whose retry/DLQ write is in flight stays leased until the write settles.
        Returns the number of leases returned.
        """
        session.close()
        self.sessions.discard(session)
        self._credited.pop(session, None)
        returned = 0
        return_lease = self.buffer.return_lease
        for task in session.held():
            if task.task_id not in self._writing and return_lease(task.task_id):
                returned += 1
        session.groups = []
        session.credit = 0
        if returned:
            self.returned_on_disconnect += returned
            self._m_returned.inc(returned)
            logger.info(
                "orchestrator.leases_returned worker_id=%s session=%d tasks=%d",
                session.worker_id,
                session.number,
                returned,
            )
            self._dispatch()
        logger.info(
            "orchestrator.worker_disconnected worker_id=%s session=%d",
            session.worker_id,
            session.number,
        )
        return returned

    def _dispatch(self) -> None:
        """Hand ready tasks to sessions with credit, round robin, in the buffer's order."""
        credited = self._credited
        if not self.serving:
            return
        buffer = self.buffer
        index = self._s.index
        lease_s = self._lease_s
        now_wall, now_mono = self._wall(), self._mono()
        while credited:
            session = next(iter(credited))
            if session.closed:
                # Its stream ended and the writer is finishing: `close_session` comes next.
                # Leasing to it would strand the tasks until then (and push() refuses).
                del credited[session]
                continue
            tasks = buffer.pop_batch(session.credit, lease_s, session)
            if not tasks:
                break
            del credited[session]
            session.credit -= len(tasks)
            if session.credit:
                credited[session] = None  # to the back of the round
            session.add_group(tasks[0]._lease)  # type: ignore[arg-type]  # set by pop_batch
            backlog = buffer.ready_count()
            for message in task_batches(tasks, index, backlog, now_wall, now_mono):
                session.push(message)
            now_ms = self._now_ms()
            observe_leased = self._m_leased
            for t in tasks:
                if t.delivery_count == 1 and t.lane != "retry":  # first lease of a lane record
                    waited_ms = now_ms - t.ingested_at_ms
                    observe_leased[t.priority](waited_ms / 1000 if waited_ms > 0 else 0.0)
            for lane, n in Counter(t.lane for t in tasks).items():  # counted in C
                self._m_dispatched[lane].inc(n)
        if buffer.has_ready():
            # A backlog no credit covers: tell each worker without credit once, so a worker
            # spread over several orchestrators can move its credit here — also when no
            # worker has credit here at all (its credit parked at an idle orchestrator,
            # e.g. the other fleet's after a reconnect: without the hint it never comes).
            backlog = buffer.ready_count()
            for session in self.sessions:
                if session.credit == 0 and not session.hinted and not session.closed:
                    session.hinted = True
                    session.push(hint(index, backlog))

    def stop_serving(self) -> None:
        """Drain: dispatch nothing more; results are still applied."""
        self.serving = False

    def tick(self) -> float | None:
        """Expire leases and release due delays; returns the next timer (monotonic) or None."""
        self._forget_early_acks()
        expired = self.buffer.expire()
        for task in expired:
            self.counters[task.lane].expired += 1
        if self.buffer.has_ready():
            self._dispatch()
        return self.buffer.next_timer()

    # -- results ------------------------------------------------------------------------

    def apply_results(
        self,
        results: Sequence[pb.TaskResult],
        session: WorkerSession | None = None,
        acked: Sequence[str] = (),
    ) -> tuple[int, int]:
        """Apply worker results (from ``session``'s stream, or the response topic if None).

        ``acked`` are task ids ACKed (the stream's compact form of the common result);
        ``results`` the others, or every result from the response topic. Returns
        (accepted, stale); see the module docstring for the rules. Retry and DLQ records are
        handed to the `RetryWriter`; their tasks stay leased until Kafka confirmed them.
        """
        accepted = stale = 0
        released = False
        buffer = self.buffer
        acked_tasks: list[BufferedTask] = []  # for the SLO counts, once per message
        add_acked = acked_tasks.append
        writing = self._writing
        get = buffer.get
        finish = self._finish_acked
        owner_of = buffer.owner_of
        for task_id in acked:
            task = get(task_id)
            if task is None or task_id in writing:
                stale += 1
                if task is None:
                    self._remember_ack(task_id)
                continue
            if session is not None and (owner_of(task) or session) is not session:
                stale += 1  # leased to another stream (docs/security.md, "Leases")
                continue
            accepted += 1
            finish(task)
            add_acked(task)
        for r in results:
            task_id = r.task_id
            kind = r.kind
            if task_id in writing:
                stale += 1
                continue
            if kind == _ACK:
                task = get(task_id)
                if task is None:
                    stale += 1
                    self._remember_ack(task_id)
                    continue
                if session is not None and (owner_of(task) or session) is not session:
                    stale += 1
                    continue
                accepted += 1
                finish(task)
                add_acked(task)
                continue
            task = buffer.lease_of(task_id)
            if (
                task is None
                or (r.delivery_count and r.delivery_count != task.delivery_count)
                or (session is not None and buffer.owner_of(task) is not session)
            ):
                stale += 1
                continue
            accepted += 1
            if kind == _RELEASE:
                buffer.release(task_id)
                released = True
            elif kind == _REJECT:
                self._write_out(task, r, self._dead_end(task))
            else:  # NACK (and UNSPECIFIED, treated as a failure)
                attempt = task.attempt + 1
                delay_s = r.delay_ms / 1000
                if attempt >= self._s.max_attempts:
                    self._write_out(task, r, self._dead_end(task))
                elif delay_s < self._s.memory_retry_max_s:
                    # Held in memory; ready again (attempt + 1) once due.
                    buffer.delay(task_id, delay_s * self._time_scale)
                    self.counters[task.lane].retried += 1
                    self.class_counters[task.priority].retried += 1
                else:
                    topic = self.retry_topics[min(attempt, len(self.retry_topics)) - 1]
                    self._write_out(task, r, topic)
        self._count_results(results, len(acked), stale)
        if acked_tasks:
            self.slo.record(acked_tasks)
        if released:
            self._dispatch()
        return accepted, stale

    def _remember_ack(self, task_id: str) -> None:
        """Keep an ACK for a task not in the buffer for a lease's time (bounded): if its
        record is read again meanwhile (this replica restarted), it is finished, not served."""
        early = self._early_acks
        if len(early) < _MAX_EARLY_ACKS:
            early[task_id] = self._mono() + self._lease_s

    def _forget_early_acks(self) -> None:
        early = self._early_acks
        if not early:
            return
        now = self._mono()
        expired = []
        for task_id, expires in early.items():  # insertion order is expiry order
            if expires > now:
                break
            expired.append(task_id)
        for task_id in expired:
            del early[task_id]

    def _finish_acked(self, task: BufferedTask) -> None:
        self._finish(task)
        self.counters[task.lane].processed += 1
        self.class_counters[task.priority].processed += 1

    def _count_results(self, results: Sequence[pb.TaskResult], acked: int, stale: int) -> None:
        kinds: dict[pb.ResultKind, int] = {pb.ACK: acked} if acked else {}
        for r in results:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        for kind, n in kinds.items():
            counter = self._m_results.get(kind)
            if counter is not None:
                counter.inc(n)
        if stale:
            self.stale_results += stale
            self._m_stale.inc(stale)

    def _dead_end(self, task: BufferedTask) -> str:
        """The DLQ, or the parking lot for a task already redriven from the DLQ once."""
        return self._topics.parking_lot if task.task_id in self._redriven else self._topics.dlq

    def _finish(self, task: BufferedTask) -> None:
        if task.lane == "retry":
            self._origin.pop(task.task_id, None)
        if self._redriven:
            self._redriven.pop(task.task_id, None)
        self.buffer.complete(task.task_id)
        self.tracker.finish(task.topic, task.partition, task.offset)

    def _dead_letter_undecodable(self, r: ConsumedRecord, lane: BufferLane) -> None:
        """Write a record that is not an ``EventData`` to the DLQ unchanged, then finish it.

        Tried until Kafka confirms (`RetryWriter` ``forever``): the offset stays unfinished
        (not committed) meanwhile, so the record is never lost (at-least-once).
        """
        headers: Headers = [
            (H_ORIGINAL_TOPIC, r.topic.encode()),
            (H_LAST_ERROR, b"undecodable: not an eventgw EventData"),
        ]
        logger.warning(
            "orchestrator.undecodable topic=%s partition=%d offset=%d (to the DLQ)",
            r.topic,
            r.partition,
            r.offset,
        )
        self._m_undecodable["retry" if lane == "retry" else "lane"].inc()
        topic, partition, offset = r.topic, r.partition, r.offset

        def done(ok: bool) -> None:
            if ok and self.tracker.finish(topic, partition, offset):
                self.counters[lane].dead_lettered += 1

        self._writer.submit(self._topics.dlq, (r.key or b"", r.value, headers), done, forever=True)

    def _write_out(self, task: BufferedTask, result: pb.TaskResult, topic: str) -> None:
        """Hand a retry/DLQ record to the writer; finish the task once Kafka confirmed it.

        The task stays leased (not served again) while the write is in flight; if the
        writer gives up, the task is served again rather than lost.
        """
        is_dlq = topic in (self._topics.dlq, self._topics.parking_lot)
        event = pb.EventData.FromString(task.value)
        # Clamped: a record may arrive with the wire's largest count (2**32 - 1), and one
        # more would not fit; past max_attempts the exact count changes nothing.
        event.attempt = min(task.attempt + 1, _MAX_ATTEMPT)
        headers = event_headers(event)
        original = self._origin.get(task.task_id, task.topic)
        headers.append((H_ORIGINAL_TOPIC, original.encode()))
        headers.append((H_LAST_ERROR, result.error[:1000].encode()))
        redriven = self._redriven.get(task.task_id)
        if redriven is not None:
            headers.append((H_REDRIVEN, redriven))
        if not is_dlq:
            delay_s = RETRY_DELAYS_S[self.retry_topics.index(topic)]
            due = self._now_ms() + int(delay_s * self._time_scale * 1000)
            headers.append((H_RETRY_AT_MS, b"%d" % due))
        record: Record = (event.company_id.encode(), event.SerializeToString(), headers)
        task_id = task.task_id
        self._writing.add(task_id)

        def done(ok: bool) -> None:
            self._writing.discard(task_id)
            if self.buffer.get(task_id) is not task:
                return  # its partition was revoked meanwhile: the next owner has it
            if ok:
                self._finish(task)
                for c in (self.counters[task.lane], self.class_counters[task.priority]):
                    if is_dlq:
                        c.dead_lettered += 1
                    else:
                        c.retried += 1
                return
            # Not durable elsewhere: serve it again rather than lose it.
            owner = self.buffer.owner_of(task)
            if isinstance(owner, WorkerSession) and not owner.closed:
                self.buffer.release(task_id)
            else:  # the worker went away meanwhile: its lease ended then
                self.buffer.return_lease(task_id)
            self._dispatch()

        self._writer.submit(topic, record, done)

    # -- partitions ---------------------------------------------------------------------

    def revoke_partitions(
        self, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[int, str]]:
        """Drop revoked partitions' tasks; return their committable offsets and metadata
        (the finished runs above them, so the next owner does not serve those again)."""
        offsets: dict[tuple[str, int], tuple[int, str]] = {}
        tracker = self.tracker
        for topic, partition in partitions:
            committable = tracker.committable(topic, partition)
            runs = tracker.finished_runs(topic, partition)
            if committable is None and runs:  # stuck, but with finished runs to record
                committable = tracker.position(topic, partition)
            if committable is not None:
                offsets[topic, partition] = (
                    committable,
                    commit_metadata.encode(committable, runs),
                )
            self._finished_before.pop((topic, partition), None)
            for task in self.buffer.drop_partition(topic, partition):
                self._origin.pop(task.task_id, None)
                self._redriven.pop(task.task_id, None)
            self.tracker.drop(topic, partition)
        return offsets

    def committable(self) -> dict[tuple[str, int], int]:
        """Offsets that advanced since the last commit."""
        return self.tracker.pending()

    def mark_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """Record a successful commit."""
        for (topic, partition), offset in offsets.items():
            self.tracker.mark_committed(topic, partition, offset)

    def leased(self) -> int:
        """Tasks served and awaiting a result."""
        return self.buffer.statistics().leased

    def stats(self) -> pb.StatsResponse:
        """Per-class (and offload/retry lane) stats, SLO attainment and worker sessions.

        For ``Stats``, ``/stats`` and ``eventgw status``.
        """
        st = self.buffer.statistics()
        slo = self.slo.statistics()
        lanes = []
        for p in (Priority.P30, Priority.P20, Priority.P10):
            c = self.class_counters[p.value]
            cls = st.classes[p]
            normal, offloaded = slo[p, False], slo[p, True]
            lanes.append(
                pb.ClassStats(
                    lane=p.name,
                    buffered=cls.ready + cls.delayed,
                    in_flight=cls.leased,
                    processed=c.processed,
                    retried=c.retried,
                    dead_lettered=c.dead_lettered,
                    oldest_age_s=cls.oldest_ready_age_s or 0.0,
                    slo_s=SLO_SECONDS[p],
                    paused=p.name.lower() in st.paused_lanes,
                    buffered_bytes=cls.bytes,
                    slo_met=normal.met + offloaded.met,
                    slo_missed=normal.missed + offloaded.missed,
                    offloaded_slo_met=offloaded.met,
                    offloaded_slo_missed=offloaded.missed,
                    late=cls.late_ready,
                )
            )
        for lane in ("offload", "retry"):
            ln = st.lanes[lane]
            c = self.counters[lane]
            lanes.append(
                pb.ClassStats(
                    lane=lane,
                    buffered=ln.ready + ln.delayed,
                    in_flight=ln.leased,
                    processed=c.processed,
                    retried=c.retried,
                    dead_lettered=c.dead_lettered,
                    paused=ln.paused,
                    buffered_bytes=ln.bytes,
                )
            )
        now = time.monotonic()
        workers = [
            pb.WorkerSessionStats(
                worker_id=w.worker_id,
                session=w.number,
                credit=w.credit,
                leased=w.leased(),
                results=w.results,
                connected_s=now - w.opened_at,
            )
            for w in sorted(self.sessions, key=lambda w: (w.worker_id, w.number))
        ]
        return pb.StatsResponse(
            index=self._s.index,
            lanes=lanes,
            buffer_bytes=st.total_bytes,
            buffer_budget_bytes=st.budget_bytes,
            workers=workers,
            serving=self.serving,
        )
