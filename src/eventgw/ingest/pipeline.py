"""The ingest pipeline shared by HTTP and gRPC: classify → schedule → publish → results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    LANE_OF_PRIORITY,
    Priority,
    lane_headers,
    new_event_id,
    new_event_ids,
)
from eventgw.ingest.wire import RequestWriter, class_fields, event_data, identity_fields

if TYPE_CHECKING:
    from eventgw.config.settings import TopicSettings
    from eventgw.core.classify import StaticClassifier
    from eventgw.core.clock import Clock
    from eventgw.core.envelope import Lane
    from eventgw.ingest.door import Door
    from eventgw.ingest.grants import Grant
    from eventgw.ingest.hot_tenants import DynamicClassifier
    from eventgw.ingest.scheduler import Scheduler
    from eventgw.ingest.validation import ValidEvent
    from eventgw.metrics.backend import Metrics
    from eventgw.publisher.prep import PreparedEvent

PublishFn = Callable[[bytes], Awaitable[pb.PublishResponse]]
"""Sends a batch to the prep publisher as a serialized request (the gRPC client).

It takes a serialized ``PublishRequest``, which the pipeline writes directly (see
`eventgw.ingest.wire`), and returns the ``PublishResponse``: either one result per event
or, since the request sets ``accept_published_batch``, a ``published_batch``. A co-located
ingest uses `PreparedPublishFn` instead, which skips the serialization.
"""

PreparedPublishFn = Callable[[list["PreparedEvent"]], Awaitable[pb.PublishResponse]]
"""Hands a batch to a prep publisher in this process (`PrepPublisher.publish_prepared`).

The co-located layout: ingest passes each event as the Kafka record it built (serialized
``EventData`` and headers) instead of a serialized request the publisher must parse,
check and re-serialize.
"""

STATUS_NAMES: dict[int, str] = {
    pb.PUBLISHED: "PUBLISHED",
    pb.FAILED_WRITES: "FAILED_WRITES",
    pb.BACKED_UP: "BACKED_UP",
    pb.REJECTED: "REJECTED",
    pb.FAILED: "FAILED",
    pb.DEFERRED: "DEFERRED",
}
DURABLE = frozenset({pb.PUBLISHED, pb.FAILED_WRITES, pb.BACKED_UP})
_DEFERRED: int = pb.DEFERRED
_PRIORITY_OF: dict[int, Priority] = {p.value: p for p in Priority}

EventResult = tuple[str, int, str, str, int, str, str]
"""One event's answer: ``(event_id, priority, lane, topic, status, reason, cluster)``.

