"""The whole loop over SASL_SSL with per-role principals and ACLs, on a real secured broker.

One private KRaft broker for the module (``secure_broker``): a SASL_SSL listener with
SCRAM-SHA-512 users made at format time, client certificates of its own CA required,
StandardAuthorizer with ACLs from `eventgw.kafka.acl_policy`. Each component connects as its
own role, with settings built only from the typed fields (`role_cluster`), in a production
configuration.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any

import confluent_kafka
import httpx
import pytest
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from eventgw.config.internal_auth import InternalAuthSettings
from eventgw.config.settings import (
    BackupSettings,
    ClassRuleSettings,
    EventGwSettings,
    IngestSettings,
    KafkaSettings,
    LaneTuning,
    OrchestratorSettings,
    ProcessorSettings,
    PublisherSettings,
    RecoverySettings,
)
from eventgw.core.clock import SystemClock
from eventgw.core.envelope import H_RECOVERY_SOURCE, Priority
from eventgw.ingest.service import IngestService
from eventgw.kafka.acl_policy import acl_rules
from eventgw.kafka.admin import TopicSpec, apply_acls, delete_topics, ensure_topics
from eventgw.kafka.client_config import (
    FLOW_CONTROL_READER_GROUP,
    SCANNER_GROUP,
    cluster_config,
    consumer_config,
    producer_config,
)
from eventgw.kafka.group_consumer import GroupConsumer
from eventgw.kafka.producer import BatchProducer
from eventgw.orchestrator import commit_metadata
from eventgw.orchestrator.service import OrchestratorService
from eventgw.processor import ProcessorService
from eventgw.publisher.service import PublisherService
from eventgw.recovery.read_back import LaneReadBack
from eventgw.recovery.takeover import open_scanners, written_topics
from tests.fixtures.kafka import admin_cluster, role_cluster
from tests.fixtures.read_path import Recorder, lane_topics, running, wait_lag_zero
from tests.fixtures.stack import fast_lanes, unique_topics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from eventgw.config.settings import KafkaClusterSettings, TopicSettings
    from eventgw.kafka.acl_policy import Role
    from eventgw.kafka.group_consumer import Committed, TopicPartition
    from eventgw.kafka.local_broker import LocalBroker

pytestmark = pytest.mark.kafka

INGEST_KEY = "sasl-ssl-test-ingest-key-0123456789"

ORCHESTRATOR_GROUP = "orch-sasl"
"""The orchestrator's group (the broker is this module's own, so no other test shares it)."""


@pytest.fixture
def topics(secure_broker: LocalBroker) -> Iterator[TopicSettings]:
    """Fresh topics on the secured broker, created by the admin, with every role's ACLs."""
    names = unique_topics()
    admin = admin_cluster(secure_broker)
    ensure_topics(admin, [TopicSpec(n, names.partitions) for n in names.all_topics()])
    rules = acl_rules(
        names, orchestrator_group=ORCHESTRATOR_GROUP, recovery_group=RecoverySettings().group_id
    )
    apply_acls(admin, rules)
    yield names
    delete_topics(admin, names.all_topics())


INTERNAL_AUTH = InternalAuthSettings(
    publisher_token=SecretStr(secrets.token_hex(32)),
    orchestrator_token=SecretStr(secrets.token_hex(32)),
)


def settings_for(
    cluster: KafkaClusterSettings, topics: TopicSettings, tmp_path: Path, **sections: Any
) -> EventGwSettings:
    """A production configuration whose only cluster is ``cluster`` (one role's login); the
    internal gRPC tokens given as a deployment's Secret would (production makes none).

    Production needs ingest API keys even on loopback (docs/security.md), in every service's
    settings: they are one model, as the shared ConfigMap of deploy/k8s is one file.
    """
    sections.setdefault("ingest", IngestSettings(api_keys=[SecretStr(INGEST_KEY)]))
    return EventGwSettings(
        environment="production",
        kafka=KafkaSettings(primary=cluster, rollout=None),
        topics=topics,
        backup=BackupSettings(spool_dir=tmp_path / "spool"),
        internal_auth=INTERNAL_AUTH,
        **sections,
    )


