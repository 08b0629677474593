"""Tests for eventgw.config.settings: env > TOML file > defaults; errors name the field."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pydantic
import pytest
from pydantic import SecretStr

from eventgw.config.settings import (
    BackupSettings,
    EventGwSettings,
    IngestSettings,
    KafkaClusterSettings,
    KafkaSettings,
    TopicSettings,
    load_settings,
)
from eventgw.core.envelope import Priority
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EVENTGW_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTGW_"):
            monkeypatch.delenv(name)


# Production needs SASL_SSL on every cluster: the production cases below are secured.
PRODUCTION_KAFKA_TOML = "".join(
    f"[kafka.{name}]\nbootstrap_servers = '{name}:9093'\nsecurity_protocol = 'SASL_SSL'\n"
    "sasl_mechanism = 'SCRAM-SHA-512'\nsasl_username = 'svc'\nsasl_password = 'pw'\n"
    for name in ("primary", "rollout")
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eventgw.toml"
    path.write_text(text)
    return path


def staging_topics() -> dict[str, str]:
    return {
        k: f"staging.{v}" for k, v in TopicSettings().model_dump().items() if isinstance(v, str)
    }


def test_defaults_match_the_spec() -> None:
    s = load_settings()
    assert s.environment == "development"
    assert (s.ingest.http_host, s.ingest.http_port, s.ingest.grpc_port) == (
        "127.0.0.1",
        8080,
        50050,
    )
    assert s.publisher.grpc_port == 50051
    assert s.kafka.primary.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.rollout is not None
    assert s.kafka.rollout.bootstrap_servers == "127.0.0.1:9094"
    assert s.topics.p30 == "events.public.p30-events-express-v1"
    assert s.topics.failed_writes == "events.private.failed-writes-v1"
    assert s.ingest.api_keys == []
    assert s.ingest.default_class is Priority.P20


def test_env_var_overrides_a_nested_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTGW_INGEST__HTTP_PORT", "18080")
    monkeypatch.setenv("EVENTGW_KAFKA__PRIMARY__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("EVENTGW_INGEST__API_KEYS", '["key-1", "key-2"]')
    s = load_settings()
    assert s.ingest.http_port == 18080
    assert s.ingest.grpc_port == 50050  # untouched siblings keep their defaults
    assert s.kafka.primary.bootstrap_servers == "k1:9092,k2:9092"
    assert [k.get_secret_value() for k in s.ingest.api_keys] == ["key-1", "key-2"]


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        environment = "production"
        [ingest]
        http_port = 9001
        api_keys = ["a-key-production-needs"]
        max_events_per_request = 50
        default_class = 30
        class_rules = [{ priority = 10, source_name = "backfill*" }]
        [kafka.primary]
        bootstrap_servers = "broker:9092"
        security_protocol = "SASL_SSL"
        sasl_mechanism = "SCRAM-SHA-512"
        sasl_username = "ingest"
        sasl_password = "pw"
        [kafka.rollout]
        bootstrap_servers = "rollout:9092"
        security_protocol = "SASL_SSL"
        sasl_mechanism = "SCRAM-SHA-512"
        sasl_username = "ingest"
        sasl_password = "pw"
        [topics]
        p20 = "my.p20"
        """,
    )
    s = load_settings(path)
    assert s.environment == "production"
    assert s.ingest.http_port == 9001
    assert s.ingest.max_events_per_request == 50
    assert s.ingest.default_class is Priority.P30
    assert s.ingest.class_rules[0].priority is Priority.P10
    assert s.ingest.class_rules[0].source_name == "backfill*"
    assert s.kafka.primary.bootstrap_servers == "broker:9092"
    assert s.topics.p20 == "my.p20"
    assert s.topics.p30 == TopicSettings().p30


def test_settings_file_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EVENTGW_SETTINGS_FILE", str(write(tmp_path, "[ingest]\nhttp_port = 9002\n"))
    )
    assert load_settings().ingest.http_port == 9002


