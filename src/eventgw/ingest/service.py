"""Composition root of ingest: pipeline, HTTP (uvicorn) and gRPC servers."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import msgspec
import uvicorn

from eventgw.core.clock import Clock, SystemClock
from eventgw.grpc_auth import bearer_metadata
from eventgw.grpc_options import server_options
from eventgw.grpc_server import GrpcServer
from eventgw.http_server import HttpServer, bind_tcp
from eventgw.ingest.admin_app import AdminHttpApp
from eventgw.ingest.admission import AdmissionControl
from eventgw.ingest.door import Door, door_status
from eventgw.ingest.grants import KeyRing
from eventgw.ingest.grpc_api import SERVICE_NAME, IngestServicer, add_to_server, server_credentials
from eventgw.ingest.http_app import IngestHttpApp
from eventgw.ingest.http_protocol import HttpLimits, bounded_http_protocol
from eventgw.ingest.pipeline import IngestPipeline, PreparedPublishFn, PublishFn
from eventgw.ingest.publisher_client import PublisherClient
from eventgw.ingest.scheduler import Scheduler
from eventgw.ingest.status_doc import AdminStatusDocument, StatusDocument
from eventgw.ingest.tls import load_server_tls
from eventgw.metrics.backend import Metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventgw.config.settings import EventGwSettings, IngestSettings
    from eventgw.publisher.service import PublisherParts

logger = logging.getLogger(__name__)


def _http_config(
    app: object,
    s: IngestSettings,
    count_refused: Callable[[int], None],
    *,
    shutdown_timeout_s: float,
) -> uvicorn.Config:
    """uvicorn's settings for ingest's HTTP listeners (public and admin)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]  # an ASGI callable; uvicorn's type is narrower
        # httptools, with the bounds uvicorn lacks: head size and deadline, connections
        # (docs/delivery-semantics.md, "Bounds at the door").
        http=bounded_http_protocol(
            HttpLimits(
                max_connections=s.max_http_connections,
                max_header_count=s.max_header_count,
                max_header_bytes=s.max_header_bytes,
                header_read_timeout_s=s.header_read_timeout_s,
            ),
            count_refused,
        ),
        loop="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        # uvicorn types it int; its timer takes any number of seconds.
        timeout_keep_alive=s.keep_alive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=int(shutdown_timeout_s),
        server_header=False,
        date_header=False,
    )


