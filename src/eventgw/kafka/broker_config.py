"""What a local single-node KRaft broker runs with: its spec and its configuration files.

`BrokerSpec` says where a local cluster lives (ports, data directory) and whether it is
secured (`BrokerSecurity`); `server_properties` and `LOG4J2_PROPERTIES` are the files
`eventgw.kafka.local_broker.LocalBroker` writes into that directory before it starts the JVM.
Pure: no processes, no I/O but path arithmetic.

A secured cluster serves clients on one SASL_SSL listener (SCRAM-SHA-512 over TLS), and
authorizes every request with KRaft's ``StandardAuthorizer``: a principal may do only what an
ACL allows (`eventgw.kafka.acl_policy`). On one node the broker and the controller share a
JVM but still talk over the network: the broker reaches the controller listener with mutual
TLS (its certificate's principal ``User:CN=eventgw-broker`` is a super user), and is its own
inter-broker peer on the SASL_SSL listener as the admin user. Nothing listens in plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from eventgw.kafka.local_security import ADMIN_USER, BROKER_CN

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

PRIMARY: Final = ("primary", 9092, 9093)
"""Name, client port and controller port of the default primary cluster."""

ROLLOUT: Final = ("rollout", 9094, 9095)
"""Name, client port and controller port of the default rollout cluster."""

LOG4J2_PROPERTIES: Final = """\
# Written by eventgw.kafka.local_broker. Kafka's poms bring log4j2 but no configuration; without
# one log4j2 prints errors only and start() would never see the started line.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# The full config dump (~1800 lines per start) repeats server.properties; keep it out.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""
"""The broker's log4j2 configuration: INFO to stdout (which start() reads), no config dump."""


@dataclass(frozen=True)
class BrokerSecurity:
    """A SASL_SSL cluster: TLS from a local CA, SCRAM-SHA-512 users, ACLs enforced.

    Attributes:
        users: The SCRAM users created when the data directory is formatted, besides
            ``ADMIN_USER`` (a super user). Users cannot be added to a formatted cluster.
        require_client_certificate: Clients must also present a certificate of the local CA
            (mutual TLS) on the SASL_SSL listener.
    """

    users: tuple[str, ...] = ()
    require_client_certificate: bool = False


@dataclass(frozen=True)
class BrokerSpec:
    """Where and how one local single-node cluster runs.

    A data directory belongs to one cluster: reuse it only with the same ports, since the
    broker registers its listeners in the metadata log it keeps there.

    Attributes:
        name: A label for logs and ``status()``; it does not affect the broker.
        port: The client (PLAINTEXT) port on 127.0.0.1.
        controller_port: The KRaft controller port on 127.0.0.1.
        data_dir: Holds server.properties, broker.log, broker.pid and the Kafka logs
            (``data_dir/logs``).
        heap_mb: The JVM's maximum heap.
        extra_props: Broker properties that override or extend the defaults.
        security: None for a PLAINTEXT cluster (the default), else how it is secured. A data
            directory keeps the security it was formatted with.
    """

    name: str
    port: int
    controller_port: int
    data_dir: Path
    heap_mb: int = 512
    extra_props: Mapping[str, str] = field(default_factory=dict)
    security: BrokerSecurity | None = None

    @property
    def log_dir(self) -> Path:
        """The Kafka log directory (``log.dirs``), formatted once."""
        return self.data_dir / "logs"

    @property
    def properties_file(self) -> Path:
        """Where ``server_properties`` is written on every start."""
        return self.data_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        """Where ``LOG4J2_PROPERTIES`` is written on every start."""
        return self.data_dir / "log4j2.properties"

    @property
    def security_dir(self) -> Path:
        """Where a secured cluster keeps its TLS files and SCRAM passwords (0700)."""
        return self.data_dir / "security"


