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
    DEFERRED: _ClassVar[DurabilityStatus]

class ResultKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_KIND_UNSPECIFIED: _ClassVar[ResultKind]
    ACK: _ClassVar[ResultKind]
    NACK: _ClassVar[ResultKind]
    RELEASE: _ClassVar[ResultKind]
    REJECT: _ClassVar[ResultKind]

class Lane(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANE_UNSPECIFIED: _ClassVar[Lane]
    LANE_P30: _ClassVar[Lane]
    LANE_P20: _ClassVar[Lane]
    LANE_P10: _ClassVar[Lane]
    LANE_OFFLOAD: _ClassVar[Lane]
    LANE_RETRY: _ClassVar[Lane]

class FlowAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_ACTION_UNSPECIFIED: _ClassVar[FlowAction]
    FLOW_ACTION_INCREASE: _ClassVar[FlowAction]
    FLOW_ACTION_DECREASE: _ClassVar[FlowAction]
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
DEFERRED: DurabilityStatus
RESULT_KIND_UNSPECIFIED: ResultKind
ACK: ResultKind
NACK: ResultKind
RELEASE: ResultKind
REJECT: ResultKind
LANE_UNSPECIFIED: Lane
LANE_P30: Lane
LANE_P20: Lane
LANE_P10: Lane
LANE_OFFLOAD: Lane
LANE_RETRY: Lane
FLOW_ACTION_UNSPECIFIED: FlowAction
FLOW_ACTION_INCREASE: FlowAction
FLOW_ACTION_DECREASE: FlowAction

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
    __slots__ = ("events", "accept_published_batch")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_PUBLISHED_BATCH_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[EventData]
    accept_published_batch: bool
    def __init__(self, events: _Optional[_Iterable[_Union[EventData, _Mapping]]] = ..., accept_published_batch: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("results", "published_batch")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_BATCH_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PublishResult]
    published_batch: PublishedBatch
    def __init__(self, results: _Optional[_Iterable[_Union[PublishResult, _Mapping]]] = ..., published_batch: _Optional[_Union[PublishedBatch, _Mapping]] = ...) -> None: ...

class PublishedBatch(_message.Message):
    __slots__ = ("cluster", "topic", "partitions", "offsets")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    topic: str
    partitions: _containers.RepeatedScalarFieldContainer[int]
    offsets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster: _Optional[str] = ..., topic: _Optional[str] = ..., partitions: _Optional[_Iterable[int]] = ..., offsets: _Optional[_Iterable[int]] = ...) -> None: ...

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
    __slots__ = ("request_id", "results", "retry_after_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[IngestResult]
    retry_after_ms: int
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[IngestResult, _Mapping]]] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "event", "delivery_count", "lease_expires_ms", "lane", "rank")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    event: EventData
    delivery_count: int
    lease_expires_ms: int
    lane: str
    rank: int
    def __init__(self, task_id: _Optional[str] = ..., event: _Optional[_Union[EventData, _Mapping]] = ..., delivery_count: _Optional[int] = ..., lease_expires_ms: _Optional[int] = ..., lane: _Optional[str] = ..., rank: _Optional[int] = ...) -> None: ...

class TaskBatch(_message.Message):
    __slots__ = ("tasks", "orchestrator_index", "backlog", "credit_returned", "fleet")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    CREDIT_RETURNED_FIELD_NUMBER: _ClassVar[int]
    FLEET_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    orchestrator_index: int
    backlog: int
    credit_returned: int
    fleet: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., orchestrator_index: _Optional[int] = ..., backlog: _Optional[int] = ..., credit_returned: _Optional[int] = ..., fleet: _Optional[str] = ...) -> None: ...

class WorkRequest(_message.Message):
    __slots__ = ("worker_id", "credit", "results", "revoke", "acked")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    credit: int
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    revoke: int
    acked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., credit: _Optional[int] = ..., results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., revoke: _Optional[int] = ..., acked: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "kind", "delay_ms", "error", "worker_id", "event_id", "orchestrator_index", "delivery_count")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: ResultKind
    delay_ms: int
    error: str
    worker_id: str
    event_id: str
    orchestrator_index: int
    delivery_count: int
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[_Union[ResultKind, str]] = ..., delay_ms: _Optional[int] = ..., error: _Optional[str] = ..., worker_id: _Optional[str] = ..., event_id: _Optional[str] = ..., orchestrator_index: _Optional[int] = ..., delivery_count: _Optional[int] = ...) -> None: ...

class TaskResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ...) -> None: ...

class ClassStats(_message.Message):
    __slots__ = ("lane", "buffered", "in_flight", "processed", "retried", "dead_lettered", "oldest_age_s", "slo_s", "paused", "buffered_bytes", "slo_met", "slo_missed", "offloaded_slo_met", "offloaded_slo_missed", "late")
    LANE_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AGE_S_FIELD_NUMBER: _ClassVar[int]
    SLO_S_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLO_MET_FIELD_NUMBER: _ClassVar[int]
    SLO_MISSED_FIELD_NUMBER: _ClassVar[int]
    OFFLOADED_SLO_MET_FIELD_NUMBER: _ClassVar[int]
    OFFLOADED_SLO_MISSED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    lane: str
    buffered: int
    in_flight: int
    processed: int
    retried: int
    dead_lettered: int
    oldest_age_s: float
    slo_s: float
    paused: bool
    buffered_bytes: int
    slo_met: int
    slo_missed: int
    offloaded_slo_met: int
    offloaded_slo_missed: int
    late: int
    def __init__(self, lane: _Optional[str] = ..., buffered: _Optional[int] = ..., in_flight: _Optional[int] = ..., processed: _Optional[int] = ..., retried: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., oldest_age_s: _Optional[float] = ..., slo_s: _Optional[float] = ..., paused: _Optional[bool] = ..., buffered_bytes: _Optional[int] = ..., slo_met: _Optional[int] = ..., slo_missed: _Optional[int] = ..., offloaded_slo_met: _Optional[int] = ..., offloaded_slo_missed: _Optional[int] = ..., late: _Optional[int] = ...) -> None: ...

class WorkerSessionStats(_message.Message):
    __slots__ = ("worker_id", "session", "credit", "leased", "results", "connected_s")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_S_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    session: int
    credit: int
    leased: int
    results: int
    connected_s: float
    def __init__(self, worker_id: _Optional[str] = ..., session: _Optional[int] = ..., credit: _Optional[int] = ..., leased: _Optional[int] = ..., results: _Optional[int] = ..., connected_s: _Optional[float] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("index", "lanes", "buffer_bytes", "buffer_budget_bytes", "workers", "serving")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LANES_FIELD_NUMBER: _ClassVar[int]
    BUFFER_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUFFER_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    index: int
    lanes: _containers.RepeatedCompositeFieldContainer[ClassStats]
    buffer_bytes: int
    buffer_budget_bytes: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerSessionStats]
    serving: bool
    def __init__(self, index: _Optional[int] = ..., lanes: _Optional[_Iterable[_Union[ClassStats, _Mapping]]] = ..., buffer_bytes: _Optional[int] = ..., buffer_budget_bytes: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerSessionStats, _Mapping]]] = ..., serving: _Optional[bool] = ...) -> None: ...

class FlowControlSignal(_message.Message):
    __slots__ = ("orchestrator_index", "priority", "action", "queue_depth", "oldest_ready_age_s", "paused_lanes", "reason", "emitted_at_ms")
    ORCHESTRATOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_READY_AGE_S_FIELD_NUMBER: _ClassVar[int]
    PAUSED_LANES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EMITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    orchestrator_index: int
    priority: Priority
    action: FlowAction
    queue_depth: int
    oldest_ready_age_s: float
    paused_lanes: _containers.RepeatedScalarFieldContainer[Lane]
    reason: str
    emitted_at_ms: int
    def __init__(self, orchestrator_index: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., action: _Optional[_Union[FlowAction, str]] = ..., queue_depth: _Optional[int] = ..., oldest_ready_age_s: _Optional[float] = ..., paused_lanes: _Optional[_Iterable[_Union[Lane, str]]] = ..., reason: _Optional[str] = ..., emitted_at_ms: _Optional[int] = ...) -> None: ...
