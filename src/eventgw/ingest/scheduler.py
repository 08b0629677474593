"""Scheduler: stamps deadlines and picks the lane (class topic or offload).

The admission decision is delegated to an `Admission` (the SLO service seam): the default
admits everything; the AIMD SLO service (a later issue) plugs in here and returns False for
events over a class's capacity, which then go to the offload lane. P30 is never offloaded
unless ``offload_p30`` is set.
"""

from __future__ import annotations

from typing import Protocol

from eventgw.core.envelope import SLO_SECONDS, Priority

_SLO_MS = {p: int(s * 1000) for p, s in SLO_SECONDS.items()}


class Admission(Protocol):
    """Decides whether an event of a class fits the current capacity."""

    def admit(self, priority: Priority, company_id: str) -> bool: ...

    def admit_many(self, priority: Priority, n: int) -> int:
        """Admit up to ``n`` events of ``priority``; returns how many were admitted."""
        ...


class AdmitAll:
    """The admission policy when no SLO service runs: every event keeps its class lane."""

    def admit(self, priority: Priority, company_id: str) -> bool:
        """Always True."""
        return True

    def admit_many(self, priority: Priority, n: int) -> int:
        """Always ``n``."""
        return n


class Scheduler:
    """Computes ``slo_deadline_ms`` and the offload flag of each event."""

    def __init__(self, admission: Admission, offload_p30: bool = False) -> None:
        self._admission = admission
        self._offload_p30 = offload_p30

    @property
    def may_offload(self) -> bool:
        """False when `offload` is False for every event: the policy admits everything.

        Lets the pipeline skip two calls per event on the default set-up; any other
        `Admission` is still asked once per event, as its contract says.
        """
        return type(self._admission) is not AdmitAll

    def deadline_ms(self, priority: Priority, ingested_at_ms: int) -> int:
        """``ingested_at + SLO(class)``; it never moves afterwards."""
        return ingested_at_ms + _SLO_MS[priority]

    def admitted(self, priority: Priority, n: int) -> int:
        """How many of ``n`` events of ``priority`` keep their class lane; the rest offload.

        One admission question for a batch's events of a class (the ingest pipeline asks
        this once per class and batch). P30 is always admitted unless ``offload_p30``.
        """
        if priority is Priority.P30 and not self._offload_p30:
            return n
        return self._admission.admit_many(priority, n)

    def offload(self, priority: Priority, company_id: str) -> bool:
        """True when the event must go to the offload lane instead of its class lane."""
        if priority is Priority.P30 and not self._offload_p30:
            return False
        return not self._admission.admit(priority, company_id)
