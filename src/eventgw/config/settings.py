"""Static settings: one frozen model per service plus the shared Kafka/topic/backup models.

Sources, highest precedence first: environment variables (prefix ``EVENTGW_``, nested with
``__``, e.g. ``EVENTGW_KAFKA__PRIMARY__BOOTSTRAP_SERVERS``), then the TOML file named by
``EVENTGW_SETTINGS_FILE`` (same section names), then the defaults below. Only
`load_settings` reads the environment; everything else receives its model from the CLI.
"""

from __future__ import annotations

import json
import os
import re
import tomllib  # TOMLDecodeError: what TomlConfigSettingsSource raises on a syntax error
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from eventgw.config.ingest_security import IngestTlsSettings, TenantKey, is_loopback
from eventgw.config.internal_auth import InternalAuthSettings
from eventgw.core.backup_codec import BackupAuth
from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.envelope import (
    BUFFER_LANES,
    DEFAULT_LANE_SHARES,
    LANES,
    BufferLane,
    Lane,
    Priority,
)
from eventgw.core.errors import ConfigError

Environment = Literal["development", "staging", "production"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# librdkafka properties client_overrides may not set. Security is set by typed fields only,
# so no raw property can turn verification off, downgrade the protocol or swap credentials;
# the typed fields' own properties are refused too, so each idea has one home.
_TYPED_PROPERTIES: Final = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
}
_SECURITY_PREFIXES: Final = ("security.", "sasl.", "ssl.", "ssl_", "enable.ssl.", "enable.sasl.")
_SECURITY_PROPERTIES: Final = frozenset({"plugin.library.paths"})  # loads code into the client


