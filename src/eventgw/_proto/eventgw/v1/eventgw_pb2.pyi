from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    P10: _ClassVar[Priority]
    P20: _ClassVar[Priority]
    P30: _ClassVar[Priority]

class DurabilityStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DURABILITY_STATUS_UNSPECIFIED: _ClassVar[DurabilityStatus]
    PUBLISHED: _ClassVar[DurabilityStatus]
    FAILED_WRITES: _ClassVar[DurabilityStatus]
    BACKED_UP: _ClassVar[DurabilityStatus]
    REJECTED: _ClassVar[DurabilityStatus]
    FAILED: _ClassVar[DurabilityStatus]
PRIORITY_UNSPECIFIED: Priority
P10: Priority
P20: Priority
P30: Priority
DURABILITY_STATUS_UNSPECIFIED: DurabilityStatus
PUBLISHED: DurabilityStatus
FAILED_WRITES: DurabilityStatus
BACKED_UP: DurabilityStatus
REJECTED: DurabilityStatus
FAILED: DurabilityStatus

class EventData(_message.Message):
    __slots__ = ("event_id", "company_id", "source_name", "statistic_key", "payload", "priority", "ingested_at_ms", "slo_deadline_ms", "request_id", "attempt", "offloaded", "intended_cluster", "intended_topic")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPANY_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    INGESTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SLO_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFLOADED_FIELD_NUMBER: _ClassVar[int]
    INTENDED_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    INTENDED_TOPIC_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    company_id: str
    source_name: str
    statistic_key: str
    payload: bytes
    priority: Priority
    ingested_at_ms: int
    slo_deadline_ms: int
    request_id: str
    attempt: int
    offloaded: bool
    intended_cluster: str
    intended_topic: str
    def __init__(self, event_id: _Optional[str] = ..., company_id: _Optional[str] = ..., source_name: _Optional[str] = ..., statistic_key: _Optional[str] = ..., payload: _Optional[bytes] = ..., priority: _Optional[_Union[Priority, str]] = ..., ingested_at_ms: _Optional[int] = ..., slo_deadline_ms: _Optional[int] = ..., request_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offloaded: _Optional[bool] = ..., intended_cluster: _Optional[str] = ..., intended_topic: _Optional[str] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[EventData]
    def __init__(self, events: _Optional[_Iterable[_Union[EventData, _Mapping]]] = ...) -> None: ...

class PublishResult(_message.Message):
    __slots__ = ("event_id", "status", "cluster", "topic", "partition", "offset", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    status: DurabilityStatus
    cluster: str
    topic: str
    partition: int
    offset: int
    reason: str
    def __init__(self, event_id: _Optional[str] = ..., status: _Optional[_Union[DurabilityStatus, str]] = ..., cluster: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PublishResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PublishResult, _Mapping]]] = ...) -> None: ...

class IngestEvent(_message.Message):
    __slots__ = ("company_id", "source_name", "statistic_key", "payload_json", "event_id")
    COMPANY_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    company_id: str
    source_name: str
    statistic_key: str
    payload_json: bytes
    event_id: str
    def __init__(self, company_id: _Optional[str] = ..., source_name: _Optional[str] = ..., statistic_key: _Optional[str] = ..., payload_json: _Optional[bytes] = ..., event_id: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[IngestEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[IngestEvent, _Mapping]]] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("event_id", "priority", "lane", "topic", "status", "reason", "cluster")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    priority: Priority
    lane: str
    topic: str
    status: DurabilityStatus
    reason: str
    cluster: str
    def __init__(self, event_id: _Optional[str] = ..., priority: _Optional[_Union[Priority, str]] = ..., lane: _Optional[str] = ..., topic: _Optional[str] = ..., status: _Optional[_Union[DurabilityStatus, str]] = ..., reason: _Optional[str] = ..., cluster: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("request_id", "results")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[IngestResult]
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[IngestResult, _Mapping]]] = ...) -> None: ...
