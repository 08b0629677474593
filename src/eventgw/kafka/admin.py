"""Create, delete and list topics, and create ACLs, with the Kafka admin client (synchronous).

These helpers block the calling thread: call them from the CLI, pytest fixtures or
``asyncio.to_thread``, never directly from a coroutine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from confluent_kafka import KafkaError, KafkaException

# The documented import path; confluent_kafka.admin re-exports these without __all__.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from eventgw.kafka.client_config import cluster_config

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventgw.config.settings import KafkaClusterSettings
    from eventgw.kafka.acl_policy import AclRule

logger = logging.getLogger(__name__)

# How often ensure_topics re-reads metadata while waiting for new topics to have leaders. The
# admin API has no "topic is ready" event; 50 ms keeps the wait short on a local broker.
_METADATA_POLL_S: Final = 0.05


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create.

    Attributes:
        name: The topic name.
        partitions: The partition count.
        config: Topic-level configs, e.g. ``{"retention.ms": "3600000"}``. The replication
            factor is the broker's ``default.replication.factor``.
    """

    name: str
    partitions: int = 3
    config: Mapping[str, str] = field(default_factory=dict)


def _admin(cluster: str | KafkaClusterSettings) -> AdminClient:
    return AdminClient(admin_config(cluster))


def admin_config(cluster: str | KafkaClusterSettings) -> dict[str, Any]:
    """The admin client's properties for ``cluster``: a bare ``host:port`` (local brokers,
    tests) or a configured cluster, whose security settings (SASL/SSL) and
    ``client_overrides`` apply as to its other clients."""
    conf: dict[str, Any]
    if isinstance(cluster, str):
        conf = {
            "bootstrap.servers": cluster,
            # A dead broker must surface within the caller's timeout, not after librdkafka's
            # default 30 s connection setup.
            "socket.connection.setup.timeout.ms": 5000,
            # librdkafka prints every failed connect to stderr (20 lines a second against a
            # stopped broker). Failures reach the caller as KafkaException: critical logs only.
            "log_level": 2,
        }
    else:  # the same connection and security properties as the cluster's other clients
        conf = {**cluster_config(cluster), **cluster.client_overrides}
    conf["reconnect.backoff.max.ms"] = 1000
    return conf


def _bootstrap(cluster: str | KafkaClusterSettings) -> str:
    return cluster if isinstance(cluster, str) else cluster.bootstrap_servers


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def list_topics(cluster: str | KafkaClusterSettings, timeout_s: float = 10) -> set[str]:
    """Return the names of all topics in the cluster, internal ones (``__*``) included.

    Blocking: up to ``timeout_s``.

    Raises:
        confluent_kafka.KafkaException: The metadata request failed or timed out.
    """
    metadata = _admin(cluster).list_topics(timeout=timeout_s)
    return set(metadata.topics)


def partition_count(cluster: str | KafkaClusterSettings, topic: str, timeout_s: float = 10) -> int:
    """Number of partitions of ``topic`` (0 when it does not exist). Blocking."""
    metadata = _admin(cluster).list_topics(topic=topic, timeout=timeout_s)
    meta = metadata.topics.get(topic)
    if meta is None or meta.error is not None:
        return 0
    return len(meta.partitions)


def _wait_until_served(admin: AdminClient, specs: Sequence[TopicSpec], deadline: float) -> None:
    """Block until every topic in ``specs`` has all its partitions with a leader.

    CreateTopics returns once the controller has committed the topics; the broker's own
    metadata can lag a little, and a consumer that subscribes in that window gets
    UNKNOWN_TOPIC_OR_PART.
    """
    pending = {spec.name: spec.partitions for spec in specs}
    while pending:
        metadata = admin.list_topics(timeout=max(0.1, _remaining(deadline)))
        for name, partitions in list(pending.items()):
            topic = metadata.topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and len(topic.partitions) >= partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics {sorted(pending)} have no leader yet")
        time.sleep(_METADATA_POLL_S)


