"""Republish captured events to the topic (and cluster) they were meant for, or park them.

A captured event ends in exactly one of three states per call (`Outcome`): back in its
lane or retry topic, parked in the DLQ, or still pending (its captured copy must be kept
and replayed later). See docs/failure-handling.md, "Replay never stalls".
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import (
    H_LAST_ERROR,
    H_ORIGINAL_CLUSTER,
    H_ORIGINAL_TOPIC,
    H_RECOVERY_SOURCE,
    LANE_OF_PRIORITY,
    SLO_SECONDS,
    Headers,
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


ParkReason = Literal["undecodable", "invalid", "unknown_topic", "refused", "gave_up"]
"""Why an event was parked in the DLQ instead of replayed.

``undecodable``: the record is not an ``EventData``. ``invalid``: it is one, but without an
``event_id`` (a tombstone parses as an empty one), or a time in it (``ingested_at_ms``,
``slo_deadline_ms``) is not a wall-clock time (negative, or 15 digits or more): no deadline
can be computed from it. ``unknown_topic``: its intended topic is
not a lane or retry topic of this deployment (``topics`` settings). ``refused``: Kafka
refused the record for good (`Delivery.permanent`: unknown topic or partition, not
authorized, too large, invalid). ``gave_up``: transient failures outlasted the caller's
attempts (``recovery.max_attempts``).
"""

_ERROR_HEADER_MAX = 1000  # bytes of the error text kept in eventgw-last-error
_MAX_WALL_MS = 10**15  # a wall-clock ms value has 13 digits; 15 or more is not a time


class Outcome(enum.Enum):
    """Where one captured event is after a `Replayer.replay` call."""

    REPLAYED = "replayed"  # Kafka confirmed it in its lane or retry topic
    PARKED = "parked"  # Kafka confirmed it in the DLQ
    PENDING = "pending"  # in no topic yet: keep the captured copy and call again later


@dataclass(frozen=True, slots=True)
class Captured:
    """One captured record to replay, and where its captured copy is kept meanwhile.

    Attributes:
        value: the record value as captured (a serialized ``EventData``, or anything).
        source: where the copy is, for the DLQ header and logs: ``<topic>:<partition>:<offset>``
            in the failed-writes topic, ``<store>:<key>`` for a backup object.
    """

    value: bytes
    source: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What one `Replayer.replay` call achieved, per captured event (same order).

    Attributes:
        outcomes: one `Outcome` per captured event.
        parked: how many were parked, by reason.
        dlq_refused: indexes of PENDING events that the DLQ refused for good (e.g. too large
            for it too): no retry can put them in Kafka; the caller must keep them elsewhere.
    """

    outcomes: tuple[Outcome, ...]
    parked: Mapping[ParkReason, int] = field(default_factory=dict)
    dlq_refused: tuple[int, ...] = ()

    @property
    def pending(self) -> list[int]:
        """Indexes of the events in no topic yet (their captured copies must be kept)."""
        return [i for i, o in enumerate(self.outcomes) if o is Outcome.PENDING]

    @property
    def replayed(self) -> int:
        """How many events Kafka confirmed in their lane or retry topic."""
        return sum(1 for o in self.outcomes if o is Outcome.REPLAYED)


class Producer(Protocol):
    """What the replayer needs from a producer (`BatchProducer`)."""

    async def send(self, topic: str, records: Sequence[Record]) -> list[Delivery]: ...


@dataclass(slots=True)
class _Park:
    index: int
    reason: ParkReason
    error: str


