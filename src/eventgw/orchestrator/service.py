"""Composition root of the orchestrator: consumers, dispatcher, ``Work`` streams, timers.

It builds the parts and runs them in one task group (docs/architecture.md, "Read path"):

- `LaneFetcher` (lane consumer group, static membership ``orchestrator-<index>``),
  `RetryFetcher` (``enable_retry_consumer``) and `ResultsReader` (response partition
  ``index``) feed the `Dispatcher`;
- the gRPC server carries each worker's ``Work`` stream (`OrchestratorServicer`);
- the `RetryWriter` writes retry and DLQ records, the `Committer` commits finished offsets,
  the `FlowControlEmitter` publishes INCREASE/DECREASE, a timer expires leases and delays.

Drain on stop: nothing more is dispatched; leased tasks get up to ``shutdown_timeout_s`` for
their results and retry/DLQ writes to settle; a final commit; then the streams close and
the consumers leave the group.

Fleets (`eventgw.config.fleets`, docs/operations.md, "Fleets"): the replica serves the Kafka
cluster of its fleet — lanes, retry topics, response partition ``index``, retry and DLQ
writes all there; flow-control signals always go to the primary cluster, which ingest reads.
The fleet comes from the dynamic config (``orchestrator.dynamic_config_path``); when a reload
moves this replica to the other fleet, it drains exactly as on stop and then serves the
other cluster on the same ports (workers reconnect and are told the new fleet). A reload
that would break a fleet is refused (ERROR ``orchestrator.fleet_refused``) and the replica
stays where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Final

from google.protobuf.json_format import MessageToDict

from eventgw.config.dynamic import DynamicConfigWatcher
from eventgw.config.fleets import assign_fleet
from eventgw.config.settings import LaneTuning
from eventgw.core.envelope import LANES, Lane
from eventgw.core.errors import ConfigError
from eventgw.core.lifecycle import sleep_or_stop, wait_any
from eventgw.grpc_server import GrpcServer
from eventgw.kafka.admin import list_topics, partition_count
from eventgw.kafka.client_config import consumer_config, producer_config
from eventgw.kafka.consumer import PartitionReader
from eventgw.kafka.group_consumer import GroupConsumer
from eventgw.kafka.producer import BatchProducer
from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer
from eventgw.orchestrator.collector import OrchestratorCollector
from eventgw.orchestrator.committer import Committer
from eventgw.orchestrator.dispatcher import RETRY_DELAYS_S, Dispatcher
from eventgw.orchestrator.fetcher import LaneFetcher, ResultsReader, RetryFetcher
from eventgw.orchestrator.flow_control import FlowControlEmitter
from eventgw.orchestrator.partition_reset import forget_stale_partitions
from eventgw.orchestrator.retry_writer import RetryWriter
from eventgw.orchestrator.work_api import (
    GRPC_OPTIONS,
    SERVICE_NAME,
    OrchestratorServicer,
    add_to_server,
)

if TYPE_CHECKING:
    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
    from eventgw.config.fleets import FleetAssignment
    from eventgw.config.settings import EventGwSettings
    from eventgw.kafka.group_consumer import Committed, TopicPartition

logger = logging.getLogger(__name__)

URGENT_LANES: Final[tuple[Lane, ...]] = ("p30",)
"""Lanes read by a consumer of their own (a second member of the lane group): their records
never wait in librdkafka's fetch queue behind another lane's read-ahead
(docs/priorities-and-backpressure.md, "Reading by priority")."""
BULK_LANES: Final[tuple[Lane, ...]] = tuple(k for k in LANES if k not in URGENT_LANES)
_STREAM_CLOSE_GRACE_S = 1.0
_FLEET_CHECK_S = 0.5  # how often a reloaded dynamic config is compared with the fleet
_TUNING = LaneTuning(linger_ms=2, batch_size=256 << 10, delivery_timeout_ms=30_000)


class OrchestratorService:
    """Runs one orchestrator replica. See the module docstring."""

    name = "orchestrator"

    def __init__(
        self, settings: EventGwSettings, metrics: Metrics | None = None, *, time_scale: float = 1.0
    ) -> None:
        """Read the dynamic config and place this replica in its fleet.

        Args:
            settings: Every service's settings; this replica's are ``settings.orchestrator``.
            metrics: Where metrics go (a fresh registry if None).
            time_scale: For tests only, not a setting: retry delays, the retry topics' hold
                and leases are multiplied by it, in (0, 1], so that the real retry ladder
                runs in seconds.

        Raises:
            ValueError: ``time_scale`` outside (0, 1].
            ConfigError: the dynamic config file is invalid, or places the replica in a way
                that breaks a fleet (`eventgw.config.fleets.fleet_members`).
        """
        if not 0 < time_scale <= 1:
            raise ValueError(f"time_scale must be in (0, 1], got {time_scale}")
        self._time_scale = time_scale
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.grpc_port: int | None = None
        self.status_port: int | None = None
        self.dispatcher: Dispatcher | None = None
        self._lane_fetchers: list[LaneFetcher] = []
        self._retry_fetcher: RetryFetcher | None = None
        self._ready = False
        # Resolved here: a missing token stops the start (ConfigError naming the field).
        self._token = settings.internal_auth.token_for("orchestrator")
        o = settings.orchestrator
        self._watcher = DynamicConfigWatcher(
            o.dynamic_config_path, self.metrics, index_keys=(o.rollout_orchestrator_config_key,)
        )
        self.fleet: FleetAssignment = assign_fleet(settings, self._watcher.current)
        self.fleet_moves = 0  # times this replica drained and moved to the other fleet
        self._move_to: FleetAssignment | None = None
        self._move_started = 0.0  # monotonic time the current move began
        self._moving = asyncio.Event()

    def _check_topology(self, fleet: FleetAssignment) -> None:
        s = self.settings
        o = s.orchestrator
        bootstrap = fleet.cluster.bootstrap_servers
        existing = list_topics(fleet.cluster)
        needed = [s.topics.lane_topic(k) for k in LANES]
        # The DLQ and the parking lot too: a dead-letter write to a missing topic would fail,
        # and its task would be served again and again.
        needed += [s.topics.response, s.topics.dlq, s.topics.parking_lot]
        if fleet.name == "primary":
            needed.append(s.topics.flow_control)
        missing = [t for t in needed if t not in existing]
        if missing:
            raise ConfigError(
                "topics",
                f"missing on {bootstrap} ({fleet.name} cluster): {missing} (eventgw topics create)",
            )
        if fleet.name != "primary" and s.topics.flow_control not in list_topics(s.kafka.primary):
            raise ConfigError(
                "topics",
                f"missing on {s.kafka.primary.bootstrap_servers} (primary cluster, where "
                f"every fleet sends flow control): {s.topics.flow_control}",
            )
        # Response partition = replica index, on each fleet's cluster: checked per fleet.
        partitions = partition_count(fleet.cluster, s.topics.response)
        if partitions < o.number_of_replicas:
            raise ConfigError(
                "orchestrator.number_of_replicas",
                f"{o.number_of_replicas} replicas but {s.topics.response} on {bootstrap} "
                f"({fleet.name} cluster) has only {partitions} partitions (one per replica "
                "index is needed)",
            )

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """See `eventgw.core.lifecycle.Service`; serves its fleet, moving when it changes."""
        o = self.settings.orchestrator
        await asyncio.to_thread(self._check_topology, self.fleet)
        self._warn_if_unserved(self.fleet)
        status = StatusServer(
            o.status_host,
            o.metrics_port,
            self.metrics,
            lambda: self._ready,
            extra={"/stats": self._stats_json},
        )
        await status.start()
        self.status_port = status.port
        try:
            async with asyncio.TaskGroup() as tg:
                watcher_ready = asyncio.Event()
                tg.create_task(self._watcher.run(watcher_ready, stop))
                tg.create_task(self._follow_fleet(stop))
                while True:
                    await self._serve(self.fleet, ready, stop)
                    if stop.is_set() or self._move_to is None:
                        break
                    previous, self.fleet, self._move_to = self.fleet, self._move_to, None
                    self._moving.clear()
                    self.fleet_moves += 1
                    logger.info(
                        "orchestrator.fleet_moved index=%d from=%s to=%s drained_s=%.1f",
                        o.index,
                        previous.name,
                        self.fleet.name,
                        time.monotonic() - self._move_started,
                    )
        finally:
            await status.close()

    async def _follow_fleet(self, stop: asyncio.Event) -> None:
        """Compare each reloaded dynamic config with the fleet; ask ``_serve`` to move."""
        o = self.settings.orchestrator
        seen = self._watcher.version
        while not stop.is_set():
            await sleep_or_stop(stop, _FLEET_CHECK_S)
            if self._watcher.version == seen or self._moving.is_set():
                continue
            seen = self._watcher.version
            try:
                wanted = assign_fleet(self.settings, self._watcher.current)
                if wanted.name != self.fleet.name:
                    # Refuse a move to a cluster this replica could not serve, before draining.
                    await asyncio.to_thread(self._check_topology, wanted)
            except ConfigError as exc:
                logger.error(
                    "orchestrator.fleet_refused index=%d fleet=%s error=%s",
                    o.index,
                    self.fleet.name,
                    exc,
                )
                continue
            self._warn_if_unserved(wanted)
            if wanted.name == self.fleet.name:
                self.fleet = wanted  # the same cluster; only the other members changed
                continue
            logger.info(
                "orchestrator.fleet_moving index=%d from=%s to=%s (draining first)",
                o.index,
                self.fleet.name,
                wanted.name,
            )
            self._move_to = wanted
            self._move_started = time.monotonic()
            self._moving.set()

    def _warn_if_unserved(self, fleet: FleetAssignment) -> None:
        share = self._watcher.current.event_gateway_cluster_rollout
        rollout = fleet.members if fleet.name == "rollout" else fleet.other_members
        if share > 0 and not rollout and self.settings.publisher.rollout_producers_enabled:
            logger.warning(
                "orchestrator.rollout_fleet_empty share=%g key=%s: events routed to the "
                "rollout cluster wait there until a replica is listed",
                share,
                self.settings.orchestrator.rollout_orchestrator_config_key,
            )

    async def _serve(
        self, fleet: FleetAssignment, ready: asyncio.Event, stop: asyncio.Event
    ) -> None:
        """Serve ``fleet``'s cluster until ``stop`` or a move; drain; close its clients."""
        s = self.settings
        o = s.orchestrator
        cluster = fleet.cluster
        producer = BatchProducer(
            f"orchestrator-{o.index}",
            producer_config(cluster, _TUNING, f"eventgw-orchestrator-{o.index}"),
        )
        producer.start()
        # Flow control goes to the primary cluster, whose topic every ingest reads.
        flow_producer = producer
        if fleet.name != "primary":
            flow_producer = BatchProducer(
                f"orchestrator-flow-control-{o.index}",
                producer_config(s.kafka.primary, _TUNING, f"eventgw-orchestrator-{o.index}"),
            )
            flow_producer.start()
        writer = RetryWriter(producer, self.metrics)
        d = Dispatcher(
            o, s.topics, writer, self.metrics, fleet=fleet.name, time_scale=self._time_scale
        )
        self.dispatcher = d
        # Two members of the lane group per replica: one for the urgent lanes, one for the
        # rest; each its own librdkafka fetch queue (docs/priorities-and-backpressure.md,
        # "Reading by priority").
        lane_readers: list[GroupConsumer] = []
        self._lane_fetchers = []
        for lanes_read, member in ((URGENT_LANES, "-urgent"), (BULK_LANES, "")):
            topic_of_lane = {k: s.topics.lane_topic(k) for k in lanes_read}
            consumer = GroupConsumer(
                consumer_config(
                    cluster,
                    o.group_id,
                    f"eventgw-orchestrator{member}-{o.index}",
                    group_instance_id=f"orchestrator-{o.index}{member}",
                    low_latency=True,
                ),
                list(topic_of_lane.values()),
                self._on_assign,
                self._on_revoke,
            )
            lane_readers.append(consumer)
            self._lane_fetchers.append(
                LaneFetcher(
                    consumer,
                    d,
                    topic_of_lane,
                    o.lane_shares,
                    o.buffer_budget_bytes,
                    o.fetch_max_records,
                    o.lane_ready_s,
                    o.lane_min_ready,
                )
            )
        retry: GroupConsumer | None = None
        if o.enable_retry_consumer:
            retry = GroupConsumer(
                consumer_config(
                    cluster,
                    f"{o.group_id}-retry",
                    f"eventgw-orchestrator-retry-{o.index}",
                    group_instance_id=f"orchestrator-retry-{o.index}",
                ),
                list(d.retry_topics),
                self._on_retry_assign,
                self._on_retry_revoke,
            )
            self._retry_fetcher = RetryFetcher(
                retry,
                d,
                o.fetch_max_records,
                max_hold_ms=int(max(RETRY_DELAYS_S) * self._time_scale * 1000),
                metrics=self.metrics,
            )
        results = PartitionReader(
            consumer_config(cluster, f"{o.group_id}-results-{o.index}", "eventgw-results"),
            s.topics.response,
            o.index,
        )
        group_consumers = [*lane_readers, *([retry] if retry is not None else [])]
        committer = Committer(d, group_consumers, o.commit_interval_s)
        self.metrics.register(OrchestratorCollector(d, writer, committer))
        server = GrpcServer(
            [SERVICE_NAME],
            options=GRPC_OPTIONS,
            auth=("orchestrator", self._token),
            metrics=self.metrics,
        )
        add_to_server(OrchestratorServicer(d), server.server)
        try:
            # Together: members that join at once share one rebalance.
            await asyncio.gather(*(consumer.start() for consumer in group_consumers))
            await results.start()
            # After a move, the same port again: the workers' addresses do not change.
            port = self.grpc_port if self.grpc_port is not None else o.grpc_port
            self.grpc_port = server.add_port(o.grpc_host, port)
            await server.start()
            self._ready = True
            server.set_serving()
            ready.set()
            logger.info(
                "orchestrator.serving index=%d/%d fleet=%s cluster=%s fleet_members=%s "
                "grpc=%s:%d status=%d retry_consumer=%s",
                o.index,
                o.number_of_replicas,
                fleet.name,
                cluster.bootstrap_servers,
                list(fleet.members),
                o.grpc_host,
                self.grpc_port,
                self.status_port,
                retry is not None,
            )
            fetch_stop = asyncio.Event()
            writer_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                for fetcher in self._lane_fetchers:
                    tg.create_task(fetcher.run(fetch_stop))
                if self._retry_fetcher is not None:
                    tg.create_task(self._retry_fetcher.run(fetch_stop))
                tg.create_task(ResultsReader(results, d, self.metrics).run(fetch_stop))
                tg.create_task(self._timer_loop(d, fetch_stop))
                tg.create_task(committer.run())
                writing = tg.create_task(writer.run(writer_stop))
                emitter = FlowControlEmitter(
                    flow_producer,
                    s.topics.flow_control,
                    o.index,
                    d.buffer.pressure_statistics,
                    o.flow_control_interval_s,
                    self.metrics,
                )
                tg.create_task(emitter.run(fetch_stop))
                await wait_any(stop, self._moving)
                self._ready = False
                server.set_not_serving()
                await self._drain(d, writer)
                fetch_stop.set()
                committer.close()  # the drain commits once more, below
                writer_stop.set()
                if writer.pending():  # past the drain deadline: terminate, do not hang
                    writing.cancel()
            await committer.commit()
        finally:
            self._ready = False
            await server.stop(_STREAM_CLOSE_GRACE_S)
            # Each close is bounded (`GroupConsumer.close`); together, not one after another.
            await asyncio.gather(*(consumer.close() for consumer in group_consumers))
            await results.close()
            await producer.close(10)
            if flow_producer is not producer:
                await flow_producer.close(10)

    async def _drain(self, d: Dispatcher, writer: RetryWriter) -> None:
        """Stop dispatching; wait (bounded) for results of leased tasks and retry/DLQ writes."""
        o = self.settings.orchestrator
        d.stop_serving()
        logger.info("orchestrator.draining leased=%d", d.leased())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(o.shutdown_timeout_s):
                # Results arrive from two sources (the streams and the response topic), and
                # retry/DLQ writes settle in the writer: poll the counts.
                while d.leased() or writer.pending():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)

    # -- rebalance hooks (run on the loop, called from the consumer thread) ---------------

    async def _on_assign(self, partitions: list[TopicPartition], committed: Committed) -> None:
        self._preset(partitions, committed)
        for fetcher in self._lane_fetchers:
            fetcher.on_assign()

    async def _on_retry_assign(
        self, partitions: list[TopicPartition], committed: Committed
    ) -> None:
        self._preset(partitions, committed)
        if self._retry_fetcher is not None:
            self._retry_fetcher.on_assign()

    def _preset(self, partitions: list[TopicPartition], committed: Committed) -> None:
        d = self.dispatcher
        if d is None:  # hooks run only after run() built it
            return
        forget_stale_partitions(d, partitions)  # before the commits' finished runs are read
        for (topic, partition), (offset, metadata) in committed.items():
            d.preset_finished(topic, partition, offset, metadata)

    async def _on_revoke(self, partitions: list[TopicPartition]) -> Committed:
        if self.dispatcher is None:  # hooks run only after run() built it
            return {}
        return self.dispatcher.revoke_partitions(partitions)

    async def _on_retry_revoke(self, partitions: list[TopicPartition]) -> Committed:
        if self._retry_fetcher is not None:
            self._retry_fetcher.on_revoke(partitions)
        return await self._on_revoke(partitions)

    async def _timer_loop(self, d: Dispatcher, stop: asyncio.Event) -> None:
        while not stop.is_set():
            next_at = d.tick()
            if self._retry_fetcher is not None:
                await self._retry_fetcher.resume_due()
            wait = 0.2 if next_at is None else max(0.005, min(0.2, next_at - time.monotonic()))
            await sleep_or_stop(stop, wait)

    def _stats_json(self) -> bytes:
        if self.dispatcher is None:
            return b"{}"
        return stats_json(self.dispatcher.stats(), self.fleet, self.fleet_moves)


def stats_json(stats: pb.StatsResponse, fleet: FleetAssignment, fleet_moves: int) -> bytes:
    """``/stats``: the gRPC ``Stats`` answer in protobuf's JSON mapping, plus the fleet.

    Proto field names, every field (a zero is a count, not an absence), 64-bit counts as JSON
    numbers (protobuf quotes them by default); then ``fleet``, ``cluster`` (its bootstrap
    servers), ``fleet_members`` and ``fleet_moves``, which the message does not carry.
    """
    doc = MessageToDict(
        stats,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )
    doc.update(
        fleet=fleet.name,
        cluster=fleet.cluster.bootstrap_servers,
        fleet_members=list(fleet.members),
        fleet_moves=fleet_moves,
    )
    return json.dumps(doc).encode()