class KafkaClusterSettings(_Frozen):
    """How to reach one Kafka cluster.

    Security is typed: ``security_protocol``, the SASL fields and the ``ssl_*`` files; the
    client properties they become are written in one place
    (`eventgw.kafka.client_config.cluster_config`). ``client_overrides`` carries other raw
    librdkafka properties and may not touch security (refused at start-up, naming the key).
    """

    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port...]")
    security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = Field(
        default=None,
        description="SASL_SSL: PEM file of the CA certificate(s) the brokers' certificates are "
        "verified against; None: the system's CA store. The broker's host name is always "
        "verified",
    )
    ssl_certificate_location: Path | None = Field(
        default=None,
        description="SASL_SSL: PEM client certificate for brokers that require mutual TLS "
        "(with ssl_key_location)",
    )
    ssl_key_location: Path | None = Field(
        default=None, description="SASL_SSL: PEM private key of ssl_certificate_location"
    )
    ssl_key_password: SecretStr | None = Field(
        default=None, description="password of ssl_key_location, if it is encrypted"
    )
    client_overrides: dict[str, str] = Field(
        default_factory=dict,
        description="raw librdkafka properties merged last; security properties (security.*, "
        "sasl.*, ssl.*, enable.ssl.*) and bootstrap.servers are refused: use the typed fields",
    )

    @field_validator("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        # Checked at start-up: librdkafka would only fail when the first client is created.
        if path is not None and not path.is_file():
            raise ValueError(f"{path} is not a file")
        return path

    @field_validator("client_overrides")
    @classmethod
    def _no_security_overrides(cls, overrides: dict[str, str]) -> dict[str, str]:
        for key in overrides:
            typed = _TYPED_PROPERTIES.get(key)
            if typed is not None:
                raise ValueError(f"{key!r} is set by the typed field {typed}, not by an override")
            if key.startswith(_SECURITY_PREFIXES) or key in _SECURITY_PROPERTIES:
                raise ValueError(
                    f"{key!r} is security configuration and cannot be overridden "
                    "(security_protocol, sasl_* and ssl_* are the typed fields)"
                )
        return overrides

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaClusterSettings:
        if self.security_protocol == "SASL_SSL" and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError("SASL_SSL needs sasl_mechanism, sasl_username and sasl_password")
        return self

    @model_validator(mode="after")
    def _tls_consistent(self) -> KafkaClusterSettings:
        tls_fields = {
            "ssl_ca_location": self.ssl_ca_location,
            "ssl_certificate_location": self.ssl_certificate_location,
            "ssl_key_location": self.ssl_key_location,
            "ssl_key_password": self.ssl_key_password,
        }
        given = [name for name, value in tls_fields.items() if value is not None]
        if given and self.security_protocol != "SASL_SSL":
            raise ValueError(f"{given[0]}: TLS files are used only with security_protocol SASL_SSL")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError(
                "ssl_key_location: mutual TLS needs both ssl_certificate_location and "
                "ssl_key_location, or neither"
            )
        if self.ssl_key_password is not None and self.ssl_key_location is None:
            raise ValueError("ssl_key_password: given without ssl_key_location")
        return self


class KafkaSettings(_Frozen):
    """The clusters eventgw talks to."""

    primary: KafkaClusterSettings = KafkaClusterSettings(bootstrap_servers="127.0.0.1:9092")
    rollout: KafkaClusterSettings | None = KafkaClusterSettings(bootstrap_servers="127.0.0.1:9094")
    fallback: KafkaClusterSettings | None = Field(
        default=None, description="cluster for the failed-writes topic; primary when unset"
    )
    active_cluster_fleet: Literal["primary", "rollout"] = Field(
        default="primary",
        description="which fleet of clusters is live during a migration: the cluster every "
        "orchestrator replica serves unless the dynamic-config key named by "
        "orchestrator.rollout_orchestrator_config_key lists its index (those serve the "
        "rollout cluster). `rollout` moves every replica to the rollout cluster, e.g. to "
        'finish a migration (docs/operations.md, "Migrating to another Kafka cluster")',
    )

    def configured(self) -> dict[str, KafkaClusterSettings]:
        """The configured clusters by name: ``primary``, then ``rollout``, ``fallback`` if set."""
        clusters = {"primary": self.primary, "rollout": self.rollout, "fallback": self.fallback}
        return {name: c for name, c in clusters.items() if c is not None}

    @model_validator(mode="after")
    def _active_fleet_has_a_cluster(self) -> KafkaSettings:
        if self.active_cluster_fleet == "rollout" and self.rollout is None:
            raise ValueError("active_cluster_fleet: rollout needs kafka.rollout to be set")
        return self


class TopicSettings(_Frozen):
    """Topic names (docs/design.md, "Topics and their roles"). In staging each must contain
    'staging'."""

    p30: str = "events.public.p30-events-express-v1"
    p20: str = "events.public.p20-events-express-v1"
    p10: str = "events.public.p10-events-express-v1"
    offload: str = "events.private.offload-v1"
    retry_60s: str = "events.public.events-express-v1-retry-60s"
    retry_120s: str = "events.public.events-express-v1-retry-120s"
    retry_240s: str = "events.public.events-express-v1-retry-240s"
    retry_480s: str = "events.public.events-express-v1-retry-480s"
    dlq: str = "events.public.events-express-v1-dlq"
    parking_lot: str = Field(
        default="events.public.events-express-v1-parking-lot",
        description="redriven DLQ records that failed again (eventgw dlq list --parking-lot)",
    )
    dlq_redrive_log: str = Field(
        default="events.private.dlq-redrive-log-v1",
        description="compacted: which DLQ records eventgw dlq redrive has written back, by "
        "<topic>:<partition>:<offset>",
    )
    flow_control: str = "events.private.flow-control-v1"
    response: str = "events.private.response-v1"
    failed_writes: str = "events.private.failed-writes-v1"
    partitions: int = Field(default=3, ge=1, le=10_000)

    def lane_topic(self, lane: Lane) -> str:
        """Topic of a lane (``p30``, ``p20``, ``p10``, ``offload``)."""
        return str(getattr(self, lane))

    def all_topics(self) -> list[str]:
        """Every topic name, in the order of the fields above."""
        return [v for k, v in self.model_dump().items() if k != "partitions"]


class BackupSettings(_Frozen):
    """The last-resort store for events neither their topic nor failed-writes took."""

    s3_bucket: str | None = None
    s3_prefix: str = "eventgw/backup/"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    spool_dir: Path = Path(".eventgw/spool")
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    hmac_key: SecretStr | None = Field(
        default=None,
        description="signs every backup object (HMAC-SHA256); the failed-writes processor "
        "replays only objects signed with it (or a previous key). At least 32 characters, "
        "e.g. `openssl rand -hex 32`; the same on every service that writes or reads the "
        "store. Required with S3 in production. Unset: CRCs only, and anyone who can write "
        "the store can put events into the lanes (docs/failure-handling.md)",
    )
    hmac_previous_keys: list[SecretStr] = Field(
        default_factory=list,
        description="keys still accepted when verifying, never used to sign: a key rotation "
        "keeps replaying what the old key signed",
    )
    accept_unsigned_objects: bool = Field(
        default=False,
        description="with hmac_key: still replay objects written before the key was set (CRC "
        "only). For a migration only: turn it off once they are replayed; a forger writes "
        "unsigned objects",
    )

    @model_validator(mode="after")
    def _s3_credentials_paired(self) -> BackupSettings:
        # Checked here, at start-up, not first when the store opens inside a running service.
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "s3_secret_access_key: give both s3_access_key_id and s3_secret_access_key, "
                "or neither"
            )
        return self

    @model_validator(mode="after")
    def _keys_complete(self) -> BackupSettings:
        if self.hmac_key is None and (self.hmac_previous_keys or self.accept_unsigned_objects):
            raise ValueError(
                "hmac_key: hmac_previous_keys and accept_unsigned_objects need hmac_key"
            )
        if self.hmac_key is not None and len(self.hmac_key.get_secret_value()) < 32:
            raise ValueError("hmac_key: needs at least 32 characters (openssl rand -hex 32)")
        if any(len(k.get_secret_value()) < 32 for k in self.hmac_previous_keys):
            raise ValueError("hmac_previous_keys: each key needs at least 32 characters")
        return self

    def auth(self) -> BackupAuth:
        """The signing key and the trusted keys, for the backup stores."""
        key = self.hmac_key.get_secret_value().encode() if self.hmac_key else None
        return BackupAuth(
            key=key,
            previous_keys=tuple(k.get_secret_value().encode() for k in self.hmac_previous_keys),
            accept_unsigned=self.accept_unsigned_objects,
        )