The fields of ``pb.IngestResult``, as a plain tuple: building a message per event, which
HTTP then converted again into JSON, cost 1.3 µs per event. ``priority`` and ``status``
are the wire enum values (``pb.Priority``, ``pb.DurabilityStatus``).
"""


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """The per-event answers of one request, plus whether every event is settled.

    ``all_durable_or_rejected`` False means at least one event is not durable anywhere:
    the client must retry the request (duplicates are possible; event ids are kept).
    ``deferred`` events were not taken (the door, `eventgw.ingest.door`): nothing was written
    for them; the client sends them again after ``retry_after_ms``.
    """

    request_id: str
    results: list[EventResult]
    all_durable_or_rejected: bool
    all_rejected: bool
    deferred: int = 0
    retry_after_ms: int = 0


class IngestPipeline:
    """Turns validated events into published EventData and per-event results."""

    def __init__(
        self,
        *,
        classifier: StaticClassifier,
        scheduler: Scheduler,
        publish: PublishFn | None = None,
        publish_prepared: PreparedPublishFn | None = None,
        topics: TopicSettings,
        clock: Clock,
        metrics: Metrics,
        dynamic: DynamicClassifier | None = None,
        door: Door | None = None,
    ) -> None:
        self._classifier = classifier
        self._door = door
        self.door = door  # the HTTP and gRPC faces count their requests on it
        self._dynamic = dynamic
        self._scheduler = scheduler
        if (publish is None) == (publish_prepared is None):
            raise ValueError("give exactly one of publish and publish_prepared")
        self._publish = publish
        self._publish_prepared = publish_prepared
        self._topics = topics
        self._clock = clock
        events = metrics.counter("eventgw_ingest_events_total", "events by outcome", ["status"])
        self._accepted = events.labels("accepted")
        self._rejected = events.labels("rejected")
        self._failed = events.labels("failed")
        self._invalid = events.labels("invalid")
        self._deferred = events.labels("deferred")
        offloaded = metrics.counter(
            "eventgw_ingest_offloaded_total", "events sent to the offload lane", ["class", "reason"]
        )
        self._offloaded = {
            (p, reason): offloaded.labels(f"P{p}", reason)
            for p in (10, 20, 30)
            for reason in ("capacity", "hot_tenant")
        }

    def count_invalid(self, n: int = 1) -> None:
        """Count events refused by validation (they never reach the pipeline)."""
        self._invalid.inc(n)

    async def ingest(
        self, events: Sequence[ValidEvent], grant: Grant | None = None
    ) -> IngestOutcome:
        """Classify, schedule and publish ``events``; returns once each is durable or failed.

        With ``grant`` (the request's API key), every distinct identity is checked against
        it first: `PermissionDenied` refuses the whole request before anything is counted,
        admitted or written (`eventgw.ingest.grants`).

        The loop is the hot path of ingest, so it does per batch what need not be done per
        event: one batch of event ids; the class (the static classifier is a pure function
        of the identity), deadline and encoded identity and class fields once per distinct
        identity; the door's decision per class (on the class of the static rules), then the
        hot-tenant decision once per company and batch, counting only the events the door
        took (a deferred event comes back: counted at every try, it made a busy company look
        hot); the admission question (offload) once per class and batch: of the ``n``
        events of a class, the first ``admitted`` keep their lane and the rest go to the
        offload lane, in event order; the request written as bytes directly
        (`eventgw.ingest.wire`), or the records themselves when co-located.
        """
        request_id = new_event_id()
        now_ms = self._clock.wall_ms()
        scheduler = self._scheduler
        dynamic = self._dynamic
        # (wire priority, deadline, offloaded) → the encoded class fields
        class_parts: dict[tuple[int, int, bool], bytes] = {}

        def class_part(wire_priority: int, deadline_ms: int, offloaded: bool) -> bytes:
            key = (wire_priority, deadline_ms, offloaded)
            part = class_parts.get(key)
            if part is None:
                part = class_parts[key] = class_fields(
                    wire_priority, now_ms, deadline_ms, request_id, offloaded
                )
            return part

        # Pass 1: the distinct identities (source_name, statistic_key, company_id) of the
        # batch, how many events each has, and each event's identity number.
        number: dict[tuple[str, str, str], int] = {}
        identities: list[ValidEvent] = []  # the first event of each identity
        counts: list[int] = []
        of_event: list[int] = []
        for e in events:
            identity = (e.source_name, e.statistic_key, e.company_id)
            k = number.get(identity)
            if k is None:
                k = number[identity] = len(counts)
                identities.append(e)
                counts.append(0)
            counts[k] += 1
            of_event.append(k)
        if grant is not None:
            grant.check(identities, self._classifier, events)
        # Per identity: the class of the static rules. The door decides on it first, so
        # that what it defers is never counted by the hot-tenant tracker: a deferred event
        # comes back, and counting it at each try made every busy company look hot.
        statics = [
            self._classifier.classify(e.source_name, e.statistic_key, e.company_id)
            for e in identities
        ]
        door = self._door
        taken: dict[int, int] = {}  # static wire priority → events still to take (deferring)
        admitted_total = 0
        taken_at = 0.0
        takes = counts  # events taken per identity
        if door is not None:
            by_class: dict[Priority, int] = {}
            for p, n in zip(statics, counts, strict=True):
                by_class[p] = by_class.get(p, 0) + n
            # Without P30 a request may wait for room (held) rather than be deferred.
            if Priority.P30 not in by_class and await door.hold(by_class):
                admitted = by_class
            else:
                admitted = door.admit(by_class)
            taken_at = door.now()
            admitted_total = sum(admitted.values())
            for p, n in by_class.items():
                if admitted[p] < n:
                    taken[p.value] = admitted[p]
            if taken:
                # The first ``admitted`` events of a deferred class are taken, in event order.
                left = dict(taken)
                takes = [0] * len(counts)
                for k in of_event:
                    v = statics[k].value
                    if v in left:
                        if left[v] == 0:
                            continue
                        left[v] -= 1
                    takes[k] += 1
        # Per identity: hot-tenant decision on what was taken, lane; admission per class.
        # route: (wire priority, lane, deadline, identity fields, class fields, record key,
        # class fields if offloaded or None when admission does not apply, static priority)
        routes: list[tuple[int, Lane, int, bytes, bytes, bytes, bytes | None, int]] = []
        wanted: dict[Priority, int] = {}  # events per class that need admission
        for e, static, n in zip(identities, statics, takes, strict=True):
            priority = static
            deadline_ms = scheduler.deadline_ms(priority, now_ms)
            lane = LANE_OF_PRIORITY[priority]
            offloaded = False
            if dynamic is not None and n:
                # Hot tenants: demote or force offload; the deadline stays the original one.
                decided, offloaded = dynamic.decide(priority, e.company_id, n)
                if decided is not priority:
                    priority, lane = decided, LANE_OF_PRIORITY[decided]
                if offloaded:
                    lane = "offload"
                    self._offloaded[priority.value, "hot_tenant"].inc(n)
            if not offloaded:
                wanted[priority] = wanted.get(priority, 0) + n
            routes.append(
                (
                    priority.value,
                    lane,
                    deadline_ms,
                    identity_fields(e.company_id, e.source_name, e.statistic_key),
                    class_part(priority.value, deadline_ms, offloaded),
                    e.company_id.encode(),
                    None if offloaded else class_part(priority.value, deadline_ms, True),
                    static.value,
                )
            )
        try:
            return await self._publish_taken(
                events, routes, of_event, wanted, taken, request_id, door
            )
        finally:
            if door is not None:
                door.release(admitted_total, taken_at)

    async def _publish_taken(
        self,
        events: Sequence[ValidEvent],
        routes: list[tuple[int, Lane, int, bytes, bytes, bytes, bytes | None, int]],
        of_event: list[int],
        wanted: dict[Priority, int],
        taken: dict[int, int],
        request_id: str,
        door: Door | None,
    ) -> IngestOutcome:
        """Admission (offload), records, publish and answers for the events the door took."""
        scheduler = self._scheduler
        # Admission: tokens left per wire priority, for the classes that cannot take all.
        budget: dict[int, int] = {}
        if scheduler.may_offload:
            for priority, n in wanted.items():
                admitted = scheduler.admitted(priority, n)
                if admitted < n:
                    budget[priority.value] = admitted
                    self._offloaded[priority.value, "capacity"].inc(n - admitted)
        # Pass 2: one record (or request entry) per event.
        prepared: list[PreparedEvent] | None = [] if self._publish_prepared else None
        writer = RequestWriter()
        planned: list[tuple[str, int, Lane]] = []  # (event_id, priority, lane) per event
        deferred: list[tuple[int, str, int]] = []  # (position, event_id, priority)
        for i, (e, k, new_id) in enumerate(
            zip(events, of_event, new_event_ids(len(events)), strict=True)
        ):
            (
                wire_priority,
                lane,
                deadline_ms,
                identity_part,
                fields,
                key,
                offload_fields,
                static,
            ) = routes[k]
            if taken and static in taken:
                left = taken[static]
                if left == 0:
                    deferred.append((i, e.event_id or new_id, static))
                    continue
                taken[static] = left - 1
            if budget and offload_fields is not None and wire_priority in budget:
                left = budget[wire_priority]
                if left > 0:
                    budget[wire_priority] = left - 1
                else:
                    lane, fields = "offload", offload_fields
            event_id = e.event_id or new_id
            if prepared is not None:
                value = event_data(event_id, identity_part, e.payload, fields)
                record = (key, value, lane_headers(event_id, wire_priority, deadline_ms, 0))
                prepared.append((event_id, e.company_id, e.source_name, lane, record))
            else:
                writer.add(event_id, identity_part, e.payload, fields)
            planned.append((event_id, wire_priority, lane))
        results: list[EventResult] = []
        settled, rejected, failed = True, 0, 0
        if planned:
            if self._publish_prepared is not None and prepared is not None:
                response = await self._publish_prepared(prepared)
            elif self._publish is not None:
                response = await self._publish(writer.to_bytes(accept_published_batch=True))
            else:  # unreachable: __init__ checks that one of them is set
                raise RuntimeError("no publisher")
            if response.HasField("published_batch"):
                results, settled, rejected, failed = self._published(
                    response.published_batch, planned
                )
            else:
                results, settled, rejected, failed = self._answers(response.results, planned)
        self._accepted.inc(len(results) - rejected - failed)
        self._rejected.inc(rejected)
        self._failed.inc(failed)
        if not deferred:
            return IngestOutcome(request_id, results, settled, rejected == len(results))
        self._deferred.inc(len(deferred))
        for position, event_id, wire_priority in deferred:  # back in request order
            results.insert(position, (event_id, wire_priority, "", "", _DEFERRED, "", ""))
        return IngestOutcome(
            request_id,
            results,
            settled,
            all_rejected=False,
            deferred=len(deferred),
            retry_after_ms=door.retry_after_ms() if door is not None else 0,
        )

    @staticmethod
    def _published(
        batch: pb.PublishedBatch, planned: list[tuple[str, int, Lane]]
    ) -> tuple[list[EventResult], bool, int, int]:
        """Results, settled, rejected, failed, of a batch the publisher published whole."""
        if len(batch.partitions) != len(planned):
            raise ValueError(
                f"publisher answered {len(batch.partitions)} events for {len(planned)} sent"
            )
        topic, cluster = batch.topic, batch.cluster
        published: int = pb.PUBLISHED
        results: list[EventResult] = [
            (event_id, wire_priority, lane, topic, published, "", cluster)
            for event_id, wire_priority, lane in planned
        ]
        return results, True, 0, 0

    def _answers(
        self, answers: Sequence[pb.PublishResult], planned: list[tuple[str, int, Lane]]
    ) -> tuple[list[EventResult], bool, int, int]:
        """Results, settled, rejected, failed, from one PublishResult per event."""
        lane_topic = self._topics.lane_topic
        results: list[EventResult] = []
        settled = True
        rejected = failed = 0
        for (event_id, wire_priority, lane), r in zip(planned, answers, strict=True):
            status = r.status
            results.append(
                (
                    event_id,
                    wire_priority,
                    lane,
                    r.topic or lane_topic(lane),
                    status,
                    r.reason,
                    r.cluster,
                )
            )
            if status == pb.REJECTED:
                rejected += 1
            elif status not in DURABLE:
                settled = False
                if status == pb.FAILED:
                    failed += 1
        return results, settled, rejected, failed
