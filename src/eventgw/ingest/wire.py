"""Serialize ingest's batch messages by splicing bytes: part of ingest's hot path.

Why: building an ``EventData`` per event with upb and then serializing the request cost
1.5 µs per event, about a fifth of ingest's CPU. Yet only two fields differ from event to
event: ``event_id`` and ``payload``. The other fields repeat per identity (``company_id``,
``source_name``, ``statistic_key``) or per class within a batch (``priority``,
``ingested_at_ms``, ``slo_deadline_ms``, ``request_id``, ``offloaded``). Splicing costs
0.36 µs per event.

How: protobuf encodes a message as the concatenation of its fields' encodings. A
length-delimited field (string, bytes, nested message) is its tag, the varint length and
the bytes. So one event of the request is::

    events tag, varint(n), [event_id field][identity fields][payload field][class fields]
                            \\_____ n bytes ___________________________________________/

The identity and class parts are serialized by protobuf itself, once per distinct value,
with `identity_fields` and `class_fields`. This module writes only the two per-event
fields and the framing. The fields stay in field-number order, so the bytes equal what
``SerializeToString`` produces for the same request (tests/unit/ingest/test_wire.py checks
that for arbitrary values).

`ingest_response` does the same for the gRPC answer, ``IngestResponse``: only the
``event_id`` of an ``IngestResult`` differs between the events of a class (1.2 µs per
event with upb, 0.4 spliced).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.protowire import SHORT_VARINTS as _SHORT_VARINTS
from eventgw.core.protowire import varint as _varint

if TYPE_CHECKING:
    from collections.abc import Iterable


def _length_delimited_tag(
    message: type[pb.PublishRequest | pb.EventData | pb.IngestResponse | pb.IngestResult],
    field: str,
) -> bytes:
    number = message.DESCRIPTOR.fields_by_name[field].number
    return _varint((number << 3) | 2)  # wire type 2: length-delimited


_EVENTS_TAG: Final = _length_delimited_tag(pb.PublishRequest, "events")
_EVENT_ID_TAG: Final = _length_delimited_tag(pb.EventData, "event_id")
_PAYLOAD_TAG: Final = _length_delimited_tag(pb.EventData, "payload")
_RESULTS_TAG: Final = _length_delimited_tag(pb.IngestResponse, "results")
_RESULT_EVENT_ID_TAG: Final = _length_delimited_tag(pb.IngestResult, "event_id")
# Field 2 of PublishRequest comes after every event (field 1): field-number order again.
_ACCEPT_PUBLISHED_BATCH: Final = pb.PublishRequest(accept_published_batch=True).SerializeToString()


def _field(tag: bytes, value: bytes) -> bytes:
    """A length-delimited field, or nothing for an empty value (proto3 default)."""
    return tag + _varint(len(value)) + value if value else b""


def identity_fields(company_id: str, source_name: str, statistic_key: str) -> bytes:
    """The encoded identity fields of an event (the same for every event of the identity)."""
    encoded: bytes = pb.EventData(
        company_id=company_id, source_name=source_name, statistic_key=statistic_key
    ).SerializeToString()
    return encoded


def class_fields(
    priority: int, ingested_at_ms: int, slo_deadline_ms: int, request_id: str, offloaded: bool
) -> bytes:
    """The encoded fields after ``payload``; the same for the events of a class in a batch."""
    encoded: bytes = pb.EventData(
        priority=priority,  # type: ignore[arg-type]  # pb.Priority values are ints
        ingested_at_ms=ingested_at_ms,
        slo_deadline_ms=slo_deadline_ms,
        request_id=request_id,
        offloaded=offloaded,
    ).SerializeToString()
    return encoded


def event_data(event_id: str, identity: bytes, payload: bytes, class_part: bytes) -> bytes:
    """One serialized ``EventData``: the value of its Kafka record.

    ``identity`` and ``class_part`` come from `identity_fields` and `class_fields`.
    """
    short = _SHORT_VARINTS
    eid = event_id.encode()
    if eid and payload:  # always so from the pipeline: ids and payloads are not empty
        return b"".join(
            (
                _EVENT_ID_TAG,
                short[len(eid)] if len(eid) < 16384 else _varint(len(eid)),
                eid,
                identity,
                _PAYLOAD_TAG,
                short[len(payload)] if len(payload) < 16384 else _varint(len(payload)),
                payload,
                class_part,
            )
        )
    # proto3 leaves empty strings and bytes out of the encoding; so does this
    return b"".join(
        (_field(_EVENT_ID_TAG, eid), identity, _field(_PAYLOAD_TAG, payload), class_part)
    )


class RequestWriter:
    """Accumulates one serialized ``PublishRequest``; `add` an event, then `to_bytes`."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def add(self, event_id: str, identity: bytes, payload: bytes, class_part: bytes) -> None:
        """Append one ``EventData`` (see `event_data` for the arguments)."""
        body = event_data(event_id, identity, payload, class_part)
        self._parts += (
            _EVENTS_TAG,
            _SHORT_VARINTS[len(body)] if len(body) < 16384 else _varint(len(body)),
            body,
        )

    def to_bytes(self, *, accept_published_batch: bool) -> bytes:
        """The serialized request (with ``accept_published_batch`` as given)."""
        if accept_published_batch:
            return b"".join((*self._parts, _ACCEPT_PUBLISHED_BATCH))
        return b"".join(self._parts)


def ingest_response(
    request_id: str,
    results: Iterable[tuple[str, int, str, str, int, str, str]],
    retry_after_ms: int = 0,
) -> bytes:
    """The serialized ``IngestResponse`` of ``results``.

    ``results`` are `eventgw.ingest.pipeline.EventResult` tuples: ``(event_id, priority,
    lane, topic, status, reason, cluster)``, the fields of ``IngestResult`` in order.
    """
    short = _SHORT_VARINTS
    rests: dict[tuple[int, str, str, int, str, str], bytes] = {}  # the fields after event_id
    parts = [pb.IngestResponse(request_id=request_id).SerializeToString()]
    for event_id, priority, lane, topic, status, reason, cluster in results:
        key = (priority, lane, topic, status, reason, cluster)
        rest = rests.get(key)
        if rest is None:
            rest = rests[key] = _result_fields_after_event_id(*key)
        eid = event_id.encode()
        n = len(eid)
        body = (
            b"".join((_RESULT_EVENT_ID_TAG, short[n] if n < 16384 else _varint(n), eid, rest))
            if n
            else rest  # proto3 leaves an empty string out
        )
        parts += (_RESULTS_TAG, short[len(body)] if len(body) < 16384 else _varint(len(body)), body)
    if retry_after_ms:  # field 3, after the results: field-number order
        parts.append(pb.IngestResponse(retry_after_ms=retry_after_ms).SerializeToString())
    return b"".join(parts)


def _result_fields_after_event_id(
    priority: int, lane: str, topic: str, status: int, reason: str, cluster: str
) -> bytes:
    encoded: bytes = pb.IngestResult(
        priority=priority,  # type: ignore[arg-type]  # wire enum values are ints
        lane=lane,
        topic=topic,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        cluster=cluster,
    ).SerializeToString()
    return encoded
