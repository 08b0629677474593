"""Admission control at ingest: the SLO service, hot tenants, flow control and the alert.

`AdmissionControl` owns the pieces of admission (docs/flow-control.md, "The loop") that
decide, per event, whether it keeps its class lane:

- `DynamicClassifier` (hot tenants, kill switches) may demote an event or force it to the
  offload lane;
- `SloService` (AIMD) admits up to each class's capacity; the excess is offloaded (shed,
  never dropped; P30 never unless configured);
- `FlowControlListener` feeds the SLO service the orchestrators' INCREASE/DECREASE signals;
- the dynamic config file (``ingest.dynamic_config_path``) hot-reloads both parameter sets;
- the serious-congestion alert (more than 10 P10 decrements a minute) is raised as a metric,
  an ERROR log line and the ``/status`` page.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import TYPE_CHECKING

from eventgw.config.dynamic import DynamicConfigWatcher
from eventgw.core.envelope import Priority
from eventgw.core.lifecycle import sleep_or_stop
from eventgw.ingest.flow_control import FlowControlListener
from eventgw.ingest.hot_tenants import DynamicClassifier
from eventgw.ingest.slo_service import SloService
from eventgw.ingest.status_doc import (
    AdmissionClasses,
    AdmissionStatus,
    ClassAdmission,
    HotCompany,
    HotTenantCounts,
)
from eventgw.kafka.client_config import FLOW_CONTROL_READER_GROUP, consumer_config
from eventgw.kafka.consumer import ConsumerError, PartitionReader

if TYPE_CHECKING:
    from eventgw.config.settings import EventGwSettings
    from eventgw.core.clock import Clock
    from eventgw.metrics.backend import Metrics

logger = logging.getLogger(__name__)

_CLASSES = (Priority.P30, Priority.P20, Priority.P10)


class AdmissionControl:
    """See the module docstring. ``run`` keeps flow control and config reloads going."""

    def __init__(self, settings: EventGwSettings, metrics: Metrics, clock: Clock) -> None:
        self._settings = settings
        self._metrics = metrics
        self.watcher = DynamicConfigWatcher(
            settings.ingest.dynamic_config_path,
            metrics,
            index_keys=(settings.orchestrator.rollout_orchestrator_config_key,),
        )
        config = self.watcher.current
        self.slo = SloService(config.aimd, clock)
        self.classifier = DynamicClassifier(config.hot_tenants, clock)
        self._applied_version = self.watcher.version
        self.alerting = False
        capacity = metrics.gauge(
            "eventgw_ingest_slo_capacity_events_per_second", "admission capacity", ["class"]
        )
        decrements = metrics.gauge(
            "eventgw_ingest_slo_decrements_per_minute", "capacity decrements, last 60 s", ["class"]
        )
        for p in _CLASSES:
            capacity.labels(p.name).set_function(functools.partial(self._capacity, p))
            decrements.labels(p.name).set_function(functools.partial(self._decrements, p))
        metrics.gauge(
            "eventgw_ingest_serious_congestion", "1 while the serious-congestion alert is on"
        ).set_function(lambda: float(self.alerting))
        # Read at scrape time (one scan of at most hot_tenants.max_tracked companies), never
        # on the event path.
        metrics.gauge(
            "eventgw_ingest_hot_companies", "companies at or above the hot-tenant rate now"
        ).set_function(lambda: float(self.classifier.tracker.hot_count()))
        self.listener: FlowControlListener | None = None

    def _capacity(self, priority: Priority) -> float:
        return self.slo.capacity(priority)

    def _decrements(self, priority: Priority) -> float:
        return float(self.slo.decrements_last_minute(priority))

    async def run(self, stop: asyncio.Event) -> None:
        """Flow control, config reloads and the alert, until ``stop``."""
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.watcher.run(ready, stop))
            tg.create_task(self._flow_control(stop))
            tg.create_task(self._watch(stop))

    async def _flow_control(self, stop: asyncio.Event) -> None:
        """Tail the flow-control topic; Kafka being away must not stop ingest: retry."""
        s = self._settings
        attempt = 0
        while not stop.is_set():
            reader = PartitionReader(
                consumer_config(s.kafka.primary, FLOW_CONTROL_READER_GROUP, "eventgw-ingest"),
                s.topics.flow_control,
                None,
            )
            try:
                await reader.start()
                self.listener = FlowControlListener(reader, self.slo, self._metrics)
                attempt = 0
                await self.listener.run(stop)
            except ConsumerError as exc:
                attempt += 1
                logger.warning(
                    "flow_control.unavailable error=%s retry_in_s=%d", exc, 2 ** min(attempt, 5)
                )
                await sleep_or_stop(stop, float(2 ** min(attempt, 5)))
            finally:
                await reader.close()

    async def _watch(self, stop: asyncio.Event) -> None:
        """Apply reloaded config; raise or clear the serious-congestion alert."""
        while not stop.is_set():
            if self.watcher.version != self._applied_version:
                self._applied_version = self.watcher.version
                self.slo.apply_config(self.watcher.current.aimd)
                self.classifier.apply_config(self.watcher.current.hot_tenants)
                logger.info("admission.config_applied version=%d", self._applied_version)
            serious = self.slo.serious_congestion()
            if serious and not self.alerting:
                logger.error(
                    "slo.serious_congestion p10_decrements_last_minute=%d capacity=%.0f",
                    self.slo.decrements_last_minute(Priority.P10),
                    self.slo.capacity(Priority.P10),
                )
            elif self.alerting and not serious:
                logger.info("slo.serious_congestion_cleared")
            self.alerting = serious
            await sleep_or_stop(stop, 0.5)

    def hot_companies(self) -> list[HotCompany]:
        """The hot companies, hottest first, at most 10 (the admin port's ``/status``)."""
        return [
            HotCompany(company_id=company, rate=round(rate, 1))
            for company, rate in self.classifier.statistics().tenants.hot
        ]

    def status(self) -> AdmissionStatus:
        """The ``/status`` document: capacities, decrements, shed counts, hot-tenant counts,
        the alert; no company ids (those are `hot_companies`, for the admin port).

        ``classes.*.offloaded`` counts AIMD's capacity decisions only; events offloaded
        because their company was hot are under ``hot_tenants``.
        """
        st = self.slo.statistics()
        hot = self.classifier.statistics()

        def of(p: Priority) -> ClassAdmission:
            c = st.classes[p]
            return ClassAdmission(
                capacity=round(c.capacity, 1),
                decrements_last_minute=c.decrements_last_minute,
                admitted=c.admitted,
                offloaded=c.shed,
            )

        return AdmissionStatus(
            pid=os.getpid(),
            serious_congestion=self.alerting,
            aimd_enabled=st.enabled,
            classes=AdmissionClasses(
                P30=of(Priority.P30), P20=of(Priority.P20), P10=of(Priority.P10)
            ),
            # Hot-tenant decisions, separate from AIMD's "offloaded" per class above.
            hot_tenants=HotTenantCounts(
                offloaded=hot.offloaded_hot,
                offloaded_by_kill_switch=hot.offloaded_forced,
                demoted=hot.demoted,
                max_rate_per_company=hot.tenants.max_rate_per_company,
            ),
            flow_control_signals=self.listener.applied if self.listener else 0,
        )
