"""Turn typed cluster settings into librdkafka configuration dicts (one place, merged once)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from eventgw.config.settings import KafkaClusterSettings, LaneTuning


_LIBRDKAFKA_LOGGER = logging.getLogger("eventgw.kafka.librdkafka")

SCANNER_GROUP: Final = "eventgw-tools-never-joined"
"""The group id of every `TopicScanner` (``scanner_config``). Never joined, nothing committed;
librdkafka still looks up its coordinator, so on a cluster with ACLs the principal needs
DESCRIBE on it (`eventgw.kafka.acl_policy` grants it)."""

FLOW_CONTROL_READER_GROUP: Final = "eventgw-ingest-flow-control"
"""The group id of ingest's flow-control `PartitionReader`: never joined, as ``SCANNER_GROUP``."""


def cluster_config(cluster: KafkaClusterSettings) -> dict[str, Any]:
    """Connection and security properties shared by producers, consumers and admin clients.

    The one place the typed security settings become client properties. With ``SASL_SSL``
    the broker's certificate is verified against ``ssl_ca_location`` (or the system's CA
    store) and its host name checked, stated here rather than left to librdkafka's defaults;
    a client certificate is presented when one is configured (mutual TLS).
    ``client_overrides`` cannot undo any of it: the settings refuse security properties there.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": cluster.bootstrap_servers,
        "security.protocol": cluster.security_protocol,
        # A dead broker must surface within seconds, not minutes.
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 2000,
        # librdkafka logs through Python logging; transport errors (repeated several times a
        # second while a broker is down) reach us rate-limited through error_cb instead.
        "logger": _LIBRDKAFKA_LOGGER,
        "log_level": 2,
    }
    if cluster.sasl_mechanism:
        conf["sasl.mechanism"] = cluster.sasl_mechanism
        conf["sasl.username"] = cluster.sasl_username
        conf["sasl.password"] = (
            cluster.sasl_password.get_secret_value() if cluster.sasl_password else None
        )
    if cluster.security_protocol == "SASL_SSL":
        conf["enable.ssl.certificate.verification"] = True
        conf["ssl.endpoint.identification.algorithm"] = "https"
        if cluster.ssl_ca_location is not None:
            conf["ssl.ca.location"] = str(cluster.ssl_ca_location)
        if cluster.ssl_certificate_location is not None:
            conf["ssl.certificate.location"] = str(cluster.ssl_certificate_location)
        if cluster.ssl_key_location is not None:
            conf["ssl.key.location"] = str(cluster.ssl_key_location)
        if cluster.ssl_key_password is not None:
            conf["ssl.key.password"] = cluster.ssl_key_password.get_secret_value()
    return conf


def producer_config(
    cluster: KafkaClusterSettings, tuning: LaneTuning, client_id: str
) -> dict[str, Any]:
    """Durable producer properties: ``acks=all``, one request in flight, tuned per lane.

    Not librdkafka's idempotent producer: its broker thread spins (polls with a zero
    timeout) for as long as a partition has a request in flight and records waiting past
    ``linger.ms`` — 0.7-0.85 of a core per producer while the broker is slow to answer,
    which on a busy machine slows the broker further (docs/design.md, "Producers").
    One request in flight per connection keeps each partition's records in the order they
    were produced, retries included; what idempotence added on top — no duplicate when a
    request is retried after the broker wrote it — is within at-least-once.
    """
    conf = cluster_config(cluster)
    conf.update(
        {
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": tuning.linger_ms,
            "batch.size": tuning.batch_size,
            "compression.type": tuning.compression,
            # Bounds how long an event can wait before it falls back to failed-writes.
            "message.timeout.ms": tuning.delivery_timeout_ms,
            # Bounded memory: at most this much queued per producer; produce() then
            # raises BufferError and the caller backs off.
            "queue.buffering.max.kbytes": 128 * 1024,
            "queue.buffering.max.messages": 500_000,
            "topic.metadata.propagation.max.ms": 5000,
        }
    )
    conf.update(cluster.client_overrides)
    return conf


def consumer_config(
    cluster: KafkaClusterSettings,
    group_id: str,
    client_id: str,
    *,
    group_instance_id: str | None = None,
    low_latency: bool = False,
) -> dict[str, Any]:
    """At-least-once consumer properties: manual commits, start from the earliest record.

    Args:
        group_instance_id: static membership id (a restart keeps its partitions).
        low_latency: the broker answers a fetch as soon as any data exists (P30 must not
            wait for fuller fetches). With ``fetch.min.bytes`` 1 the wait bound only matters
            when nothing arrives: 500 ms, not 10 — an idle orchestrator's 100 empty fetches a
            second cost the broker a fifth of a core (measured), for no latency gain.
    """
    conf = cluster_config(cluster)
    if group_instance_id:
        conf["group.instance.id"] = group_instance_id
    if low_latency:
        conf["fetch.wait.max.ms"] = 500
        conf["fetch.min.bytes"] = 1
    conf.update(
        {
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            # A member learns that the group rebalances from a heartbeat's answer: 1 s, not
            # librdkafka's 3 s, so a member that joins (an orchestrator's second lane reader,
            # a replica coming back) gets its partitions a second later, not three.
            "heartbeat.interval.ms": 1_000,
            "isolation.level": "read_committed",
        }
    )
    conf.update(cluster.client_overrides)
    return conf


def scanner_config(cluster: KafkaClusterSettings, client_id: str) -> dict[str, Any]:
    """Properties of a `TopicScanner`: reads by explicit offsets, never joins, never commits.

    librdkafka refuses a consumer without ``group.id``; the one given here is never joined
    (the scanner only assigns partitions) and nothing is ever committed to it.
    """
    conf = cluster_config(cluster)
    conf.update(
        {
            "group.id": SCANNER_GROUP,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # An offset deleted by retention meanwhile: read from the oldest one left.
            "auto.offset.reset": "earliest",
            # The end of a partition is reported, so a scan stops there instead of waiting.
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            # The broker answers a fetch at once: a fetch parked at the end of one partition
            # (default 500 ms) would delay the next partition's read and every metadata call.
            "fetch.wait.max.ms": 10,
            # Bounded read-ahead: a tool reads a range once, at the pace it processes it.
            "queued.max.messages.kbytes": 8 * 1024,
        }
    )
    conf.update(cluster.client_overrides)
    return conf
