"""The ingest pipeline shared by HTTP and gRPC: classify → schedule → publish → results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import LANE_OF_PRIORITY, new_event_id, new_event_ids
from eventgw.ingest.wire import RequestWriter, class_fields, identity_fields

if TYPE_CHECKING:
    from eventgw.config.settings import TopicSettings
    from eventgw.core.classify import StaticClassifier
    from eventgw.core.clock import Clock
    from eventgw.core.envelope import Lane, Priority
    from eventgw.ingest.hot_tenants import DynamicClassifier
    from eventgw.ingest.scheduler import Scheduler
    from eventgw.ingest.validation import ValidEvent
    from eventgw.metrics.backend import Metrics

PublishFn = Callable[[bytes], Awaitable[pb.PublishResponse]]
"""Sends a batch to the prep publisher (gRPC client, or the in-process publisher).

It takes a serialized ``PublishRequest``, which the pipeline writes directly (see
`eventgw.ingest.wire`), and returns the ``PublishResponse``: either one result per event
or, since the request sets ``accept_published_batch``, a ``published_batch``. The
in-process publisher is `EmbeddedPrepPublisher.publish_request`.
"""

STATUS_NAMES: dict[int, str] = {
    pb.PUBLISHED: "PUBLISHED",
    pb.FAILED_WRITES: "FAILED_WRITES",
    pb.BACKED_UP: "BACKED_UP",
    pb.REJECTED: "REJECTED",
    pb.FAILED: "FAILED",
}
DURABLE = frozenset({pb.PUBLISHED, pb.FAILED_WRITES, pb.BACKED_UP})

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
    """

    request_id: str
    results: list[EventResult]
    all_durable_or_rejected: bool
    all_rejected: bool


class IngestPipeline:
    """Turns validated events into published EventData and per-event results."""

    def __init__(
        self,
        *,
        classifier: StaticClassifier,
        scheduler: Scheduler,
        publish: PublishFn,
        topics: TopicSettings,
        clock: Clock,
        metrics: Metrics,
        dynamic: DynamicClassifier | None = None,
    ) -> None:
        self._classifier = classifier
        self._dynamic = dynamic
        self._scheduler = scheduler
        self._publish = publish
        self._topics = topics
        self._clock = clock
        events = metrics.counter("eventgw_ingest_events_total", "events by outcome", ["status"])
        self._accepted = events.labels("accepted")
        self._rejected = events.labels("rejected")
        self._failed = events.labels("failed")
        self._invalid = events.labels("invalid")
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

    async def ingest(self, events: Sequence[ValidEvent]) -> IngestOutcome:
        """Classify, schedule and publish ``events``; returns once each is durable or failed.

        The loop is the hot path of ingest, so it does per batch what need not be done per
        event: one batch of event ids; the class (the static classifier is a pure function
        of the identity), deadline and encoded identity and class fields once per distinct
        identity; the request written as bytes directly (`eventgw.ingest.wire`). The
        admission decision (offload) is still asked per event.
        """
        request_id = new_event_id()
        now_ms = self._clock.wall_ms()
        scheduler = self._scheduler
        may_offload = scheduler.may_offload
        dynamic = self._dynamic
        # (source_name, statistic_key, company_id) → (class, wire priority, class lane,
        # deadline, identity fields, class fields); for the identities of this batch.
        plans: dict[tuple[str, str, str], tuple[Priority, int, Lane, int, bytes, bytes]] = {}
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

        writer = RequestWriter()
        planned: list[tuple[str, int, Lane]] = []  # (event_id, priority, lane) per event
        for e, new_id in zip(events, new_event_ids(len(events)), strict=True):
            identity = (e.source_name, e.statistic_key, e.company_id)
            plan = plans.get(identity)
            if plan is None:
                priority = self._classifier.classify(*identity)
                deadline_ms = scheduler.deadline_ms(priority, now_ms)
                plan = plans[identity] = (
                    priority,
                    priority.value,
                    LANE_OF_PRIORITY[priority],
                    deadline_ms,
                    identity_fields(e.company_id, e.source_name, e.statistic_key),
                    class_part(priority.value, deadline_ms, False),
                )
            priority, wire_priority, lane, deadline_ms, identity_part, class_fields_part = plan
            if dynamic is not None:
                # Hot tenants: demote or force offload; the deadline stays the original one.
                decided, forced = dynamic.decide(priority, e.company_id)
                if decided is not priority:
                    priority, wire_priority = decided, decided.value
                    lane = LANE_OF_PRIORITY[decided]
                    class_fields_part = class_part(wire_priority, deadline_ms, False)
                if forced:
                    lane = "offload"
                    class_fields_part = class_part(wire_priority, deadline_ms, True)
                    self._offloaded[wire_priority, "hot_tenant"].inc()
            if lane != "offload" and may_offload and scheduler.offload(priority, e.company_id):
                lane = "offload"
                class_fields_part = class_part(wire_priority, deadline_ms, True)
                self._offloaded[wire_priority, "capacity"].inc()
            event_id = e.event_id or new_id
            writer.add(event_id, identity_part, e.payload, class_fields_part)
            planned.append((event_id, wire_priority, lane))
        response = await self._publish(writer.to_bytes(accept_published_batch=True))
        if response.HasField("published_batch"):
            results, settled, rejected, failed = self._published(response.published_batch, planned)
        else:
            results, settled, rejected, failed = self._answers(response.results, planned)
        self._accepted.inc(len(results) - rejected - failed)
        self._rejected.inc(rejected)
        self._failed.inc(failed)
        return IngestOutcome(request_id, results, settled, rejected == len(results))

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
