"""Composition root of the prep publisher: producers, backup store, gRPC and status servers."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from eventgw._proto.eventgw.v1 import eventgw_pb2_grpc as pb_grpc
from eventgw.backup.factory import open_backup_store
from eventgw.config.dynamic import DynamicConfigWatcher
from eventgw.core.envelope import LANES, Lane, Priority
from eventgw.grpc_server import GrpcServer
from eventgw.kafka.client_config import producer_config
from eventgw.kafka.producer import BatchProducer
from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer
from eventgw.publisher.grpc_api import GRPC_OPTIONS, SERVICE_NAME, PublisherServicer
from eventgw.publisher.prep import PrepPublisher
from eventgw.publisher.router import ClusterName, Router

if TYPE_CHECKING:
    from eventgw.backup.store import BackupStore
    from eventgw.config.settings import EventGwSettings, KafkaClusterSettings

logger = logging.getLogger(__name__)


class PublisherParts:
    """The producers, store and watcher a `PrepPublisher` runs on; opened and closed together.

    Start-up order: producers and the backup store first (downstream), then the caller
    serves. Close order: stop serving (caller), then flush producers, then close the store.
    """

    def __init__(self, settings: EventGwSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.producers: dict[tuple[ClusterName, Lane], BatchProducer] = {}
        self.failed_writes: BatchProducer | None = None
        self.backup: BackupStore | None = None
        self.watcher = DynamicConfigWatcher(
            settings.publisher.dynamic_config_path,
            metrics,
            index_keys=(settings.orchestrator.rollout_orchestrator_config_key,),
        )

    async def open(self, default_priority: Priority = Priority.P20) -> PrepPublisher:
        """Create every producer and the backup store; return the publisher that uses them."""
        s = self.settings
        rollout = s.publisher.rollout_producers_enabled and s.kafka.rollout is not None
        clusters: tuple[tuple[ClusterName, KafkaClusterSettings | None], ...] = (
            ("primary", s.kafka.primary),
            ("rollout", s.kafka.rollout),
        )
        for cluster_name, cluster in clusters:
            if cluster is None or (cluster_name == "rollout" and not rollout):
                continue
            for lane in LANES:
                name = f"{cluster_name}-{lane}"
                p = BatchProducer(
                    name, producer_config(cluster, s.publisher.lanes[lane], f"eventgw-{name}")
                )
                p.start()
                self.producers[cluster_name, lane] = p
        in_flight = self.metrics.gauge(
            "eventgw_publisher_in_flight_events", "produced, not yet confirmed", ["producer"]
        )
        for producer in self.producers.values():
            in_flight.labels(producer.name).set_function(producer.in_flight)
        fw_cluster = s.kafka.fallback or s.kafka.primary
        fw_name = "fallback" if s.kafka.fallback else "primary"
        self.failed_writes = BatchProducer(
            "failed-writes",
            producer_config(
                fw_cluster, s.publisher.lanes["failed_writes"], "eventgw-failed-writes"
            ),
        )
        self.failed_writes.start()
        self.backup = await open_backup_store(s.backup)
        logger.info(
            "publisher.opened producers=%d rollout=%s failed_writes_cluster=%s backup=%s",
            len(self.producers),
            rollout,
            fw_name,
            self.backup.name,
        )
        return PrepPublisher(
            producers=self.producers,
            failed_writes=self.failed_writes,
            failed_writes_topic=s.topics.failed_writes,
            failed_writes_cluster=fw_name,
            backup=self.backup,
            router=Router(s.topics, rollout),
            config=self.watcher,
            metrics=self.metrics,
            default_priority=default_priority,
        )

    async def close(self) -> None:
        """Flush every producer (bounded by ``shutdown_timeout_s``), then close the store."""
        timeout = self.settings.publisher.shutdown_timeout_s
        producers = list(self.producers.values())
        if self.failed_writes is not None:
            producers.append(self.failed_writes)
        await asyncio.gather(*(p.close(timeout) for p in producers))
        self.producers.clear()
        self.failed_writes = None
        if self.backup is not None:
            await self.backup.close()
            self.backup = None


class PublisherService:
    """Runs the prep publisher as a process: gRPC on ``grpc_port``, status HTTP servers.

    Drain: on stop the gRPC server stops accepting calls and gives in-flight calls up to
    ``shutdown_timeout_s`` to finish (each finishes only when its events are durable); then
    the producers are flushed and the store closed.
    """

    name = "publisher"

    def __init__(self, settings: EventGwSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.parts = PublisherParts(settings, self.metrics)
        self.grpc_port: int | None = None
        self._ready = False
        # Resolved here: a missing token stops the start (ConfigError naming the field).
        self._token = settings.internal_auth.token_for("publisher")

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """See `eventgw.core.lifecycle.Service`."""
        s = self.settings.publisher
        liveness = StatusServer(s.grpc_host, s.liveness_port, self.metrics, lambda: self._ready)
        status = StatusServer(s.grpc_host, s.metrics_port, self.metrics, lambda: self._ready)
        publisher = await self.parts.open()
        server = GrpcServer(
            [SERVICE_NAME],
            options=GRPC_OPTIONS,
            auth=("publisher", self._token),
            metrics=self.metrics,
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        pb_grpc.add_PrepPublisherServicer_to_server(  # type: ignore[no-untyped-call]  # generated gRPC code is untyped
            PublisherServicer(publisher, s.max_events_per_request), server.server
        )
        try:
            self.grpc_port = server.add_port(s.grpc_host, s.grpc_port)
            await server.start()
            await liveness.start()
            await status.start()
            async with asyncio.TaskGroup() as tg:
                watcher_ready = asyncio.Event()
                tg.create_task(self.parts.watcher.run(watcher_ready, stop))
                await watcher_ready.wait()
                self._ready = True
                server.set_serving()
                ready.set()
                logger.info(
                    "publisher.serving grpc=%s:%d liveness=%d metrics=%d",
                    s.grpc_host,
                    self.grpc_port,
                    liveness.port,
                    status.port,
                )
                await stop.wait()
                self._ready = False
                server.set_not_serving()
                logger.info("publisher.draining grace_s=%.1f", s.shutdown_timeout_s)
                await server.stop(s.shutdown_timeout_s)
        finally:
            await server.stop(0)  # no-op when the drain above already stopped it
            await self.parts.close()
            await asyncio.gather(liveness.close(), status.close())