class ObservabilitySettings(_Frozen):
    """Logging and metrics sinks."""

    log_format: Literal["json", "console"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    statsd_host: str | None = Field(
        default=None,
        description="StatsD agent host; set to send every service's metrics over UDP "
        "(None: Prometheus /metrics only)",
    )
    statsd_port: int = Field(default=8125, ge=1, le=65535, description="StatsD agent UDP port")
    statsd_root: str = Field(
        default="eventgw", description="prefix of every StatsD key, e.g. eventgw.prep_publisher"
    )
    statsd_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds between StatsD flushes (counters are sent as the delta since "
        "the previous flush; one last flush on stop)",
    )


class ClassRuleSettings(_Frozen):
    """One static classifier rule (first match wins); fields may be glob patterns."""

    priority: Priority
    source_name: str | None = None
    statistic_key: str | None = None
    company_id: str | None = None


class LaneTuning(_Frozen):
    """Producer tuning of one lane."""

    linger_ms: int = Field(ge=0, le=10_000)
    batch_size: int = Field(ge=1024, le=64 << 20)
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "none"
    delivery_timeout_ms: int = Field(default=30_000, ge=1000, le=600_000)


TunedProducer = Literal[Lane, "failed_writes"]
"""A producer of the publisher with a tuning of its own: one per lane, and the failed-writes one."""


def _default_tuning() -> dict[TunedProducer, LaneTuning]:
    return {
        "p30": LaneTuning(linger_ms=1, batch_size=128 << 10, delivery_timeout_ms=10_000),
        "p20": LaneTuning(linger_ms=5, batch_size=512 << 10),
        "p10": LaneTuning(linger_ms=20, batch_size=1 << 20, compression="lz4"),
        "offload": LaneTuning(linger_ms=20, batch_size=1 << 20, compression="lz4"),
        "failed_writes": LaneTuning(linger_ms=5, batch_size=512 << 10),
    }


class IngestSettings(_Frozen):
    """Ingest service (docs/design.md, "Ingest service")."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50050, ge=0, le=65535)
    publisher_target: str = Field(
        default="127.0.0.1:50051", description="prep publisher gRPC host:port"
    )
    embedded_publisher: bool = Field(
        default=False,
        description="co-located layout: run the prep publisher inside this process (its "
        "producers, backup store and dynamic config come from the publisher settings) "
        "instead of calling publisher_target over gRPC",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="ingest processes sharing the HTTP and gRPC ports (SO_REUSEPORT) under "
        "one supervisor; each is a full ingest (co-located: with its own producers); "
        "/metrics and /status answer for one worker",
    )
    publish_timeout_s: float = Field(default=120.0, gt=0)
    max_body_bytes: int = Field(default=4 << 20, ge=1024)
    max_events_per_request: int = Field(default=1000, ge=1, le=100_000)
    max_payload_bytes: int = Field(default=256 << 10, ge=16)
    body_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a request body not received whole within this is answered 408 and its "
        "connection closed (frees its slot in the door: a slow body cannot hold it)",
    )
    header_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="the request line and headers must arrive within this, from the "
        "connection's start (first request) or the request's first byte (later ones); else "
        "408 and the connection is closed. Also closes connections that send nothing",
    )
    keep_alive_timeout_s: float = Field(
        default=5.0, gt=0, le=3600, description="an idle kept-alive connection is closed after this"
    )
    max_http_connections: int = Field(
        default=1024,
        ge=1,
        description="past this many open HTTP connections a new connection's request is "
        "answered 503 with Retry-After and the connection closed",
    )
    max_header_count: int = Field(
        default=100, ge=1, le=10_000, description="more request headers answer 431"
    )
    max_header_bytes: int = Field(
        default=32 << 10,
        ge=1024,
        le=1 << 20,
        description="a request line plus headers larger than this answers 431",
    )
    max_in_flight_requests: int = Field(
        default=256,
        ge=1,
        description="beyond this many requests at once (not counting those waiting for room) "
        "only their P30 events are taken (the rest answered DEFERRED); beyond twice this an "
        "HTTP request is refused whole (429) before its body is read; a gRPC request, already "
        "read, is not refused by the door (the gRPC server takes at most 4x this many calls)",
    )
    max_in_flight_events: int = Field(
        default=20_000,
        ge=1,
        description="events taken and not yet answered; P10 is taken up to half of it, P20 "
        "up to 80 %, P30 up to all of it (the P10 and P20 shares shrink while the write path "
        "queues: door_queue_target_ms); past its share a request without P30 waits for room "
        "(door_hold_ms) and a class's other events are answered DEFERRED with a retry hint "
        "(the door, docs/flow-control.md)",
    )
    door_queue_target_ms: int = Field(
        default=100,
        ge=1,
        le=60_000,
        description="how much longer than unloaded the write path (ingest → publisher → "
        "Kafka and back) may take before the door takes fewer P10 and P20 events, so that "
        'P30 never waits behind a long queue (docs/flow-control.md, "The door")',
    )
    door_hold_ms: int = Field(
        default=10_000,
        ge=0,
        le=600_000,
        description="how long a request without P30 events waits inside ingest for room "
        "before the events that do not fit are answered DEFERRED (0: never wait; keep it "
        "below the clients' timeout, 30 s in the client library)",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="unbound keys: may write any company, source and class (prefer "
        "tenant_keys). With no key at all (none here, in tenant_keys or tenant_keys_file) "
        "requests need none, which only loopback outside production allows",
    )
    tenant_keys: list[TenantKey] = Field(
        default_factory=list,
        description="API keys bound to a tenant: {tenant, key_sha256, company_ids, "
        "source_names, classes}; a request outside its key's grant is refused 403 / "
        "PERMISSION_DENIED, nothing written (docs/security.md)",
    )
    tenant_keys_file: Path | None = Field(
        default=None,
        description="TOML file of [[keys]] tables shaped like tenant_keys (e.g. a mounted "
        "Secret), read at start-up and added to them",
    )
    tls: IngestTlsSettings | None = Field(
        default=None,
        description="TLS on the HTTP and gRPC ports; required in production when either "
        "binds beyond loopback",
    )
    admin_host: str = Field(
        default="127.0.0.1",
        description="bind address of the admin port: /status with the hot companies, the "
        "status page that shows them, /metrics, /readyz. Plain HTTP, no key: it lists "
        "company ids, keep it on loopback or a private network",
    )
    admin_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="the admin port (0: picked by the OS); with workers > 1 each worker "
        "shares it and answers for itself",
    )
    default_class: Priority = Priority.P20
    class_rules: list[ClassRuleSettings] = Field(default_factory=list)
    dynamic_config_path: Path | None = None

    def classifier(self) -> StaticClassifier:
        """The static classifier of ``class_rules`` and ``default_class``.

        Ingest classifies with it, and so does the failed-writes processor for events a
        client captured before ingest saw them: one set of rules, one answer.
        """
        rules = [
            ClassRule(r.priority, r.source_name, r.statistic_key, r.company_id)
            for r in self.class_rules
        ]
        return StaticClassifier(rules, self.default_class)

    @model_validator(mode="after")
    def _workers_need_fixed_ports(self) -> IngestSettings:
        if self.workers > 1 and 0 in (self.http_port, self.grpc_port):
            raise ValueError(
                "workers: more than one worker needs fixed http_port and grpc_port "
                "(port 0 would give each worker a different port)"
            )
        return self


class PublisherSettings(_Frozen):
    """Prep publisher (docs/design.md, "Prep publisher")."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    liveness_port: int = Field(default=50099, ge=0, le=65535)
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    rollout_producers_enabled: bool = False
    lanes: dict[TunedProducer, LaneTuning] = Field(
        default_factory=_default_tuning,
        description="producer tuning of each lane and of failed writes; all five are needed",
    )
    max_events_per_request: int = Field(default=10_000, ge=1)
    max_concurrent_rpcs: int = Field(
        default=512, ge=1, description="more answer RESOURCE_EXHAUSTED (bounded memory)"
    )
    dynamic_config_path: Path | None = None
    shutdown_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _all_lanes_tuned(self) -> PublisherSettings:
        missing = {*LANES, "failed_writes"} - set(self.lanes)
        if missing:
            raise ValueError(f"lanes: no tuning for {sorted(missing)}")
        return self


class RecoverySettings(_Frozen):
    """Failed-writes processor (docs/design.md, "Failed-writes processor")."""

    status_host: str = Field(default="127.0.0.1", description="bind address of status HTTP")
    metrics_port: int = Field(default=9104, ge=0, le=65535)
    group_id: str = "eventgw-failed-writes"
    backup_scan_interval_s: float = Field(default=5.0, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    delivery_timeout_ms: int = Field(default=30_000, ge=1000)
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="replays of an event that fail transiently before it is parked in the DLQ "
        "(permanent failures are parked at once)",
    )
    read_back_max_records: int = Field(
        default=200_000,
        ge=1,
        description="records read back at most from the lanes, retry topics and DLQ when a "
        "failed-writes partition is taken over, to find the events already replayed after its "
        "last commit; past it the rest are replayed again (duplicates)",
    )
    read_back_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="no read-back step starts after this; past it the rest are replayed again "
        "(duplicates)",
    )
    # Client-captured events are classified with ingest's rules (IngestSettings.classifier).

    @model_validator(mode="after")
    def _backoff_capped_above_start(self) -> RecoverySettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_initial_s: {self.backoff_initial_s} is above backoff_max_s "
                f"({self.backoff_max_s}); the first delay cannot exceed the cap"
            )
        return self