def test_explicit_path_beats_the_settings_file_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[ingest]\nhttp_port = 1\n")
    monkeypatch.setenv("EVENTGW_SETTINGS_FILE", str(other))
    assert load_settings(write(tmp_path, "[ingest]\nhttp_port = 9003\n")).ingest.http_port == 9003


def test_env_beats_file_and_merges_field_by_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[ingest]\nhttp_port = 9004\nmax_body_bytes = 2048\n")
    monkeypatch.setenv("EVENTGW_INGEST__HTTP_PORT", "9005")
    s = load_settings(path)
    assert s.ingest.http_port == 9005
    assert s.ingest.max_body_bytes == 2048  # the file's sibling survives the env override


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[ingest]\nhttp_port = 70000\n", "ingest.http_port"),
        ("[ingest]\nhttp_port = 'eighty'\n", "ingest.http_port"),
        ("[ingest]\nmax_body_bytes = 10\n", "ingest.max_body_bytes"),
        ("[ingest]\ndefault_class = 25\n", "ingest.default_class"),
        ("[ingest]\nbogus = 1\n", "ingest.bogus"),
        ("bogus = 1\n", "bogus"),
        ("environment = 'prod'\n", "environment"),
        ("[kafka.primary]\nbootstrap_servers = ''\n", "kafka.primary.bootstrap_servers"),
        ("[topics]\npartitions = 0\n", "topics.partitions"),
        ("[backup]\ns3_access_key_id = 'AKIA'\n", "backup.s3_secret_access_key"),
        (
            "[publisher.lanes.p30]\nlinger_ms = 1\nbatch_size = 1\n",
            "publisher.lanes.p30.batch_size",
        ),
        (
            "[publisher.lanes.offlaod]\nlinger_ms = 1\nbatch_size = 2048\n",
            "publisher.lanes.offlaod.[key]",
        ),
        ("[publisher.lanes.p30]\nlinger_ms = 1\nbatch_size = 2048\n", "publisher.lanes"),
        ("[orchestrator.lane_shares]\np31 = 0.5\n", "orchestrator.lane_shares.p31.[key]"),
        ("[orchestrator.lane_shares]\np30 = 0.9\n", "orchestrator.lane_shares"),
        ("[kafka]\nactive_cluster_fleet = 'default'\n", "kafka.active_cluster_fleet"),
        ("[recovery]\nbackoff_initial_s = 60\n", "recovery.backoff_initial_s"),
        (
            "[orchestrator]\nrollout_orchestrator_config_key = 'Rollout Key'\n",
            "orchestrator.rollout_orchestrator_config_key",
        ),
        (
            "[processor]\norchestrator_address_template = 'orch:50052'\n",
            "processor.orchestrator_address_template",
        ),
        (
            "[processor]\norchestrator_address_template = 'orch-{index}-{zone}:1'\n",
            "processor.orchestrator_address_template",
        ),
    ],
)
def test_config_error_names_the_field(tmp_path: Path, toml: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, toml))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        pytest.param(b"[ingest]\nhttp_port = 9001\n# caf\xe9\n", "not valid UTF-8", id="latin-1"),
        pytest.param(b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep"),
        pytest.param(b"[ingest\n", "settings_file", id="bad-toml"),
    ],
)
def test_an_unreadable_settings_file_is_a_config_error(
    tmp_path: Path, content: bytes, detail: str
) -> None:
    path = tmp_path / "eventgw.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == "settings_file"
    assert str(path) in info.value.message
    assert detail in str(info.value)


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        pytest.param(
            "environment = 'production'\n[backup]\ns3_bucket = 'events-backup'\n"
            + PRODUCTION_KAFKA_TOML,
            "backup.hmac_key",
            id="s3-in-production-without-a-key",
        ),
        pytest.param("[backup]\nhmac_key = 'short'\n", "backup.hmac_key", id="short-key"),
        pytest.param(
            "[backup]\nhmac_previous_keys = ['" + "o" * 32 + "']\n",
            "backup.hmac_key",
            id="previous-keys-without-a-key",
        ),
        pytest.param(
            "[backup]\naccept_unsigned_objects = true\n",
            "backup.hmac_key",
            id="accept-unsigned-without-a-key",
        ),
        pytest.param(
            "[backup]\nhmac_key = '" + "k" * 32 + "'\nhmac_previous_keys = ['x']\n",
            "backup.hmac_previous_keys",
            id="short-previous-key",
        ),
    ],
)
def test_backup_signing_settings_are_checked_at_start(
    tmp_path: Path, toml: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, toml))
    assert info.value.field == field