class Replayer:
    """Decodes captured records and republishes each to its intended topic, or parks it.

    Records captured by the publisher carry ``intended_topic``/``intended_cluster``. Only a
    lane or retry topic named in the ``topics`` settings is a valid target: a record naming
    any other topic is parked, never written where it says. Records captured by the client
    library (service down) carry no target: they are classified with the static rules and go
    to their class lane on the primary cluster.

    Parking (see `ParkReason`) writes the event as captured to ``topics.dlq`` on the primary
    cluster (a client capture with the class it was given; an undecodable value as it is),
    with the event's headers plus ``eventgw-last-error`` (why), ``eventgw-original-topic``/
    ``-cluster`` (where it was meant to go) and ``eventgw-recovery-source``
    (`Captured.source`). An event is PARKED only once Kafka confirmed the DLQ write;
    otherwise it stays PENDING. A size refusal is believed only for a record sent alone
    (`Delivery.too_large`).

    Every record written (lane, retry topic or DLQ) carries ``eventgw-recovery-source``
    (`Captured.source`): the failed-writes processor reads it back on restart to skip
    the events an earlier run already replayed (docs/delivery-semantics.md).

    Transient failures leave an event PENDING, unless the caller passes ``give_up=True``
    (its attempts are spent): then they are parked too. Retrying a PENDING event may
    duplicate one that Kafka had in fact written; event ids are kept (at-least-once).
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
        self._send_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        # Replay writes only where eventgw itself writes: the lanes and the retry topics.
        self._known_topics = frozenset(
            {topics.p30, topics.p20, topics.p10, topics.offload}
            | {topics.retry_60s, topics.retry_120s, topics.retry_240s, topics.retry_480s}
        )

    def cluster_of(self, value: bytes) -> str:
        """The cluster a captured record's replay would be written to (its lane, or the DLQ).

        ``primary`` for a record that would be parked (the DLQ is there).
        """
        event = pb.EventData()
        try:
            event.ParseFromString(value)
        except Exception:  # noqa: BLE001  (protobuf raises DecodeError/RuntimeError variants)
            return "primary"
        if _invalid(event) is not None or event.intended_topic not in self._known_topics:
            return "primary"  # parked, or a client capture (classified into a primary lane)
        cluster = event.intended_cluster or "primary"
        # As `target`, without its warning: an unknown cluster is replayed to the primary one.
        return cluster if cluster in self._producers else "primary"

    def target(self, event: pb.EventData) -> tuple[str, str] | None:
        """(cluster, topic) an event belongs to; None if it names a topic we do not know.

        A client capture (no intended topic) is classified here, in place: its priority
        and, if missing, its deadline are set on ``event``.
        """
        if event.intended_topic:
            if event.intended_topic not in self._known_topics:
                return None
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

    async def replay(self, captured: Sequence[Captured], *, give_up: bool = False) -> ReplayReport:
        """Republish ``captured`` events; park what cannot be replayed; report each outcome.

        Args:
            give_up: the caller's attempts for these events are spent: park transient
                failures as well (reason ``gave_up``) instead of leaving them PENDING.

        Cancellation: records already handed to Kafka still complete; the caller keeps every
        captured copy, so they are replayed again (duplicates, never loss).
        """
        outcomes = [Outcome.PENDING] * len(captured)
        events: list[pb.EventData | None] = [None] * len(captured)
        targets: list[tuple[str, str] | None] = [None] * len(captured)
        classified: list[bool] = [False] * len(captured)  # a client capture, classified here
        parks: list[_Park] = []
        groups: dict[tuple[str, str], list[tuple[int, Record]]] = defaultdict(list)
        for i, item in enumerate(captured):
            event = pb.EventData()
            try:
                event.ParseFromString(item.value)
            except Exception:  # noqa: BLE001  (protobuf raises DecodeError/RuntimeError variants)
                parks.append(_Park(i, "undecodable", "undecodable: not an eventgw EventData"))
                continue
            events[i] = event
            invalid = _invalid(event)
            if invalid is not None:
                parks.append(_Park(i, "invalid", invalid))
                continue
            classified[i] = not event.intended_topic
            target = targets[i] = self.target(event)
            if target is None:
                error = f"intended topic {event.intended_topic!r} is not a lane or retry topic"
                parks.append(_Park(i, "unknown_topic", error))
                continue
            # Where it was meant to go is kept in ``targets`` (for the DLQ headers, if it is
            # refused); the lane copy no longer names it.
            event.ClearField("intended_topic")
            event.ClearField("intended_cluster")
            headers = event_headers(event)
            # Where the captured copy is: a restart finds the events already replayed by it
            # (eventgw.recovery.read_back) instead of sending them again.
            headers.append((H_RECOVERY_SOURCE, item.source.encode()))
            record = (event.company_id.encode(), event.SerializeToString(), headers)
            groups[target].append((i, record))

        async def send(cluster: str, topic: str, group: list[tuple[int, Record]]) -> None:
            deliveries = await self._send(cluster, topic, [r for _, r in group])
            transient: list[str] = []
            for (i, _), d in zip(group, deliveries, strict=True):
                if d.ok:
                    outcomes[i] = Outcome.REPLAYED
                elif d.permanent:
                    parks.append(_Park(i, "refused", f"{topic}: {d.error}"))
                elif give_up:
                    parks.append(_Park(i, "gave_up", f"{topic}: {d.error} (attempts spent)"))
                else:
                    transient.append(d.error)
            if transient:
                logger.warning(
                    "recovery.replay_failed cluster=%s topic=%s failed=%d error=%s",
                    cluster,
                    topic,
                    len(transient),
                    transient[0],
                )

        async with asyncio.TaskGroup() as tg:
            for (cluster, topic), group in groups.items():
                tg.create_task(send(cluster, topic, group))
        if not parks:
            return ReplayReport(tuple(outcomes))
        parked, dlq_refused = await self._park(
            captured, events, targets, classified, parks, outcomes
        )
        return ReplayReport(tuple(outcomes), parked, dlq_refused)

    async def _send(self, cluster: str, topic: str, records: Sequence[Record]) -> list[Delivery]:
        """Send ``records``; a size refusal is only believed for a record sent alone.

        The broker refuses a whole batch that is over ``max.message.bytes``, so one large
        record fails its neighbours too (`Delivery.too_large`). Each such record is sent
        again by itself, awaited before the next, so that it shares no batch with them.
        Sends to one topic are serialised: the topic loop and the backup loop share this
        replayer and its producers, and a record alone in this call would otherwise still
        share a batch with the other loop's large record.
        """
        producer = self._producers[cluster]
        async with self._send_locks[(cluster, topic)]:
            deliveries = await producer.send(topic, records)
            for i, d in enumerate(deliveries):
                if d.too_large and len(records) > 1:
                    (deliveries[i],) = await producer.send(topic, [records[i]])
        return deliveries

    async def _park(
        self,
        captured: Sequence[Captured],
        events: Sequence[pb.EventData | None],
        targets: Sequence[tuple[str, str] | None],
        classified: Sequence[bool],
        parks: Sequence[_Park],
        outcomes: list[Outcome],
    ) -> tuple[dict[ParkReason, int], tuple[int, ...]]:
        """Write ``parks`` to the DLQ; mark the confirmed ones PARKED (in ``outcomes``)."""
        records: list[Record] = []
        for park in parks:
            event = events[park.index]
            headers: Headers = event_headers(event) if event is not None else []
            original = _original(event, targets[park.index])
            if original is not None:
                cluster, topic = original
                headers.append((H_ORIGINAL_TOPIC, topic.encode()))
                headers.append((H_ORIGINAL_CLUSTER, cluster.encode()))
            headers.append((H_LAST_ERROR, park.error.encode()[:_ERROR_HEADER_MAX]))
            headers.append((H_RECOVERY_SOURCE, captured[park.index].source.encode()))
            key = event.company_id.encode() if event is not None else b""
            value = captured[park.index].value
            if event is not None and classified[park.index]:
                # With its class and deadline, as its lane would have had it; the rest as
                # captured (a publisher capture still names its intended topic).
                value = event.SerializeToString()
            records.append((key, value, headers))
        deliveries = await self._send("primary", self._topics.dlq, records)
        parked: Counter[ParkReason] = Counter()
        refused: list[int] = []
        for park, d in zip(parks, deliveries, strict=True):
            event = events[park.index]
            event_id = event.event_id if event is not None else ""
            source = captured[park.index].source
            if d.ok:
                outcomes[park.index] = Outcome.PARKED
                parked[park.reason] += 1
                logger.error(
                    "recovery.parked event_id=%s reason=%s source=%s dlq=%s partition=%d "
                    "offset=%d error=%s",
                    event_id,
                    park.reason,
                    source,
                    self._topics.dlq,
                    d.partition,
                    d.offset,
                    park.error,
                )
                continue
            if d.permanent:
                refused.append(park.index)
            logger.error(
                "recovery.park_failed event_id=%s reason=%s source=%s permanent=%s error=%s",
                event_id,
                park.reason,
                source,
                d.permanent,
                d.error,
            )
        return dict(parked), tuple(refused)


def _invalid(event: pb.EventData) -> str | None:
    """Why ``event`` cannot be replayed as an event, or None.

    No ``event_id``: a tombstone (or any empty value) parses as an empty EventData; replayed,
    it would reach a lane as an event of nobody. Times that are not times: checked before a
    deadline is computed from them (``ingested_at_ms + SLO`` past int64 made the protobuf
    setter raise, and the failed-writes processor exited on every restart).
    """
    if not event.event_id:
        return "invalid: no event_id"
    for name, value in (
        ("ingested_at_ms", event.ingested_at_ms),
        ("slo_deadline_ms", event.slo_deadline_ms),
    ):
        if not 0 <= value < _MAX_WALL_MS:
            return f"invalid: {name} {value} is not a wall-clock time in ms"
    return None


def _original(event: pb.EventData | None, target: tuple[str, str] | None) -> tuple[str, str] | None:
    """(cluster, topic) the event was meant for, as far as we know."""
    if target is not None:
        return target
    if event is not None and event.intended_topic:
        return event.intended_cluster or "primary", event.intended_topic
    return None