class IngestService:
    """Runs ingest as a process: HTTP on ``http_port``, gRPC on ``grpc_port``.

    Publishing goes to the prep publisher over gRPC, unless ``embedded`` is given (the CLI
    does so when ``ingest.embedded_publisher`` is set): then the prep publisher runs in this
    process (the co-located layout, docs/architecture.md, "Layouts") with its producers,
    backup store and dynamic config watcher, and ingest hands it records instead of a
    serialized request. Drain: stop
    accepting, let in-flight requests finish (each ends only when its events are durable),
    then close the publisher channel, or flush the embedded producers.
    """

    name = "ingest"

    def __init__(
        self,
        settings: EventGwSettings,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        shutdown_timeout_s: float = 30.0,
        reuse_port: bool = False,
        embedded: PublisherParts | None = None,
    ) -> None:
        if settings.ingest.embedded_publisher and embedded is None:
            # Services do not import each other: the CLI builds the embedded publisher.
            raise ValueError("ingest.embedded_publisher needs the publisher's parts (embedded)")
        self.settings = settings
        self._reuse_port = reuse_port
        self._embedded = embedded
        self.metrics = metrics or Metrics()
        self._clock = clock or SystemClock()
        self._shutdown_timeout_s = shutdown_timeout_s
        self._ready = False
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self.admin_port: int | None = None
        # Read once, here, so that a bad key file or certificate fails the start (ConfigError
        # naming the field), and the same keys serve both faces.
        self._keys = KeyRing.from_settings(settings.ingest, self.metrics)
        tls = settings.ingest.tls
        self._tls = load_server_tls(tls) if tls is not None else None
        self.admission: AdmissionControl | None = None
        self.door: Door | None = None
        if embedded is None:  # the publisher hop's token: missing, it stops the start here
            settings.internal_auth.token_for("publisher")

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """See `eventgw.core.lifecycle.Service`."""
        s = self.settings.ingest
        client: PublisherClient | None = None
        publish: PublishFn | None = None
        publish_prepared: PreparedPublishFn | None = None
        embedded = self._embedded
        try:
            if embedded is not None:
                publish_prepared = (await embedded.open()).publish_prepared
            else:
                token = self.settings.internal_auth.token_for("publisher")
                client = PublisherClient(
                    s.publisher_target, s.publish_timeout_s, bearer_metadata(token)
                )
                await client.open()
                publish = client.publish
            await self._serve(ready, stop, publish, publish_prepared, embedded)
        finally:
            if client is not None:
                await client.close()
            if embedded is not None:
                await embedded.close()  # flushes the producers once nothing is in flight

    async def _serve(
        self,
        ready: asyncio.Event,
        stop: asyncio.Event,
        publish: PublishFn | None,
        publish_prepared: PreparedPublishFn | None,
        embedded: PublisherParts | None,
    ) -> None:
        s = self.settings.ingest
        admission = AdmissionControl(self.settings, self.metrics, self._clock)
        self.admission = admission
        door = Door(
            max_in_flight_events=s.max_in_flight_events,
            max_in_flight_requests=s.max_in_flight_requests,
            monotonic=self._clock.monotonic,
            queue_target_s=s.door_queue_target_ms / 1000,
            hold_s=s.door_hold_ms / 1000,
        )
        self.door = door
        self.metrics.gauge(
            "eventgw_ingest_in_flight_events", "events taken and not yet answered"
        ).set_function(lambda: float(door.in_flight_events))
        self.metrics.gauge(
            "eventgw_ingest_door_scale", "share of their limits P10 and P20 have now"
        ).set_function(door.scale)
        pipeline = IngestPipeline(
            classifier=s.classifier(),
            # The SLO service holds the (hot-reloadable) offload_p30 decision itself.
            scheduler=Scheduler(admission.slo, offload_p30=True),
            publish=publish,
            publish_prepared=publish_prepared,
            topics=self.settings.topics,
            clock=self._clock,
            metrics=self.metrics,
            dynamic=admission.classifier,
            door=door,
        )

        def status() -> StatusDocument:
            admitted = msgspec.structs.asdict(admission.status())
            return StatusDocument(**admitted, door=door_status(door))

        def admin_status() -> AdminStatusDocument:
            public = msgspec.structs.asdict(status())
            return AdminStatusDocument(**public, hot_companies=admission.hot_companies())

        def is_ready() -> bool:
            return self._ready

        app = IngestHttpApp(s, pipeline, self.metrics, is_ready, status=status, keys=self._keys)
        sock = bind_tcp(s.http_host, s.http_port, reuse_port=self._reuse_port)
        self.http_port = sock.getsockname()[1]
        tls = self._tls
        http = HttpServer(
            _http_config(app, s, app.count_refused, shutdown_timeout_s=self._shutdown_timeout_s),
            ssl_context=tls.ssl_context() if tls is not None else None,
        )
        admin_sock = bind_tcp(s.admin_host, s.admin_port, reuse_port=self._reuse_port)
        self.admin_port = admin_sock.getsockname()[1]
        admin = HttpServer(
            _http_config(
                AdminHttpApp(s, self.metrics, is_ready, admin_status),
                s,
                lambda _status: None,  # the admin port's refusals are not ingest requests
                shutdown_timeout_s=self._shutdown_timeout_s,
            )
        )
        grpc_server = GrpcServer(
            [SERVICE_NAME],
            options=server_options(
                # The same bounds as HTTP: a request no larger than max_body_bytes; the door
                # counts requests and refuses past twice max_in_flight_requests with a hint;
                # gRPC's own bound (no hint) sits beyond that, for memory only.
                ("grpc.max_receive_message_length", s.max_body_bytes),
                ("grpc.max_send_message_length", 64 << 20),
                # gRPC core binds with SO_REUSEPORT unless told not to: only workers share.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ),
            # A public API: ingest.api_keys are checked by the servicer, per tenant's key.
            auth=None,
            metrics=self.metrics,
            maximum_concurrent_rpcs=4 * s.max_in_flight_requests,
        )
        add_to_server(IngestServicer(s, pipeline, self._keys), grpc_server.server)
        try:
            credentials = server_credentials(tls) if tls is not None else None
            self.grpc_port = grpc_server.add_port(s.grpc_host, s.grpc_port, credentials)
            await grpc_server.start()
            admission_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(admission.run(admission_stop))
                if embedded is not None:  # the publisher's dynamic config: rollout, gating
                    watcher_ready = asyncio.Event()
                    tg.create_task(embedded.watcher.run(watcher_ready, admission_stop))
                    await watcher_ready.wait()
                tg.create_task(http.serve(sockets=[sock]))
                tg.create_task(admin.serve(sockets=[admin_sock]))
                async with asyncio.timeout(30):
                    await http.ready.wait()
                    await admin.ready.wait()
                self._ready = True
                grpc_server.set_serving()
                ready.set()
                logger.info(
                    "ingest.serving http=%s:%d grpc=%s:%d tls=%s keys=%s admin=%s:%d publisher=%s",
                    s.http_host,
                    self.http_port,
                    s.grpc_host,
                    self.grpc_port,
                    "on" if tls is not None else "off",
                    "required" if self._keys.required else "none",
                    s.admin_host,
                    self.admin_port,
                    "in-process" if embedded is not None else s.publisher_target,
                )
                await stop.wait()
                self._ready = False
                grpc_server.set_not_serving()
                logger.info("ingest.draining")
                http.should_exit = True
                admin.should_exit = True
                await grpc_server.stop(self._shutdown_timeout_s)
                admission_stop.set()
        finally:
            await grpc_server.stop(0)
            sock.close()
            admin_sock.close()