def test_backup_signing_settings_become_the_stores_auth(tmp_path: Path) -> None:
    production = load_settings(
        write(
            tmp_path,
            "environment = 'production'\n[ingest]\napi_keys = ['key']\n"
            "[backup]\ns3_bucket = 'b'\n"
            f"hmac_key = '{'k' * 32}'\nhmac_previous_keys = ['{'o' * 32}']\n"
            + PRODUCTION_KAFKA_TOML,
        )
    )
    auth = production.backup.auth()
    assert auth.key == b"k" * 32
    assert auth.previous_keys == (b"o" * 32,)
    assert auth.signature_required
    assert "k" * 32 not in repr(production), "the key never shows"
    assert load_settings(write(tmp_path, "")).backup.auth().key is None


def test_config_error_from_env_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTGW_INGEST__HTTP_PORT", "not-a-port")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "ingest.http_port"


def test_time_scale_is_not_an_operator_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrinking retry delays and leases is for tests (``OrchestratorService(time_scale=…)``):
    a configuration that still sets it is refused, naming it."""
    monkeypatch.setenv("EVENTGW_ORCHESTRATOR__TIME_SCALE", "0.5")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "orchestrator.time_scale"


def test_unreadable_or_malformed_file_is_a_settings_file_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_settings(tmp_path / "absent.toml")
    assert missing.value.field == "settings_file"
    assert "absent.toml: no such file" in missing.value.message
    # pydantic-settings' TOML source skips a path that is not a file; a named one is refused.
    with pytest.raises(ConfigError) as directory:
        load_settings(tmp_path)
    assert directory.value.field == "settings_file"
    assert "not a file" in directory.value.message
    with pytest.raises(ConfigError) as malformed:
        load_settings(write(tmp_path, "[ingest\nhttp_port = 1\n"))
    assert malformed.value.field == "settings_file"
    assert "eventgw.toml" in malformed.value.message


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(pydantic.ValidationError):
        s.ingest.http_port = 1


# --- staging --------------------------------------------------------------------------------


def test_staging_refuses_names_without_staging(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "environment = 'staging'\n"))
    assert "'staging'" in info.value.message
    assert "topics.p30" in info.value.message
    assert "topics.failed_writes" in info.value.message


def test_staging_refuses_a_single_topic_without_staging() -> None:
    topics = {**staging_topics(), "dlq": "events.public.events-express-v1-dlq"}
    with pytest.raises(pydantic.ValidationError, match=r"topics\.dlq") as info:
        EventGwSettings(environment="staging", topics=TopicSettings.model_validate(topics))
    assert "topics.p30" not in str(info.value)


def test_staging_accepts_when_every_name_contains_staging() -> None:
    s = EventGwSettings(
        environment="staging",
        topics=TopicSettings.model_validate(staging_topics()),
        backup=BackupSettings(s3_bucket="eventgw-staging-backup"),
    )
    assert s.environment == "staging"
    assert EventGwSettings(
        environment="staging",
        topics=TopicSettings.model_validate(staging_topics()),
        backup=BackupSettings(s3_bucket="eventgw-backup", s3_prefix="staging/backup/"),
    )


def test_staging_refuses_an_s3_location_without_staging() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"backup\.s3_prefix"):
        EventGwSettings(
            environment="staging",
            topics=TopicSettings.model_validate(staging_topics()),
            backup=BackupSettings(s3_bucket="eventgw-prod"),
        )


def test_staging_names_via_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["environment = 'staging'", "[topics]"]
    lines += [f"{k} = '{v}'" for k, v in staging_topics().items()]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert load_settings(path).topics.p30.startswith("staging.")
    monkeypatch.setenv("EVENTGW_TOPICS__P30", "events.public.p30")
    with pytest.raises(ConfigError, match=r"topics\.p30"):
        load_settings(path)


def test_other_environments_do_not_check_names() -> None:
    secure = KafkaClusterSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password=SecretStr("p"),
    )
    kafka = KafkaSettings(primary=secure, rollout=None)
    keyed = IngestSettings(api_keys=[SecretStr("key")])  # production needs ingest keys
    for env in ("development", "production"):
        settings = EventGwSettings(environment=env, kafka=kafka, ingest=keyed)
        assert settings.topics.p30 == TopicSettings().p30


def test_staging_config_error_field_is_the_first_offending_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "environment = 'staging'\n"))
    assert info.value.field == "topics.p30"


def test_staging_s3_check_does_not_match_across_bucket_and_prefix() -> None:
    with pytest.raises(pydantic.ValidationError):
        EventGwSettings(
            environment="staging",
            topics=TopicSettings.model_validate(staging_topics()),
            backup=BackupSettings(s3_bucket="acme-stag", s3_prefix="ing/"),
        )


# --- Kafka security -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"sasl_mechanism": "SCRAM-SHA-512"},
        {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u"},
        {"sasl_username": "u", "sasl_password": "p"},
        {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "", "sasl_password": "p"},
    ],
)
def test_sasl_ssl_without_complete_credentials_is_refused(given: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError, match="SASL_SSL needs"):
        KafkaClusterSettings.model_validate(
            {"bootstrap_servers": "b:9093", "security_protocol": "SASL_SSL", **given}
        )


def test_sasl_ssl_with_credentials_is_accepted_and_the_password_stays_secret() -> None:
    c = KafkaClusterSettings.model_validate(
        {
            "bootstrap_servers": "b:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password": "hunter2",
        }
    )
    assert c.sasl_password is not None
    assert c.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(c)


def test_sasl_ssl_without_credentials_via_file_names_the_cluster(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[kafka.primary]\nbootstrap_servers = 'b:9093'\nsecurity_protocol = 'SASL_SSL'\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == "kafka.primary"
    assert "SASL_SSL" in info.value.message


def test_sasl_ssl_credentials_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "[kafka.primary]\nbootstrap_servers = 'b:9093'\nsecurity_protocol = 'SASL_SSL'\n"
        "sasl_mechanism = 'SCRAM-SHA-512'\nsasl_username = 'svc'\n",
    )
    monkeypatch.setenv("EVENTGW_KAFKA__PRIMARY__SASL_PASSWORD", "from-env")
    s = load_settings(path)
    assert s.kafka.primary.sasl_password is not None
    assert s.kafka.primary.sasl_password.get_secret_value() == "from-env"


def test_ingest_limits_have_floors() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_payload_bytes"):
        IngestSettings(max_payload_bytes=1)
    with pytest.raises(pydantic.ValidationError, match="max_events_per_request"):
        IngestSettings(max_events_per_request=0)


def test_ingest_workers_need_fixed_ports(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="workers: more than one worker"):
        IngestSettings(workers=2, http_port=0)
    with pytest.raises(pydantic.ValidationError, match="workers: more than one worker"):
        IngestSettings(workers=2, grpc_port=0)
    with pytest.raises(pydantic.ValidationError, match="workers"):
        IngestSettings(workers=0)
    assert IngestSettings(workers=2).workers == 2
    assert IngestSettings(workers=1, http_port=0).http_port == 0  # one process may take any port
    path = write(tmp_path, "[ingest]\nworkers = 3\nhttp_port = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == "ingest.workers"
    assert info.value.message.startswith("more than one worker needs fixed")


# --- ingest keys and TLS: required beyond loopback / in production ---------------------------

TLS = "[ingest.tls]\ncert_file = '/certs/tls.crt'\nkey_file = '/certs/tls.key'\n"


@pytest.mark.parametrize(
    ("toml", "field", "words"),
    [
        ("[ingest]\nhttp_host = '0.0.0.0'\n", "ingest.tenant_keys", "ingest binds 0.0.0.0"),
        ("[ingest]\ngrpc_host = '10.1.2.3'\n", "ingest.tenant_keys", "ingest binds 10.1.2.3"),
        ("[ingest]\nhttp_host = '::'\n", "ingest.tenant_keys", "ingest binds ::"),
        (
            "environment = 'production'\n" + PRODUCTION_KAFKA_TOML,
            "ingest.tenant_keys",
            "environment = production",
        ),
        (
            "environment = 'production'\n[ingest]\nhttp_host = '0.0.0.0'\napi_keys = ['k']\n"
            + PRODUCTION_KAFKA_TOML,
            "ingest.tls",
            "required in production when ingest binds 0.0.0.0",
        ),
    ],
)
def test_ingest_beyond_loopback_or_in_production_needs_keys_and_tls(
    tmp_path: Path, toml: str, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, toml))
    assert info.value.field == field
    assert words in info.value.message


@pytest.mark.parametrize(
    "toml",
    [
        "",  # the README's quick start: loopback, no key
        "[ingest]\nhttp_host = 'localhost'\ngrpc_host = '::1'\n",
        "[ingest]\nhttp_host = '127.0.0.2'\n",
        "[ingest]\nhttp_host = '0.0.0.0'\napi_keys = ['k']\n",  # TLS optional outside production
        # In production on loopback TLS is optional; beyond it, keys and TLS do it.
        "environment = 'production'\n[ingest]\napi_keys = ['k']\n" + PRODUCTION_KAFKA_TOML,
        "environment = 'production'\n[ingest]\nhttp_host = '0.0.0.0'\n"
        "tenant_keys_file = '/keys/keys.toml'\n" + TLS + PRODUCTION_KAFKA_TOML,
    ],
)
def test_keys_are_optional_on_loopback_and_tls_outside_production(
    tmp_path: Path, toml: str
) -> None:
    load_settings(write(tmp_path, toml))


def test_tenant_keys_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Kubernetes Secret can be handed over as JSON in the environment."""
    digest = "ab" * 32
    monkeypatch.setenv(
        "EVENTGW_INGEST__TENANT_KEYS",
        f'[{{"tenant": "acme", "key_sha256": "{digest}", "company_ids": ["acme"]}}]',
    )
    monkeypatch.setenv("EVENTGW_INGEST__HTTP_HOST", "0.0.0.0")
    (key,) = load_settings().ingest.tenant_keys
    assert (key.tenant, key.company_ids, key.source_names) == ("acme", ["acme"], ["*"])
    assert key.classes == ["P30", "P20", "P10"]
    assert digest not in repr(key)


def test_malformed_json_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a pydantic-settings traceback naming only "ingest", and exit 1."""
    digest = "cd" * 32
    monkeypatch.setenv(
        "EVENTGW_INGEST__TENANT_KEYS", f'[{{"tenant": "acme", "key_sha256": "{digest}",'
    )
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "ingest.tenant_keys"
    assert str(info.value).startswith(
        "ingest.tenant_keys: $EVENTGW_INGEST__TENANT_KEYS is not valid JSON: Expecting"
    )
    assert digest not in str(info.value), "the value may hold a secret"


def test_a_list_setting_that_is_not_json_at_all_names_its_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTGW_INGEST__TENANT_KEYS", "acme")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "ingest"
    assert "EVENTGW_INGEST__... environment variable is not valid JSON" in str(info.value)


def test_a_bad_tenant_key_names_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EVENTGW_INGEST__TENANT_KEYS",
        '[{"tenant": "acme", "key_sha256": "not-hex", "company_ids": ["acme"]}]',
    )
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "ingest.tenant_keys.0.key_sha256"
