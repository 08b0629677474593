"""Where a redriven DLQ record goes, and the lane record written for it. Pure.

The target is the lane the event was first read from (``eventgw-original-topic``) when that
is one of the four lane topics, else the lane of its class. The lane record is the event as
it was, with ``attempt`` reset to 0: class and deadline never change (the deadline is the
first promise, docs/priorities-and-backpressure.md). The ``eventgw-redriven`` header names
the DLQ record it came from; the orchestrator routes such a record to the parking lot, not
back to the DLQ, if it fails for good again (docs/failure-handling.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from eventgw.core.envelope import H_REDRIVEN, LANE_OF_PRIORITY, LANES, Priority, event_headers
from eventgw.dlq.record import parse_count
from eventgw.dlq.redrive_log import log_key

if TYPE_CHECKING:
    from eventgw.config.settings import TopicSettings
    from eventgw.core.envelope import Lane
    from eventgw.dlq.record import DlqRecord
    from eventgw.kafka.producer import Record

# The orchestrator serves an event of unknown class as P10 (its least urgent class).
_UNKNOWN_CLASS_LANE: Final = LANE_OF_PRIORITY[Priority.P10]


class NotRedrivable(ValueError):
    """The record cannot go back to a lane: its value is not an ``EventData``.

    Attributes:
        coordinate: ``<partition>:<offset>`` of the record.
    """

    def __init__(self, coordinate: str) -> None:
        super().__init__(f"{coordinate}: not an EventData, cannot be redriven")
        self.coordinate = coordinate


def lane_topics(topics: TopicSettings) -> dict[str, Lane]:
    """``{lane topic: lane}`` for the four lanes."""
    return {topics.lane_topic(lane): lane for lane in LANES}


def redrive_target(record: DlqRecord, topics: TopicSettings) -> str:
    """The lane topic ``record`` is redriven to.

    Raises:
        NotRedrivable: the record's value is not an ``EventData``.
    """
    if record.event is None:
        raise NotRedrivable(record.coordinate)
    origin = record.origin_topic
    if origin is not None and origin in lane_topics(topics):
        return origin
    priority = record.priority
    lane = LANE_OF_PRIORITY[priority] if priority is not None else _UNKNOWN_CLASS_LANE
    return topics.lane_topic(lane)


def source_marker(topic: str, partition: int, offset: int) -> bytes:
    """The value of ``eventgw-redriven`` / ``eventgw-replayed``: ``<topic>:<partition>:<offset>``.

    Topic names cannot contain ``:`` (Kafka allows ``[a-zA-Z0-9._-]``), so it splits back.
    It is the record's key in the redrive log, so a lane record names its log entry.
    """
    return log_key(topic, partition, offset).encode()


def parse_source_marker(raw: bytes) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` of a marker, or None if it is not one."""
    topic, _, rest = raw.decode(errors="replace").partition(":")
    partition_text, _, offset_text = rest.partition(":")
    partition, offset = parse_count(partition_text), parse_count(offset_text, max_digits=19)
    if not topic or partition is None or offset is None:
        return None
    return topic, partition, offset


def redrive_record(record: DlqRecord) -> Record:
    """The lane record for ``record``: same key and event, ``attempt`` 0, marked redriven.

    Raises:
        NotRedrivable: the record's value is not an ``EventData``.
    """
    if record.event is None:
        raise NotRedrivable(record.coordinate)
    event = type(record.event)()
    event.CopyFrom(record.event)  # the record's event stays as it was read
    event.attempt = 0
    headers = event_headers(event)
    headers.append((H_REDRIVEN, source_marker(record.topic, record.partition, record.offset)))
    key = record.key if record.key else event.company_id.encode()
    return key, event.SerializeToString(), headers
