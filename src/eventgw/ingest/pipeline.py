"""The ingest pipeline shared by HTTP and gRPC: classify → schedule → publish → results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import LANE_OF_PRIORITY, Priority, new_event_id, to_pb_priority

if TYPE_CHECKING:
    from eventgw.config.settings import TopicSettings
    from eventgw.core.classify import StaticClassifier
    from eventgw.core.clock import Clock
    from eventgw.ingest.scheduler import Scheduler
    from eventgw.ingest.validation import ValidEvent
    from eventgw.metrics.backend import Metrics

PublishFn = Callable[[Sequence[pb.EventData]], Awaitable[Sequence[pb.PublishResult]]]
"""Sends a batch to the prep publisher (gRPC client, or the in-process publisher)."""

STATUS_NAMES: dict[int, str] = {
    pb.PUBLISHED: "PUBLISHED",
    pb.FAILED_WRITES: "FAILED_WRITES",
    pb.BACKED_UP: "BACKED_UP",
    pb.REJECTED: "REJECTED",
    pb.FAILED: "FAILED",
}
DURABLE = frozenset({pb.PUBLISHED, pb.FAILED_WRITES, pb.BACKED_UP})


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """The per-event answers of one request, plus whether every event is settled.

    ``all_durable_or_rejected`` False means at least one event is not durable anywhere:
    the client must retry the request (duplicates are possible; event ids are kept).
    """

    request_id: str
    results: list[pb.IngestResult]
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
    ) -> None:
        self._classifier = classifier
        self._scheduler = scheduler
        self._publish = publish
        self._topics = topics
        self._clock = clock
        events = metrics.counter("eventgw_ingest_events_total", "events by outcome", ["status"])
        self._accepted = events.labels("accepted")
        self._rejected = events.labels("rejected")
        self._failed = events.labels("failed")
        self._invalid = events.labels("invalid")

    def count_invalid(self, n: int = 1) -> None:
        """Count events refused by validation (they never reach the pipeline)."""
        self._invalid.inc(n)

    async def ingest(self, events: Sequence[ValidEvent]) -> IngestOutcome:
        """Classify, schedule and publish ``events``; returns once each is durable or failed."""
        request_id = new_event_id()
        now_ms = self._clock.wall_ms()
        classify = self._classifier.classify
        batch: list[pb.EventData] = []
        for e in events:
            priority = classify(e.source_name, e.statistic_key, e.company_id)
            batch.append(
                pb.EventData(
                    event_id=e.event_id or new_event_id(),
                    company_id=e.company_id,
                    source_name=e.source_name,
                    statistic_key=e.statistic_key,
                    payload=e.payload,
                    priority=to_pb_priority(priority),
                    ingested_at_ms=now_ms,
                    slo_deadline_ms=self._scheduler.deadline_ms(priority, now_ms),
                    request_id=request_id,
                    offloaded=self._scheduler.offload(priority, e.company_id),
                )
            )
        published = await self._publish(batch)
        results = []
        settled = True
        rejected = 0
        for event, r in zip(batch, published, strict=True):
            lane = "offload" if event.offloaded else LANE_OF_PRIORITY[Priority(event.priority)]
            results.append(
                pb.IngestResult(
                    event_id=event.event_id,
                    priority=event.priority,
                    lane=lane,
                    topic=r.topic or self._topics.lane_topic(lane),
                    status=r.status,
                    reason=r.reason,
                    cluster=r.cluster,
                )
            )
            if r.status == pb.REJECTED:
                rejected += 1
            elif r.status not in DURABLE:
                settled = False
        n_failed = sum(1 for r in results if r.status == pb.FAILED)
        self._accepted.inc(len(results) - rejected - n_failed)
        self._rejected.inc(rejected)
        self._failed.inc(n_failed)
        return IngestOutcome(request_id, results, settled, rejected == len(results))