class OrchestratorSettings(_Frozen):
    """Orchestrator (docs/design.md, "Orchestrator")."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    status_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    index: int = Field(default=0, ge=0, description="globally unique replica index (pod ordinal)")
    number_of_replicas: int = Field(default=1, ge=1, description="must match the deployment")
    group_id: str = "eventgw-orchestrator"
    buffer_budget_bytes: int = Field(default=256 << 20, ge=1 << 16)
    lane_shares: dict[BufferLane, float] = Field(
        default_factory=lambda: dict(DEFAULT_LANE_SHARES),
        description="pause a lane when buffered bytes reach share x budget; every lane "
        "needs a share",
    )
    resume_hysteresis: float = Field(default=0.9, gt=0, le=1)
    late_share_every: int = Field(
        default=20, ge=2, description="every k-th served task goes to late/offload work"
    )
    lease_s: float = Field(default=60.0, gt=0, description="served task comes back after this")
    max_attempts: int = Field(default=5, ge=1, le=100)
    memory_retry_max_s: float = Field(
        default=60.0, gt=0, description="NACK delays below this retry from memory"
    )
    enable_retry_consumer: bool = True
    commit_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="offsets (and the finished runs above them) are committed this often; "
        "after a crash, what finished since the last commit is served again",
    )
    flow_control_interval_s: float = Field(
        default=2.0, gt=0, description="how often INCREASE/DECREASE signals are published"
    )
    fetch_max_records: int = Field(default=2000, ge=1)
    lane_ready_s: float = Field(
        default=2.0,
        gt=0,
        description="a lane's partitions pause while it holds more ready tasks than the "
        "workers take in this many seconds (at least lane_min_ready): a flood waits in "
        "Kafka, not in memory or in the consumer's fetch queue ahead of other lanes",
    )
    lane_min_ready: int = Field(
        default=2000, ge=1, description="the ready tasks a lane may always hold (lane_ready_s)"
    )
    shutdown_timeout_s: float = Field(default=20.0, gt=0)
    rollout_orchestrator_config_key: str = Field(
        default="rollout_orchestrator_indexes",
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="dynamic-config key listing the replica indexes that serve the rollout "
        "cluster (the others serve kafka.active_cluster_fleet); a change moves a running "
        "replica: it drains, then serves the other cluster",
    )
    dynamic_config_path: Path | None = Field(
        default=None,
        description="the dynamic config file (the same one the publisher reads): where "
        "the replica indexes of the rollout fleet are listed. None: no replica is listed",
    )

    @model_validator(mode="after")
    def _every_lane_has_a_share(self) -> OrchestratorSettings:
        missing = set(BUFFER_LANES) - set(self.lane_shares)
        if missing:
            raise ValueError(f"lane_shares: no share for {sorted(missing)}")
        return self

    @model_validator(mode="after")
    def _index_in_range(self) -> OrchestratorSettings:
        if self.index >= self.number_of_replicas:
            raise ValueError(
                f"index: {self.index} is not below number_of_replicas={self.number_of_replicas}"
            )
        return self


class ProcessorSettings(_Frozen):
    """Processor workers (docs/design.md, "Processor workers")."""

    orchestrators: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:50052"], description="orchestrator gRPC host:port list"
    )
    orchestrator_address_template: str | None = Field(
        default=None,
        pattern=r"\{index\}",
        description="discovery: when set, the worker serves the orchestrators at this "
        "address for every index below orchestrator.number_of_replicas (both fleets: "
        "indexes are global), e.g. `eventgw-orchestrator-{index}.eventgw-orchestrator:50052`"
        " for a StatefulSet, instead of the orchestrators list",
    )
    handler: str = Field(
        default="eventgw.processor.handlers:log_event", description="module:function"
    )
    concurrency: int = Field(default=64, ge=1, le=10_000, description="handler calls at once")
    prefetch_window_ms: float = Field(
        default=10.0,
        ge=0,
        le=10_000,
        description="besides the tasks it runs, a worker holds (unstarted) only what its "
        "slots can start within this time, measured from its handlers' mean duration; so a "
        "new urgent task waits at most about this long behind work already handed out",
    )
    max_prefetch: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="upper bound of the prefetch, whatever the handlers' speed",
    )
    max_tasks: int = Field(
        default=0,
        ge=0,
        description="stop after handling (dry run: showing) this many tasks; 0: run until stopped",
    )
    execute: bool = Field(default=True, description="False: dry run — fetch, show, release")
    status_host: str = Field(default="127.0.0.1", description="bind address of status HTTP")
    metrics_port: int = Field(default=9105, ge=0, le=65535)
    shutdown_timeout_s: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _template_expands(self) -> ProcessorSettings:
        template = self.orchestrator_address_template
        if template is not None:
            try:
                template.format(index=0)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"orchestrator_address_template: {template!r} must contain {{index}} and "
                    f"no other {{field}} ({exc!r})"
                ) from None
        return self


class EventGwSettings(BaseSettings):
    """Every static setting, validated at start-up. Sections mirror the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="EVENTGW_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    environment: Environment = Field(
        default="development",
        description="production: every configured Kafka cluster must be SASL_SSL; staging: "
        "every topic name (and the S3 bucket or prefix) must contain 'staging'",
    )
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    backup: BackupSettings = BackupSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    ingest: IngestSettings = IngestSettings()
    publisher: PublisherSettings = PublisherSettings()
    recovery: RecoverySettings = RecoverySettings()
    orchestrator: OrchestratorSettings = OrchestratorSettings()
    processor: ProcessorSettings = ProcessorSettings()
    internal_auth: InternalAuthSettings = InternalAuthSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables override the settings file (passed as init kwargs)."""
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _production_backup_signed(self) -> EventGwSettings:
        # A bucket is shared infrastructure: unsigned, anyone who can write it could put
        # events into the lanes through the failed-writes processor.
        if self.environment == "production" and self.backup.s3_bucket and not self.backup.hmac_key:
            raise ValueError(
                "backup.hmac_key: required with an S3 backup store in production "
                "(sign the objects so that none can be forged)"
            )
        return self

    @model_validator(mode="after")
    def _production_is_sasl_ssl(self) -> EventGwSettings:
        if self.environment != "production":
            return self
        for name, cluster in self.kafka.configured().items():
            if cluster.security_protocol != "SASL_SSL":
                # "<field>: <text>" lets load_settings name the offending field.
                hint = " (or turn it off: EVENTGW_KAFKA__ROLLOUT=null)" if name == "rollout" else ""
                raise ValueError(
                    f"kafka.{name}.security_protocol: environment=production needs SASL_SSL "
                    f"for every cluster, not {cluster.security_protocol}{hint}"
                )
        return self

    @model_validator(mode="after")
    def _ingest_exposed_needs_keys_and_tls(self) -> EventGwSettings:
        # Beyond loopback anyone on the network could write any company's events, so a key
        # is required there, and in production wherever it binds (docs/security.md).
        i = self.ingest
        exposed = [h for h in (i.http_host, i.grpc_host) if not is_loopback(h)]
        production = self.environment == "production"
        if (exposed or production) and not (i.api_keys or i.tenant_keys or i.tenant_keys_file):
            why = f"ingest binds {exposed[0]}" if exposed else "environment = production"
            raise ValueError(
                f"ingest.tenant_keys: API keys are required when {why} (give tenant_keys, "
                "tenant_keys_file or api_keys; keys are optional only on loopback outside "
                "production)"
            )
        if exposed and production and i.tls is None:
            raise ValueError(
                f"ingest.tls: required in production when ingest binds {exposed[0]} (set "
                "ingest.tls.cert_file and ingest.tls.key_file)"
            )
        return self

    @model_validator(mode="after")
    def _staging_names(self) -> EventGwSettings:
        if self.environment != "staging":
            return self
        wrong = [
            f"topics.{k}"
            for k, v in self.topics.model_dump().items()
            if isinstance(v, str) and "staging" not in v
        ]
        b = self.backup
        if b.s3_bucket and "staging" not in b.s3_bucket and "staging" not in b.s3_prefix:
            wrong.append("backup.s3_prefix")
        if wrong:
            # "<field>: <text>" lets load_settings name the first offending field.
            raise ValueError(
                f"{wrong[0]}: environment=staging but these do not contain 'staging': {wrong}"
            )
        return self


def load_settings(path: Path | None = None) -> EventGwSettings:
    """Load and validate settings; raises ConfigError naming the first bad field.

    Args:
        path: TOML settings file; defaults to ``$EVENTGW_SETTINGS_FILE`` when set.
    """
    env_file = os.environ.get("EVENTGW_SETTINGS_FILE")
    file_path = path or (Path(env_file) if env_file else None)
    data: dict[str, Any] = {}
    if file_path is not None:
        # The file's values go in as init values, which sit below the environment
        # (settings_customise_sources). The source is built here rather than listed there
        # because its path is chosen per call (--settings or $EVENTGW_SETTINGS_FILE), and
        # pydantic-settings takes a run-time path only through the source's constructor.
        # It skips a file that is not there; a named settings file that is absent is refused.
        if not file_path.is_file():
            reason = "not a file" if file_path.exists() else "no such file"
            raise ConfigError("settings_file", f"{file_path}: {reason}")
        try:
            data = TomlConfigSettingsSource(EventGwSettings, toml_file=file_path)()
        except OSError as exc:
            raise ConfigError("settings_file", f"{file_path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                "settings_file", f"{file_path}: not valid UTF-8 at byte {exc.start}"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("settings_file", f"{file_path}: {exc}") from exc
        except RecursionError:
            raise ConfigError("settings_file", f"{file_path}: nested too deeply") from None
    try:
        return EventGwSettings(**data)
    except SettingsError as exc:
        raise _undecodable_environment(exc) from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        # A model-level check's message starts with "<field>: ": at the top level that is the
        # whole field; in a section (e.g. ingest) it names the field within the section.
        name, sep, rest = message.partition(": ")
        if not field:
            field, message = name, rest
        elif sep and name.isidentifier():
            field, message = f"{field}.{name}", rest
        raise ConfigError(field or "settings", message) from exc


_SETTINGS_ERROR_FIELD = re.compile(r'field "(\w+)"')


def _undecodable_environment(exc: SettingsError) -> ConfigError:
    """The environment variable whose JSON pydantic-settings could not decode, named.

    A list or model given in the environment (``EVENTGW_INGEST__TENANT_KEYS='[...]'``, e.g.
    from a Kubernetes Secret) must be JSON; pydantic-settings reports only the top-level
    section ("ingest") with a traceback. A value that starts like JSON (``[`` or ``{``) and
    does not parse is the culprit; it is named with the JSON error's position, never its text
    (it may hold a secret).
    """
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith("EVENTGW_") or not value.lstrip().startswith(("[", "{")):
            continue
        try:
            json.loads(value)
        except ValueError as err:
            field = name[len("EVENTGW_") :].lower().replace("__", ".")
            return ConfigError(field, f"${name} is not valid JSON: {err}")
    match = _SETTINGS_ERROR_FIELD.search(str(exc))
    section = match.group(1) if match else "settings"
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    return ConfigError(
        section,
        f"an EVENTGW_{section.upper()}__... environment variable is not valid JSON{cause}",
    )
