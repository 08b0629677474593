"""The ``GET /status`` document of ingest, as msgspec structs.

One definition serves three readers: `AdmissionControl.status` and `door_status` build it
(so a field added there is added here, checked by mypy), ``http_app`` encodes it, and
``openapi`` documents it from these same types (docs/operations.md, "Status page and API").
The built-in status page (``GET /``) reads it every second.

The public port serves `StatusDocument`, which names no company. The admin port
(``ingest.admin_port``, loopback by default) serves `AdminStatusDocument`: the same plus
``hot_companies``, which lists company ids (docs/security.md).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = [
    "AdminStatusDocument",
    "AdmissionClasses",
    "AdmissionStatus",
    "ClassAdmission",
    "DoorClass",
    "DoorClasses",
    "DoorStatus",
    "HotCompany",
    "HotTenantCounts",
    "StatusDocument",
]


def _doc(text: str) -> msgspec.Meta:
    """A field's description in the JSON Schema (GET /openapi.json)."""
    return msgspec.Meta(description=text)


class ClassAdmission(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """AIMD admission of one class (docs/flow-control.md, "The SLO service")."""

    capacity: Annotated[float, _doc("events/s this class may keep on its lane")]
    decrements_last_minute: Annotated[int, _doc("capacity cuts in the last 60 s")]
    admitted: Annotated[int, _doc("events kept on their class lane since start")]
    offloaded: Annotated[int, _doc("events AIMD sent to the offload lane since start (capacity)")]


class AdmissionClasses(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`ClassAdmission` of each class."""

    P30: ClassAdmission
    P20: ClassAdmission
    P10: ClassAdmission


class HotTenantCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Hot-tenant decisions since start, apart from AIMD's (docs/flow-control.md)."""

    offloaded: Annotated[int, _doc("events offloaded because their company was hot")]
    offloaded_by_kill_switch: Annotated[int, _doc("events of force_offload_companies")]
    demoted: Annotated[int, _doc("events moved down one class because their company was hot")]
    max_rate_per_company: Annotated[float, _doc("events/s at which a company counts as hot")]


class HotCompany(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A company at or above ``max_rate_per_company``."""

    company_id: str
    rate: Annotated[float, _doc("events/s over the hot-tenant window")]


class DoorClass(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The door's counts for one class (docs/flow-control.md, "The door")."""

    admitted: Annotated[int, _doc("events taken since start")]
    deferred: Annotated[int, _doc("events answered DEFERRED since start")]
    limit_events: Annotated[
        int, _doc("events in flight up to which this class is taken (its share)")
    ]


class DoorClasses(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`DoorClass` of each class."""

    P30: DoorClass
    P20: DoorClass
    P10: DoorClass


class DoorStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``door`` section: events and requests in flight, the hint, refusals."""

    in_flight_events: Annotated[int, _doc("taken, not yet answered")]
    max_in_flight_events: Annotated[int, _doc("ingest.max_in_flight_events")]
    in_flight_requests: int
    retry_after_ms: Annotated[int, _doc("the hint a deferral would carry now")]
    refused_requests: Annotated[
        int, _doc("refused whole since start (past twice max_in_flight_requests)")
    ]
    scale: Annotated[
        float,
        _doc(
            "share of their limits P10 and P20 have now: below 1 while the write path "
            "queues past ingest.door_queue_target_ms"
        ),
    ]
    unloaded_ms: Annotated[float, _doc("the write path's latency without a queue (estimate)")]
    held_events: Annotated[int, _doc("events of requests waiting for room now")]
    held: Annotated[int, _doc("requests that waited for room since start")]
    classes: DoorClasses


class AdmissionStatus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The admission part of the document (`AdmissionControl.status`)."""

    pid: Annotated[int, _doc("with ingest.workers > 1: which worker answered")]
    serious_congestion: Annotated[
        bool, _doc("the alert: > alert_decrements_per_minute P10 cuts a minute")
    ]
    aimd_enabled: bool
    classes: AdmissionClasses
    hot_tenants: HotTenantCounts
    flow_control_signals: Annotated[int, _doc("INCREASE/DECREASE signals applied since start")]


class StatusDocument(AdmissionStatus, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole ``GET /status`` answer of the public port: admission plus the door."""

    door: DoorStatus


class AdminStatusDocument(StatusDocument, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``GET /status`` on the admin port: `StatusDocument` plus the hot companies."""

    hot_companies: Annotated[list[HotCompany], _doc("hottest first, at most 10")]