def default_spec(name: str, home: Path) -> BrokerSpec:
    """Return the spec of a named default cluster, with its data in ``<home>/clusters/<name>``.

    Args:
        name: ``"primary"`` (ports 9092/9093) or ``"rollout"`` (ports 9094/9095).
        home: The state directory, usually ``eventgw.kafka.jar_cache.default_home()``.

    Raises:
        ValueError: ``name`` is not a default cluster.
    """
    for known, port, controller_port in (PRIMARY, ROLLOUT):
        if name == known:
            return BrokerSpec(
                name=name,
                port=port,
                controller_port=controller_port,
                data_dir=home / "clusters" / name,
            )
    raise ValueError(f"unknown default cluster {name!r}: expected {PRIMARY[0]!r} or {ROLLOUT[0]!r}")


def server_properties(spec: BrokerSpec, admin_password: str | None = None) -> dict[str, str]:
    """Return the broker configuration of ``spec``, its ``extra_props`` applied last.

    Tuned for a fast single-node test cluster: replication factors and min ISR of 1, a short
    initial rebalance delay, few partitions for the internal topics (so the first consumer
    group does not wait for 50 ``__consumer_offsets`` partitions), a short broker session
    (so a restart after a kill registers within seconds) and no auto-created topics, so
    a typo in a topic name fails instead of creating a topic.

    Args:
        spec: The cluster.
        admin_password: ``ADMIN_USER``'s SCRAM password; required when ``spec.security``
            is set (the broker authenticates to itself with it), unused otherwise.

    Raises:
        ValueError: A secured spec without ``admin_password``.
    """
    port = spec.port
    controller_port = spec.controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static voter set rather than --standalone's dynamic quorum: the voter's endpoint
        # then lives in this file, not in the metadata log.
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(spec.log_dir),
        "num.partitions": "3",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # A new group's first rebalance waits 300 ms for more members (Kafka's default 3 s):
        # an orchestrator's two lane readers join within milliseconds of each other and share
        # it. With 0 the first reader got every P30 partition alone and the second's join
        # revoked them a heartbeat later: tasks already served were read and served again.
        "group.initial.rebalance.delay.ms": "300",
        # After a kill -9 the restarted broker cannot register until the controller expires
        # the dead incarnation's session (DUPLICATE_BROKER_REGISTRATION): 9 s by default.
        # Loopback heartbeats inside one JVM do not need that margin.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
    }
    if spec.security is not None:
        if not admin_password:
            raise ValueError(f"broker {spec.name}: a SASL_SSL cluster needs the admin password")
        props.update(_security_properties(spec, spec.security, admin_password))
    props.update(spec.extra_props)
    return props


def _security_properties(
    spec: BrokerSpec, security: BrokerSecurity, admin_password: str
) -> dict[str, str]:
    """The listeners, TLS files, SASL and authorizer of a secured cluster (module docstring)."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{admin_password}";'
    )
    return {
        "listeners": (
            f"SASL_SSL://127.0.0.1:{spec.port},CONTROLLER://127.0.0.1:{spec.controller_port}"
        ),
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{spec.port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.ssl.client.auth": (
            "required" if security.require_client_certificate else "none"
        ),
        # Not SCRAM on the controller listener: KRaft keeps SCRAM credentials in the metadata
        # log the controller serves, and supports them on broker listeners only. The broker
        # proves itself to the controller with its certificate instead.
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(spec.security_dir / "broker.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(spec.security_dir / "ca.pem"),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN_USER};User:CN={BROKER_CN}",
        "allow.everyone.if.no.acl.found": "false",
    }


def render_properties(props: Mapping[str, str]) -> str:
    """Return ``props`` as a ``java.util.Properties`` file, headed by a do-not-edit line."""
    lines = [
        "# Written by eventgw.kafka.local_broker on every start; edits are overwritten.",
        *(f"{key}={_escape_property(value)}" for key, value in props.items()),
    ]
    return "\n".join(lines) + "\n"


def _escape_property(value: str) -> str:
    # java.util.Properties treats a backslash as an escape character.
    return value.replace("\\", "\\\\")