async def test_the_whole_loop_runs_over_sasl_ssl_with_one_principal_per_role(
    secure_broker: LocalBroker, topics: TopicSettings, tmp_path: Path
) -> None:
    """Publisher, ingest, orchestrator and processor each log in as their role; 60 events
    sent over HTTP are published, handled once each, committed, and flow control flows."""
    group = ORCHESTRATOR_GROUP
    orchestrator = OrchestratorService(
        settings_for(
            role_cluster(secure_broker, "orchestrator"),
            topics,
            tmp_path,
            orchestrator=OrchestratorSettings(
                grpc_port=0,
                metrics_port=0,
                group_id=group,
                commit_interval_s=0.2,
                flow_control_interval_s=0.5,
                shutdown_timeout_s=3.0,
            ),
        )
    )
    recorder = Recorder()
    publisher = PublisherService(
        settings_for(
            role_cluster(secure_broker, "publisher"),
            topics,
            tmp_path,
            publisher=PublisherSettings(
                grpc_port=0, liveness_port=0, metrics_port=0, lanes=fast_lanes()
            ),
        )
    )
    started = time.monotonic()
    async with running(orchestrator), running(publisher):
        processor = ProcessorService(
            settings_for(
                role_cluster(secure_broker, "processor"),
                topics,
                tmp_path,
                processor=ProcessorSettings(
                    orchestrators=[f"127.0.0.1:{orchestrator.grpc_port}"],
                    metrics_port=0,
                    shutdown_timeout_s=3.0,
                ),
            ),
            recorder,
        )
        ingest = IngestService(
            settings_for(
                role_cluster(secure_broker, "ingest"),
                topics,
                tmp_path,
                ingest=IngestSettings(
                    http_port=0,
                    grpc_port=0,
                    admin_port=0,
                    api_keys=[SecretStr(INGEST_KEY)],
                    publisher_target=f"127.0.0.1:{publisher.grpc_port}",
                    class_rules=[
                        ClassRuleSettings(priority=Priority.P30, source_name="alerts"),
                        ClassRuleSettings(priority=Priority.P10, source_name="batch"),
                    ],
                ),
            )
        )
        async with running(processor), running(ingest):
            sources = ("alerts", "api", "batch")
            body = {
                "events": [
                    {
                        "company_id": f"acme-{i % 5}",
                        "source_name": sources[i % 3],
                        "payload": {"n": i},
                    }
                    for i in range(60)
                ]
            }
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(
                    f"http://127.0.0.1:{ingest.http_port}/v1/events",
                    json=body,
                    headers={"x-api-key": INGEST_KEY},
                )
            assert answer.status_code == 202, answer.text
            results = answer.json()["events"]
            assert {r["status"] for r in results} == {"PUBLISHED"}
            assert {r["lane"] for r in results} == {"p30", "p20", "p10"}
            sent = {r["event_id"] for r in results}

            await recorder.wait_for(lambda: recorder.distinct >= len(sent), 30, "every event")
            lag = await wait_lag_zero(
                secure_broker.bootstrap,
                group,
                lane_topics(topics),
                security=cluster_config(admin_cluster(secure_broker)),
            )
            admission = ingest.admission
            assert admission is not None
            # Orchestrator → flow-control topic → ingest: each with its own principal.
            await wait_until(
                lambda: admission.listener is not None and admission.listener.applied > 0,
                10,
                "ingest applying a flow-control signal",
            )
    elapsed = time.monotonic() - started
    print(f"\n[sasl_ssl] {len(sent)} events through the loop in {elapsed:.1f}s")
    assert set(recorder.counts) == sent
    assert recorder.duplicates() == 0
    assert set(lag.values()) == {0}


