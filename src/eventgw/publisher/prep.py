"""PrepPublisher: routes events to their lane producers with dual failure capture.

Durable before acknowledged: `PrepPublisher.publish_with_result` returns a result per event
only once that event is in one of, in order of preference,

1. its topic (delivery report OK) → ``PUBLISHED``;
2. the failed-writes topic (fallback cluster when configured) → ``FAILED_WRITES``;
3. the backup store (S3 or local spool) → ``BACKED_UP``;

or it reports ``FAILED`` (nothing durable: the sender must retry) or ``REJECTED`` (gating;
nothing written). Failures raised by ``produce()`` and failures reported later by the
delivery callback take the same path, because `BatchProducer.send` reports both as a
failed `Delivery`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.backup.store import BackupFull, BackupStore, BackupUnavailable
from eventgw.core.envelope import (
    H_LAST_ERROR,
    H_ORIGINAL_CLUSTER,
    H_ORIGINAL_TOPIC,
    Lane,
    Priority,
    event_headers,
    to_pb_priority,
)
from eventgw.core.errors import InvalidEvent
from eventgw.publisher.router import ClusterName, Router, gate_reason

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventgw.config.dynamic import DynamicConfig
    from eventgw.kafka.producer import Delivery, Record
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

MAX_ID_LEN = 128
_VALID_PRIORITIES = frozenset(p.value for p in Priority)


class Producer(Protocol):
    """What the publisher needs from a producer (`eventgw.kafka.producer.BatchProducer`)."""

    name: str

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]: ...


class ConfigSource(Protocol):
    """Where the current dynamic config comes from (`DynamicConfigWatcher`)."""

    @property
    def current(self) -> DynamicConfig: ...


def validate_event(event: pb.EventData, index: int) -> None:
    """Reject an event the publisher cannot route; raises InvalidEvent naming the field."""
    if not event.event_id or len(event.event_id) > MAX_ID_LEN:
        raise InvalidEvent(
            f"events[{index}].event_id", "required, at most 128 characters", index=index
        )
    if not event.company_id or len(event.company_id) > MAX_ID_LEN:
        raise InvalidEvent(
            f"events[{index}].company_id", "required, at most 128 characters", index=index
        )
    if event.priority not in _VALID_PRIORITIES:
        raise InvalidEvent(f"events[{index}].priority", "must be P10, P20 or P30", index=index)


class PrepPublisher:
    """Publishes batches of events durably. See the module docstring for the guarantee.

    Concurrency: ``publish_with_result`` may be called concurrently; each call waits only
    for its own events. It never raises for a Kafka or store failure (those become per-event
    results); it raises InvalidEvent, before writing anything, when an event is malformed.

    Args:
        producers: one producer per (cluster, lane); rollout entries only when enabled.
        failed_writes: producer for the failed-writes topic (fallback cluster or primary).
        failed_writes_cluster: name reported for records captured there.
        backup: the last-resort store.
        router: lane/topic/cluster decisions.
        config: source of the current dynamic config (rollout share, gating).
        default_priority: class of events that arrive without one.
    """

    def __init__(
        self,
        *,
        producers: Mapping[tuple[ClusterName, Lane], Producer],
        failed_writes: Producer,
        failed_writes_topic: str,
        failed_writes_cluster: str,
        backup: BackupStore,
        router: Router,
        config: ConfigSource,
        metrics: Metrics,
        default_priority: Priority = Priority.P20,
    ) -> None:
        self._producers = producers
        self._failed_writes = failed_writes
        self._fw_topic = failed_writes_topic
        self._fw_cluster = failed_writes_cluster
        self._backup = backup
        self._router = router
        self._config = config
        self._default_priority = default_priority
        events = metrics.counter(
            "eventgw_publisher_events_total", "events by lane and outcome", ["lane", "status"]
        )
        self._count = {
            (lane, status): events.labels(lane, status)
            for lane in ("p30", "p20", "p10", "offload")
            for status in ("published", "failed_writes", "backed_up", "rejected", "failed")
        }
        self._latency = metrics.histogram(
            "eventgw_publisher_publish_duration_seconds", "publish call until every event durable"
        )

    async def publish_with_result(self, events: Sequence[pb.EventData]) -> list[pb.PublishResult]:
        """Publish ``events`` and return one result per event, in order (see class docstring)."""
        started = time.perf_counter()
        for i, event in enumerate(events):
            if event.priority == 0:
                event.priority = to_pb_priority(self._default_priority)
            validate_event(event, i)
        config = self._config.current
        results: list[pb.PublishResult | None] = [None] * len(events)
        lanes: list[Lane] = [self._router.lane(e) for e in events]
        groups: dict[tuple[ClusterName, Lane], list[int]] = defaultdict(list)
        for i, event in enumerate(events):
            reason = gate_reason(config.gating, event.source_name, event.company_id)
            if reason is not None:
                results[i] = pb.PublishResult(
                    event_id=event.event_id, status=pb.REJECTED, reason=reason
                )
                self._count[lanes[i], "rejected"].inc()
                continue
            groups[self._router.cluster(event.company_id, config), lanes[i]].append(i)

        failed: list[tuple[int, str, str, str]] = []  # (index, cluster, topic, error)

        async def send_group(cluster: ClusterName, lane: Lane, idx: list[int]) -> None:
            topic = self._router.topic(lane)
            records = [
                (
                    events[i].company_id.encode(),
                    events[i].SerializeToString(),
                    event_headers(events[i]),
                )
                for i in idx
            ]
            deliveries = await self._producers[cluster, lane].send(topic, records)
            published = 0
            for i, d in zip(idx, deliveries, strict=True):
                if d.ok:
                    results[i] = pb.PublishResult(
                        event_id=events[i].event_id,
                        status=pb.PUBLISHED,
                        cluster=cluster,
                        topic=topic,
                        partition=d.partition,
                        offset=d.offset,
                    )
                    published += 1
                else:
                    failed.append((i, cluster, topic, d.error))
            self._count[lane, "published"].inc(published)

        async with asyncio.TaskGroup() as tg:
            for (cluster, lane), idx in groups.items():
                tg.create_task(send_group(cluster, lane, idx))
        if failed:
            await self._capture(events, lanes, failed, results)
        self._latency.observe(time.perf_counter() - started)
        return results  # type: ignore[return-value]  # every slot is filled above

    async def _capture(
        self,
        events: Sequence[pb.EventData],
        lanes: list[Lane],
        failed: list[tuple[int, str, str, str]],
        results: list[pb.PublishResult | None],
    ) -> None:
        """Dual failure capture: failed-writes topic, then the backup store."""
        logger.warning("publisher.capture events=%d first_error=%s", len(failed), failed[0][3])
        captured: list[pb.EventData] = []
        records: list[Record] = []
        for i, cluster, topic, error in failed:
            copy = pb.EventData()
            copy.CopyFrom(events[i])
            copy.intended_cluster = cluster
            copy.intended_topic = topic
            captured.append(copy)
            headers = event_headers(copy)
            headers.append((H_ORIGINAL_TOPIC, topic.encode()))
            headers.append((H_ORIGINAL_CLUSTER, cluster.encode()))
            headers.append((H_LAST_ERROR, error[:500].encode()))
            records.append((copy.company_id.encode(), copy.SerializeToString(), headers))
        deliveries = await self._failed_writes.send(self._fw_topic, records)
        to_backup: list[int] = []
        for n, ((i, _, topic, _), d) in enumerate(zip(failed, deliveries, strict=True)):
            if d.ok:
                results[i] = pb.PublishResult(
                    event_id=events[i].event_id,
                    status=pb.FAILED_WRITES,
                    cluster=self._fw_cluster,
                    topic=self._fw_topic,
                    partition=d.partition,
                    offset=d.offset,
                    reason=f"intended {topic}",
                )
                self._count[lanes[i], "failed_writes"].inc()
            else:
                to_backup.append(n)
        if not to_backup:
            return
        try:
            key = await self._backup.put([records[n][1] for n in to_backup])
        except (BackupUnavailable, BackupFull, OSError) as exc:
            logger.error(
                "publisher.not_durable events=%d error=%s first_event_id=%s",
                len(to_backup),
                exc,
                captured[to_backup[0]].event_id,
            )
            for n in to_backup:
                i = failed[n][0]
                results[i] = pb.PublishResult(
                    event_id=events[i].event_id, status=pb.FAILED, reason=f"not durable: {exc}"
                )
                self._count[lanes[i], "failed"].inc()
            return
        for n in to_backup:
            i = failed[n][0]
            results[i] = pb.PublishResult(
                event_id=events[i].event_id,
                status=pb.BACKED_UP,
                cluster=self._backup.name,
                topic=key,
                reason=f"intended {failed[n][2]}",
            )
            self._count[lanes[i], "backed_up"].inc()
