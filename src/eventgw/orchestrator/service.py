"""Composition root of the orchestrator: consumers, dispatcher, gRPC, timers, commits.

Loops (one TaskGroup):
- lane fetch: the consumer group over p30/p20/p10/offload (static membership
  ``orchestrator-<index>``) → dispatcher; lanes over their memory share are paused;
- retry fetch (``enable_retry_consumer``): the retry topics; a record not yet due pauses its
  partition and seeks back to it until due;
- results: the response topic partition ``index`` → dispatcher;
- timer: lease expiry, due delays, due retry partitions;
- commit: every ``commit_interval_s``, offsets up to the first unfinished task.

Drain on stop: GetBatch stops serving; leased tasks get up to ``shutdown_timeout_s`` for
their results; retry/DLQ writes finish; a final commit; then the consumers leave the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

import grpc

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.settings import LaneTuning
from eventgw.core.errors import ConfigError
from eventgw.core.lifecycle import sleep_or_stop
from eventgw.kafka.admin import list_topics, partition_count
from eventgw.kafka.client_config import consumer_config, producer_config
from eventgw.kafka.consumer import ConsumerError, PartitionReader
from eventgw.kafka.group_consumer import GroupConsumer
from eventgw.kafka.producer import BatchProducer
from eventgw.metrics.backend import Metrics
from eventgw.metrics.http import StatusServer
from eventgw.orchestrator.batch_api import GRPC_OPTIONS, OrchestratorServicer, add_to_server
from eventgw.orchestrator.dispatcher import Dispatcher
from eventgw.orchestrator.flow_control import FlowControlEmitter
from eventgw.orchestrator.priority_buffer import TASK_OVERHEAD_BYTES

if TYPE_CHECKING:
    from eventgw.config.settings import EventGwSettings
    from eventgw.kafka.group_consumer import TopicPartition

logger = logging.getLogger(__name__)

_LANE_TOPIC_KEYS = ("p30", "p20", "p10", "offload")


class OrchestratorService:
    """Runs one orchestrator replica. See the module docstring."""

    name = "orchestrator"

    def __init__(self, settings: EventGwSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.grpc_port: int | None = None
        self.status_port: int | None = None
        self.dispatcher: Dispatcher | None = None
        self._ready = False
        self._lane_paused: set[str] = set()
        self._held: dict[TopicPartition, int] = {}  # retry partitions held until wall ms
        self._retry_mem_paused = False
        self._resync_pauses = False  # lane partitions were assigned: re-apply pauses
        self._resync_retry_pauses = False  # the same for the retry consumer

    def _check_topology(self) -> None:
        s = self.settings
        o = s.orchestrator
        bootstrap = s.kafka.primary.bootstrap_servers
        existing = list_topics(s.kafka.primary)
        needed = [s.topics.lane_topic(k) for k in _LANE_TOPIC_KEYS]
        needed += [s.topics.response, s.topics.flow_control]
        missing = [t for t in needed if t not in existing]
        if missing:
            raise ConfigError(
                "topics", f"missing on {bootstrap}: {missing} (eventgw topics create)"
            )
        partitions = partition_count(s.kafka.primary, s.topics.response)
        if partitions < o.number_of_replicas:
            raise ConfigError(
                "orchestrator.number_of_replicas",
                f"{o.number_of_replicas} replicas but {s.topics.response} has only "
                f"{partitions} partitions (one per replica index is needed)",
            )

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """See `eventgw.core.lifecycle.Service`."""
        s = self.settings
        o = s.orchestrator
        await asyncio.to_thread(self._check_topology)
        tuning = LaneTuning(linger_ms=2, batch_size=256 << 10, delivery_timeout_ms=30_000)
        producer = BatchProducer(
            f"orchestrator-{o.index}",
            producer_config(s.kafka.primary, tuning, f"eventgw-orchestrator-{o.index}"),
        )
        producer.start()
        d = Dispatcher(o, s.topics, producer)
        self.dispatcher = d
        lanes = GroupConsumer(
            consumer_config(
                s.kafka.primary,
                o.group_id,
                f"eventgw-orchestrator-{o.index}",
                group_instance_id=f"orchestrator-{o.index}",
                low_latency=True,
            ),
            [s.topics.lane_topic(k) for k in _LANE_TOPIC_KEYS],
            self._on_assign,
            self._on_revoke,
        )
        retry: GroupConsumer | None = None
        if o.enable_retry_consumer:
            retry = GroupConsumer(
                consumer_config(
                    s.kafka.primary,
                    f"{o.group_id}-retry",
                    f"eventgw-orchestrator-retry-{o.index}",
                    group_instance_id=f"orchestrator-retry-{o.index}",
                ),
                list(d.retry_topics),
                self._on_retry_assign,
                self._on_retry_revoke,
            )
        results = PartitionReader(
            consumer_config(s.kafka.primary, f"{o.group_id}-results-{o.index}", "eventgw-results"),
            s.topics.response,
            o.index,
        )
        server = grpc.aio.server(options=GRPC_OPTIONS)
        add_to_server(OrchestratorServicer(d, o.index, o.max_wait_ms), server)
        status = StatusServer(
            o.status_host,
            o.metrics_port,
            self.metrics.render,
            lambda: self._ready,
            extra={"/stats": self._stats_json},
        )
        try:
            await lanes.start()
            if retry is not None:
                await retry.start()
            await results.start()
            self.grpc_port = server.add_insecure_port(f"{o.grpc_host}:{o.grpc_port}")
            await server.start()
            await status.start()
            self.status_port = status.port
            self._ready = True
            ready.set()
            logger.info(
                "orchestrator.serving index=%d/%d grpc=%s:%d status=%d retry_consumer=%s",
                o.index,
                o.number_of_replicas,
                o.grpc_host,
                self.grpc_port,
                status.port,
                retry is not None,
            )
            fetch_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._fetch_loop(lanes, d, fetch_stop))
                if retry is not None:
                    tg.create_task(self._retry_loop(retry, d, fetch_stop))
                tg.create_task(self._results_loop(results, d, fetch_stop))
                tg.create_task(self._timer_loop(d, retry, fetch_stop))
                tg.create_task(self._commit_loop(lanes, retry, d, fetch_stop))
                emitter = FlowControlEmitter(
                    producer,
                    s.topics.flow_control,
                    o.index,
                    d.buffer.statistics,
                    o.flow_control_interval_s,
                )
                tg.create_task(emitter.run(fetch_stop))
                await stop.wait()
                self._ready = False
                await self._drain(d)
                fetch_stop.set()
            await self._commit(lanes, retry, d)
        finally:
            self._ready = False
            await server.stop(1)
            await lanes.close()
            if retry is not None:
                await retry.close()
            await results.close()
            await producer.close(10)
            await status.close()

    async def _drain(self, d: Dispatcher) -> None:
        """Stop serving; wait (bounded) for results of leased tasks and retry/DLQ writes."""
        o = self.settings.orchestrator
        d.stop_serving()
        logger.info("orchestrator.draining leased=%d", d.leased())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(o.shutdown_timeout_s):
                # Results arrive from two sources (gRPC and the response topic): poll the count.
                while d.leased():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                await d.wait_writes()

    # -- rebalance hooks (run on the loop, called from the consumer thread) ---------------

    async def _on_assign(self, partitions: list[TopicPartition]) -> None:
        # Newly assigned partitions fetch unpaused: re-apply every lane's state next fetch.
        self._resync_pauses = True

    async def _on_retry_assign(self, partitions: list[TopicPartition]) -> None:
        # The same for the retry consumer: a new partition must not read past the retry share.
        self._resync_retry_pauses = True

    async def _on_revoke(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.dispatcher is None:  # hooks run only after run() built it
            return {}
        return self.dispatcher.revoke(partitions)

    async def _on_retry_revoke(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        for tp in partitions:
            self._held.pop(tp, None)
        return await self._on_revoke(partitions)

    # -- loops ---------------------------------------------------------------------------

    async def _fetch_loop(self, lanes: GroupConsumer, d: Dispatcher, stop: asyncio.Event) -> None:
        o = self.settings.orchestrator
        topic_of_lane = {k: self.settings.topics.lane_topic(k) for k in _LANE_TOPIC_KEYS}
        pause_at = {
            lane: o.lane_shares[lane] * o.buffer_budget_bytes
            for lane in _LANE_TOPIC_KEYS
            if lane in o.lane_shares
        }
        task_bytes = 1024.0  # running estimate of one buffered task's accounted bytes
        while not stop.is_set():
            # One poll may carry the buffer only about up to the lowest threshold of a lane
            # still read. A full poll (fetch_max_records) of a flooding P10 lane, taken when
            # P10 resumes, went past P30's share too and paused P30 until that P10 drained:
            # P30 then missed its SLO behind P10 (SYSTEM.md 3.4, priority isolation).
            open_at = [t for lane, t in pause_at.items() if lane not in self._lane_paused]
            headroom = min(open_at, default=0.0) - d.buffer.bytes
            max_records = max(1, min(o.fetch_max_records, int(headroom / task_bytes) + 1))
            records = await lanes.poll_batch(max_records, 0.1)
            if records:
                size = sum(len(r.value) for r in records) / len(records) + TASK_OVERHEAD_BYTES
                task_bytes = max(size, 0.8 * task_bytes + 0.2 * size)
                d.add_records(records)
            # Memory thresholds: pause a lane's partitions at its share of the budget.
            resync, self._resync_pauses = self._resync_pauses, False
            for lane, topic in topic_of_lane.items():
                should = d.buffer.should_pause(lane)
                if resync or should != (lane in self._lane_paused):
                    tps = [tp for tp in lanes.assigned if tp[0] == topic]
                    if should:
                        await lanes.pause(tps)
                        self._lane_paused.add(lane)
                        logger.info(
                            "orchestrator.lane_paused lane=%s bytes=%d", lane, d.buffer.bytes
                        )
                    else:
                        await lanes.resume(tps)
                        self._lane_paused.discard(lane)
                        logger.info(
                            "orchestrator.lane_resumed lane=%s bytes=%d", lane, d.buffer.bytes
                        )

    async def _retry_loop(self, retry: GroupConsumer, d: Dispatcher, stop: asyncio.Event) -> None:
        o = self.settings.orchestrator
        while not stop.is_set():
            records = await retry.poll_batch(o.fetch_max_records, 0.2)
            due_now = []
            now = int(time.time() * 1000)
            for r in records:
                tp = (r.topic, r.partition)
                if tp in self._held:
                    continue  # read past a held head: it is read again after the seek
                due = d.retry_due_ms(r)
                if due > now:
                    self._held[tp] = due
                    await retry.pause([tp])
                    await retry.seek(r.topic, r.partition, r.offset)
                    continue
                due_now.append(r)
            if due_now:
                d.add_records(due_now)
            should = d.buffer.should_pause("retry")
            resync, self._resync_retry_pauses = self._resync_retry_pauses, False
            if resync or should != self._retry_mem_paused:
                self._retry_mem_paused = should
                free = [tp for tp in retry.assigned if tp not in self._held]
                await (retry.pause(free) if should else retry.resume(free))

    async def _results_loop(
        self, results: PartitionReader, d: Dispatcher, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            for record in await results.poll_batch(1000, 0.1):
                try:
                    batch = pb.TaskResults.FromString(record.value)
                except Exception:  # noqa: BLE001  (a foreign record must not stop the loop)
                    logger.warning("orchestrator.bad_result offset=%d", record.offset)
                    continue
                d.apply_results(batch.results)

    async def _timer_loop(
        self, d: Dispatcher, retry: GroupConsumer | None, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            next_at = d.tick()
            if retry is not None and self._held:
                now = int(time.time() * 1000)
                due = [tp for tp, at in self._held.items() if at <= now]
                for tp in due:
                    del self._held[tp]
                if due and not self._retry_mem_paused:
                    await retry.resume(due)
            wait = 0.2 if next_at is None else max(0.005, min(0.2, next_at - time.monotonic()))
            await sleep_or_stop(stop, wait)

    async def _commit_loop(
        self,
        lanes: GroupConsumer,
        retry: GroupConsumer | None,
        d: Dispatcher,
        stop: asyncio.Event,
    ) -> None:
        interval = self.settings.orchestrator.commit_interval_s
        while not stop.is_set():
            await sleep_or_stop(stop, interval)
            await self._commit(lanes, retry, d)

    async def _commit(
        self, lanes: GroupConsumer, retry: GroupConsumer | None, d: Dispatcher
    ) -> None:
        pending = d.committable()
        if not pending:
            return
        retry_topics = set(d.retry_topics)
        for consumer, offsets in (
            (lanes, {tp: o for tp, o in pending.items() if tp[0] not in retry_topics}),
            (retry, {tp: o for tp, o in pending.items() if tp[0] in retry_topics}),
        ):
            if consumer is None or not offsets:
                continue
            owned = {tp: o for tp, o in offsets.items() if tp in consumer.assigned}
            try:
                await consumer.commit(owned)
                d.mark_committed(owned)
            except ConsumerError as exc:
                logger.warning("orchestrator.commit_failed error=%s", exc)

    def _stats_json(self) -> bytes:
        if self.dispatcher is None:
            return b"{}"
        st = self.dispatcher.stats()
        return json.dumps(
            {
                "index": st.index,
                "buffer_bytes": st.buffer_bytes,
                "buffer_budget_bytes": st.buffer_budget_bytes,
                "lanes": [
                    {
                        "lane": c.lane,
                        "buffered": c.buffered,
                        "in_flight": c.in_flight,
                        "processed": c.processed,
                        "retried": c.retried,
                        "dead_lettered": c.dead_lettered,
                        "oldest_age_s": round(c.oldest_age_s, 3),
                        "slo_s": c.slo_s,
                        "paused": c.paused,
                    }
                    for c in st.lanes
                ],
            }
        ).encode()