async def test_the_orchestrators_commit_metadata_is_read_back_under_its_acls(
    secure_broker: LocalBroker, topics: TopicSettings
) -> None:
    """Crash-dedupe over SASL_SSL: the finished runs one orchestrator commits as offset
    metadata are handed to the next consumer of its group, as the orchestrator's principal.
    (A refused offset fetch would only be logged and hand over nothing: asserted here.)"""
    cluster = role_cluster(secure_broker, "orchestrator")
    group = f"{ORCHESTRATOR_GROUP}-restart"  # under the orchestrator's prefixed group grant
    partitions = [(topics.p30, p) for p in range(topics.partitions)]
    handed: list[Committed] = []

    async def on_assign(tps: list[TopicPartition], committed: Committed) -> None:
        handed.append(committed)

    async def on_revoke(tps: list[TopicPartition]) -> Committed:
        return {}

    async def joined() -> GroupConsumer:
        consumer = GroupConsumer(
            consumer_config(cluster, group, "eventgw-orchestrator-0"),
            [topics.p30],
            on_assign,
            on_revoke,
        )
        await consumer.start()
        async with asyncio.timeout(30):
            while consumer.assigned != set(partitions):
                await consumer.poll_batch(10, 0.2)
        return consumer

    first = await joined()
    written = {tp: (3, commit_metadata.encode(3, [(5, 6 + tp[1])])) for tp in partitions}
    await first.commit(written)
    await first.close()

    second = await joined()
    await second.close()
    assert handed[0] == {}, "a fresh group has nothing committed"
    assert handed[-1] == written
    assert commit_metadata.decode(3, handed[-1][topics.p30, 1][1]) == [(5, 7)]


async def test_the_failed_writes_processor_reads_its_writes_back_under_its_acls(
    secure_broker: LocalBroker, topics: TopicSettings
) -> None:
    """The restart read-back (docs/delivery-semantics.md, "Replayed failed writes") as the
    failed-writes principal: it finds a lane record and a DLQ record it wrote, and reads every
    topic it writes without an authorization error (a refusal would show as ``error``)."""
    cluster = role_cluster(secure_broker, "failed-writes")
    producer = BatchProducer(
        "test-read-back",
        producer_config(cluster, LaneTuning(linger_ms=1, batch_size=1 << 16), "test-read-back"),
    )
    producer.start()
    sent_from_ms = int(time.time() * 1000)
    try:
        for topic, offset in ((topics.p20, 7), (topics.dlq, 8)):
            source = f"{topics.failed_writes}:0:{offset}".encode()
            (d,) = await producer.send(topic, [(b"k", b"v", [(H_RECOVERY_SOURCE, source)])])
            assert d.ok, d.error
    finally:
        await producer.close(10)
    targets = {"primary": written_topics(topics, "primary")}
    async with open_scanners({"primary": cluster}, {"primary"}, 10.0) as scanners:
        read_back = LaneReadBack(
            scanners,
            targets,
            topics.failed_writes,
            max_records=1000,
            deadline_s=60.0,
            clock=SystemClock(),
        )
        result = await read_back.find({0: 5}, sent_from_ms)
    assert result.shortfalls == set(), "every topic it writes, read under its own ACLs"
    assert result.found == {0: {7, 8}}


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait until ``predicate()`` holds, for state with no change notification (a counter)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


# -- what a principal may not do --------------------------------------------------------------


def _client_conf(
    cluster: KafkaClusterSettings, errors: list[confluent_kafka.KafkaError]
) -> dict[str, Any]:
    conf = cluster_config(cluster)
    conf["error_cb"] = errors.append
    return conf


def produce_one(cluster: KafkaClusterSettings, topic: str) -> confluent_kafka.KafkaError | None:
    """Write one record as ``cluster``'s user; return the error (None: written). Blocking."""
    errors: list[confluent_kafka.KafkaError] = []
    producer = confluent_kafka.Producer(
        {**_client_conf(cluster, errors), "message.timeout.ms": 8000, "acks": "all"}
    )
    reports: list[confluent_kafka.KafkaError | None] = []
    producer.produce(topic, b"probe", on_delivery=lambda err, _msg: reports.append(err))
    deadline = time.monotonic() + 10
    while not reports and time.monotonic() < deadline:
        producer.poll(0.1)
        fatal = [e for e in errors if e.code() in _LOGIN_ERRORS]
        if fatal:
            return fatal[0]
    assert reports, "no delivery report within 10 s"
    return reports[0]