def ensure_topics(
    cluster: str | KafkaClusterSettings, topics: Sequence[TopicSpec], timeout_s: float = 30
) -> list[str]:
    """Create the topics that do not exist yet; existing ones are left unchanged.

    Idempotent and safe to race: a topic created concurrently by someone else
    (TOPIC_ALREADY_EXISTS) counts as existing. An existing topic's partition count and config
    are not compared with ``topics``.

    Blocking: until the created topics have a leader for every partition, at most
    ``timeout_s``.

    Args:
        cluster: ``bootstrap.servers`` of the cluster, or its settings (security included).
        topics: The topics that must exist.
        timeout_s: The deadline for the whole call.

    Returns:
        The names this call created, in the order of ``topics``.

    Raises:
        confluent_kafka.KafkaException: The cluster rejected a topic (e.g. an invalid config)
            or could not be reached.
        TimeoutError: The created topics did not get leaders within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    admin = _admin(cluster)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    # The admin API rejects a request naming a topic twice; the first spec for a name wins.
    unique: dict[str, TopicSpec] = {}
    for spec in topics:
        unique.setdefault(spec.name, spec)
    missing = [spec for spec in unique.values() if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(spec.name, num_partitions=spec.partitions, config=dict(spec.config))
            for spec in missing
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created: list[str] = []
    for spec in missing:
        try:
            futures[spec.name].result(timeout=_remaining(deadline))
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
        created.append(spec.name)
    _wait_until_served(admin, [spec for spec in missing if spec.name in created], deadline)
    if created:
        logger.info(
            "kafka.topics.created bootstrap=%s topics=%s", _bootstrap(cluster), ",".join(created)
        )
    return created


def delete_topics(
    cluster: str | KafkaClusterSettings, names: Sequence[str], timeout_s: float = 30
) -> list[str]:
    """Delete the named topics; names that do not exist are ignored.

    Blocking: until the controller has accepted the deletions, at most ``timeout_s``. The
    partitions' files are removed by the broker asynchronously afterwards.

    Args:
        cluster: ``bootstrap.servers`` of the cluster, or its settings (security included).
        names: The topics to delete.
        timeout_s: The deadline for the whole call.

    Returns:
        The names this call deleted.

    Raises:
        confluent_kafka.KafkaException: A deletion failed for a reason other than the topic
            being absent, or the cluster could not be reached.
    """
    unique = list(dict.fromkeys(names))  # the admin API rejects duplicate names
    if not unique:
        return []
    deadline = time.monotonic() + timeout_s
    # The client must outlive the futures: destroying it fails them with _DESTROY.
    admin = _admin(cluster)
    futures = admin.delete_topics(unique, operation_timeout=timeout_s, request_timeout=timeout_s)
    deleted: list[str] = []
    for name in unique:
        try:
            futures[name].result(timeout=_remaining(deadline))
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise
        deleted.append(name)
    if deleted:
        logger.info(
            "kafka.topics.deleted bootstrap=%s topics=%s", _bootstrap(cluster), ",".join(deleted)
        )
    return deleted


def _binding(rule: AclRule) -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC if rule.resource == "topic" else ResourceType.GROUP,
        rule.name,
        ResourcePatternType.PREFIXED if rule.prefixed else ResourcePatternType.LITERAL,
        rule.principal,
        "*",
        AclOperation.READ if rule.operation == "READ" else AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )


def apply_acls(
    cluster: str | KafkaClusterSettings, rules: Sequence[AclRule], timeout_s: float = 30
) -> int:
    """Create the ALLOW ACLs of ``rules`` (see `eventgw.kafka.acl_policy`).

    Idempotent: an ACL that exists already is left as it is. ACLs not in ``rules`` are not
    removed. Needs a principal allowed to alter the cluster's ACLs (a super user).

    Blocking: until the broker enforces every ACL, at most ``timeout_s``. CreateAcls returns
    once the controller has committed them; the broker's authorizer applies them from the
    metadata log a moment later (about a second on a local broker), and a client that
    connects in between is refused. So this waits until DescribeAcls, which the broker
    answers from its authorizer, lists them all.

    Returns:
        How many distinct ACLs were applied.

    Raises:
        confluent_kafka.KafkaException: The cluster refused an ACL (e.g. no authorizer, or
            the principal may not alter ACLs) or could not be reached.
        TimeoutError: The broker did not enforce them within ``timeout_s``.
    """
    if not rules:
        return 0
    deadline = time.monotonic() + timeout_s
    admin = _admin(cluster)
    bindings = list(dict.fromkeys(_binding(rule) for rule in rules))
    futures = admin.create_acls(bindings, request_timeout=timeout_s)
    for future in futures.values():
        future.result(timeout=_remaining(deadline))
    # None matches any name, principal and host (confluent-kafka's stubs say str only).
    anything: Any = None
    every_allow = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        anything,
        anything,
        AclOperation.ANY,
        AclPermissionType.ALLOW,
    )
    while True:
        enforced = admin.describe_acls(every_allow, request_timeout=_remaining(deadline) or 1)
        if set(bindings) <= set(enforced.result(timeout=_remaining(deadline))):
            break
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{len(bindings)} ACLs not enforced within {timeout_s:.0f} s")
        time.sleep(_METADATA_POLL_S)
    logger.info("kafka.acls.applied bootstrap=%s acls=%d", _bootstrap(cluster), len(bindings))
    return len(bindings)


def ensure_partitions(
    cluster: str | KafkaClusterSettings, topic: str, count: int, timeout_s: float = 30
) -> bool:
    """Grow ``topic`` to at least ``count`` partitions (never shrinks); True if it grew.

    For topics whose records are not ordered by key, such as the response topic (one
    partition per orchestrator replica index). Blocking, at most ``timeout_s``.

    Raises:
        confluent_kafka.KafkaException: the cluster refused or could not be reached.
        TimeoutError: the new partitions got no leader within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    current = partition_count(cluster, topic, timeout_s)
    if current >= count:
        return False
    admin = _admin(cluster)
    futures = admin.create_partitions(
        [NewPartitions(topic, count)], operation_timeout=timeout_s, request_timeout=timeout_s
    )
    futures[topic].result(timeout=_remaining(deadline))
    _wait_until_served(admin, [TopicSpec(topic, count)], deadline)
    logger.info(
        "kafka.partitions.added bootstrap=%s topic=%s partitions=%d->%d",
        _bootstrap(cluster),
        topic,
        current,
        count,
    )
    return True
