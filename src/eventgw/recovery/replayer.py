"""Republish captured events to the topic (and cluster) they were meant for."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    H_LAST_ERROR,
    LANE_OF_PRIORITY,
    SLO_SECONDS,
    Priority,
    event_headers,
    to_pb_priority,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventgw.config.settings import TopicSettings
    from eventgw.core.classify import StaticClassifier
    from eventgw.kafka.producer import Delivery, Record

logger = logging.getLogger(__name__)

_UNDECODABLE = ((H_LAST_ERROR, b"undecodable: not an eventgw EventData"),)


class Producer(Protocol):
    """What the replayer needs from a producer (`BatchProducer`)."""

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]: ...


class Replayer:
    """Decodes captured records and republishes each to its intended topic.

    Records captured by the publisher carry ``intended_topic``/``intended_cluster``. Records
    captured by the client library (service down) carry neither: they are classified with
    the static rules and go to their class lane on the primary cluster.

    A record that is not an ``EventData`` has no intended topic: it goes to the DLQ (primary
    cluster) unchanged, so that it too is in Kafka before its source is deleted or committed.

    ``replay`` returns the number of records that are NOT yet back in Kafka (0 = all
    done); the caller retries the whole set later. Re-sending ones that already succeeded
    is a duplicate, which at-least-once allows (event ids are preserved).
    """

    def __init__(
        self,
        producers: Mapping[str, Producer],
        topics: TopicSettings,
        classifier: StaticClassifier,
    ) -> None:
        self._producers = producers
        self._topics = topics
        self._classifier = classifier

    def target(self, event: pb.EventData) -> tuple[str, str]:
        """(cluster, topic) an event belongs to."""
        if event.intended_topic:
            cluster = event.intended_cluster or "primary"
            if cluster not in self._producers:
                logger.warning(
                    "recovery.unknown_cluster cluster=%s event_id=%s using=primary",
                    cluster,
                    event.event_id,
                )
                cluster = "primary"
            return cluster, event.intended_topic
        if event.priority not in (10, 20, 30):
            priority = self._classifier.classify(
                event.source_name, event.statistic_key, event.company_id
            )
            event.priority = to_pb_priority(priority)
            if not event.slo_deadline_ms:
                # The promise is measured from when the client first tried, not from now.
                event.slo_deadline_ms = event.ingested_at_ms + int(SLO_SECONDS[priority] * 1000)
        lane = "offload" if event.offloaded else LANE_OF_PRIORITY[Priority(event.priority)]
        return "primary", self._topics.lane_topic(lane)

    async def replay(self, values: Sequence[bytes]) -> int:
        """Republish serialized EventData values; returns how many are not yet in Kafka."""
        groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
        for value in values:
            event = pb.EventData()
            try:
                event.ParseFromString(value)
            except Exception:  # noqa: BLE001  (protobuf raises DecodeError/RuntimeError variants)
                # It can never be replayed to a lane; parked in the DLQ as it is, not dropped.
                logger.error("recovery.undecodable bytes=%d (to the DLQ)", len(value))
                groups["primary", self._topics.dlq].append((b"", value, list(_UNDECODABLE)))
                continue
            cluster, topic = self.target(event)
            event.ClearField("intended_topic")
            event.ClearField("intended_cluster")
            groups[cluster, topic].append(
                (event.company_id.encode(), event.SerializeToString(), event_headers(event))
            )
        failed = 0

        async def send(cluster: str, topic: str, records: list[Record]) -> None:
            nonlocal failed
            deliveries = await self._producers[cluster].send(topic, records)
            bad = [d.error for d in deliveries if not d.ok]
            if bad:
                failed += len(bad)
                logger.warning(
                    "recovery.replay_failed cluster=%s topic=%s failed=%d error=%s",
                    cluster,
                    topic,
                    len(bad),
                    bad[0],
                )

        async with asyncio.TaskGroup() as tg:
            for (cluster, topic), records in groups.items():
                tg.create_task(send(cluster, topic, records))
        return failed