def read_one(
    cluster: KafkaClusterSettings, topic: str, group: str
) -> confluent_kafka.KafkaError | None:
    """Fetch partition 0 from its start as ``cluster``'s user, with consumer group ``group``
    (never joined; one the role may use, so a refusal is the topic's); return the error."""
    errors: list[confluent_kafka.KafkaError] = []
    consumer = confluent_kafka.Consumer({**_client_conf(cluster, errors), "group.id": group})
    try:
        # Without DESCRIBE (no READ or WRITE ACL at all) the topic's metadata is refused, and
        # an assigned partition would just wait; with DESCRIBE only, the fetch is refused.
        described = consumer.list_topics(topic, timeout=10).topics[topic]
        refused: confluent_kafka.KafkaError | None = described.error
        if refused is not None:
            return refused
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None:
                error = message.error()
                return None if error is None else error
        raise AssertionError("no record and no error within 10 s")
    finally:
        consumer.close()


_LOGIN_ERRORS = {
    confluent_kafka.KafkaError._AUTHENTICATION,
    confluent_kafka.KafkaError._SSL,
    confluent_kafka.KafkaError._TRANSPORT,
    confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
}


async def test_only_the_processor_may_write_the_response_topic(
    secure_broker: LocalBroker, topics: TopicSettings
) -> None:
    ingest = role_cluster(secure_broker, "ingest")
    refused = await asyncio.to_thread(produce_one, ingest, topics.response)
    assert refused is not None
    assert refused.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    processor = role_cluster(secure_broker, "processor")
    assert await asyncio.to_thread(produce_one, processor, topics.response) is None


@pytest.mark.parametrize(
    ("role", "topic"),
    [
        ("publisher", "flow_control"),  # only orchestrators signal flow control
        ("orchestrator", "p30"),  # lanes are written by publishers (and replays)
        ("processor", "p30"),  # processors write results, nothing else
        ("ingest", "p30"),  # ingest hands events to the publisher
        ("client", "dlq"),
    ],
)
async def test_a_principal_without_a_write_acl_is_refused(
    secure_broker: LocalBroker, topics: TopicSettings, role: Role, topic: str
) -> None:
    cluster = role_cluster(secure_broker, role)
    error = await asyncio.to_thread(produce_one, cluster, getattr(topics, topic))
    assert error is not None, f"{role} could write {topic}"
    assert error.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, error


@pytest.mark.parametrize(
    ("role", "topic", "group"),
    [
        ("ingest", "failed_writes", FLOW_CONTROL_READER_GROUP),  # ingest reads flow control only
        ("tools", "p30", SCANNER_GROUP),  # the DLQ tools read DLQ, parking lot, retries
        ("orchestrator", "failed_writes", ORCHESTRATOR_GROUP),  # the failed-writes processor's
    ],
)
async def test_a_principal_without_a_read_acl_is_refused(
    secure_broker: LocalBroker, topics: TopicSettings, role: Role, topic: str, group: str
) -> None:
    cluster = role_cluster(secure_broker, role)
    error = await asyncio.to_thread(read_one, cluster, getattr(topics, topic), group)
    assert error is not None, f"{role} could read {topic}"
    assert error.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, error


async def test_a_wrong_password_or_a_missing_certificate_cannot_log_in(
    secure_broker: LocalBroker, topics: TopicSettings
) -> None:
    processor = role_cluster(secure_broker, "processor")
    wrong_password = processor.model_copy(update={"sasl_password": SecretStr("not-it")})
    error = await asyncio.to_thread(produce_one, wrong_password, topics.response)
    assert error is not None
    assert error.code() == confluent_kafka.KafkaError._AUTHENTICATION, error

    no_certificate = processor.model_copy(
        update={"ssl_certificate_location": None, "ssl_key_location": None}
    )
    error = await asyncio.to_thread(produce_one, no_certificate, topics.response)
    assert error is not None
    assert error.code() in _LOGIN_ERRORS, error


def test_the_secured_broker_has_no_plaintext_listener(secure_broker: LocalBroker) -> None:
    """A client that speaks PLAINTEXT to the port gets no metadata (the listener is TLS)."""
    errors: list[confluent_kafka.KafkaError] = []
    admin = AdminClient(
        {
            "bootstrap.servers": secure_broker.bootstrap,
            "error_cb": errors.append,  # type: ignore[dict-item]  # stubs omit callbacks
            "log_level": 0,
            "socket.connection.setup.timeout.ms": 3000,
        }
    )
    with pytest.raises(confluent_kafka.KafkaException):
        admin.list_topics(timeout=3)
    assert secure_broker.status()["security_protocol"] == "SASL_SSL"
