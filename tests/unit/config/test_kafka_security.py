"""Kafka security settings: typed TLS files, overrides that cannot weaken security, production.

Every refusal is checked through ``load_settings`` too, where it must name the field.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pydantic
import pytest

from eventgw.config.settings import EventGwSettings, KafkaClusterSettings, load_settings
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "svc",
    "sasl_password": "pw",
}
SASL_TOML = (
    "security_protocol = 'SASL_SSL'\nsasl_mechanism = 'SCRAM-SHA-512'\n"
    "sasl_username = 'svc'\nsasl_password = 'pw'\n"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EVENTGW_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTGW_"):
            monkeypatch.delenv(name)


def load(tmp_path: Path, text: str) -> EventGwSettings:
    path = tmp_path / "eventgw.toml"
    path.write_text(text)
    return load_settings(path)


def refusal(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


# --- typed TLS files ---------------------------------------------------------------------------


def test_tls_files_are_accepted_with_sasl_ssl(tmp_path: Path, pem: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("key")
    cluster = KafkaClusterSettings.model_validate(
        {
            "bootstrap_servers": "b:9093",
            "ssl_ca_location": pem,
            "ssl_certificate_location": pem,
            "ssl_key_location": key,
            "ssl_key_password": "kp",
            **SASL,
        }
    )
    assert (cluster.ssl_ca_location, cluster.ssl_key_location) == (pem, key)
    assert "kp" not in repr(cluster)


def test_a_missing_ca_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    err = refusal(
        tmp_path,
        f"[kafka.primary]\nbootstrap_servers = 'b:9093'\n{SASL_TOML}"
        f"ssl_ca_location = '{tmp_path / 'absent.pem'}'\n",
    )
    assert err.field == "kafka.primary.ssl_ca_location"
    assert "absent.pem is not a file" in err.message


def test_tls_files_with_plaintext_are_refused(tmp_path: Path, pem: Path) -> None:
    err = refusal(
        tmp_path, f"[kafka.primary]\nbootstrap_servers = 'b:9093'\nssl_ca_location = '{pem}'\n"
    )
    assert err.field == "kafka.primary.ssl_ca_location"
    assert "only with security_protocol SASL_SSL" in err.message


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"ssl_certificate_location": "cert"}, "ssl_key_location"),
        ({"ssl_key_location": "key"}, "ssl_key_location"),
        ({"ssl_key_password": "kp"}, "ssl_key_password"),
    ],
)
def test_mutual_tls_needs_certificate_and_key_together(
    tmp_path: Path, pem: Path, given: dict[str, str], field: str
) -> None:
    fields: dict[str, Any] = {k: (pem if v in ("cert", "key") else v) for k, v in given.items()}
    with pytest.raises(pydantic.ValidationError, match=f"{field}: "):
        KafkaClusterSettings.model_validate({"bootstrap_servers": "b:9093", **SASL, **fields})


# --- client_overrides cannot weaken security ---------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "security.protocol",
        "sasl.mechanism",
        "sasl.password",
        "sasl.jaas.config",
        "ssl.ca.location",
        "ssl.endpoint.identification.algorithm",
        "ssl.cipher.suites",
        "enable.ssl.certificate.verification",
        "enable.sasl.oauthbearer.unsecure.jwt",
        "plugin.library.paths",
        "bootstrap.servers",
    ],
)
def test_security_overrides_are_refused(key: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"'{key}' is"):
        KafkaClusterSettings.model_validate(
            {"bootstrap_servers": "b:9093", "client_overrides": {key: "x"}, **SASL}
        )


def test_an_override_of_verification_names_the_field_and_key(tmp_path: Path) -> None:
    err = refusal(
        tmp_path,
        "[kafka.rollout]\nbootstrap_servers = 'b:9093'\n"
        "client_overrides = { 'enable.ssl.certificate.verification' = 'false' }\n",
    )
    assert err.field == "kafka.rollout.client_overrides"
    assert "'enable.ssl.certificate.verification' is security configuration" in err.message


def test_a_typed_property_override_points_at_its_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="typed field ssl_ca_location"):
        KafkaClusterSettings(
            bootstrap_servers="b:9093", client_overrides={"ssl.ca.location": "/etc/ca.pem"}
        )


def test_other_overrides_pass_through() -> None:
    cluster = KafkaClusterSettings(
        bootstrap_servers="b:9093", client_overrides={"socket.keepalive.enable": "true"}
    )
    assert cluster.client_overrides == {"socket.keepalive.enable": "true"}


# --- production is SASL_SSL --------------------------------------------------------------------


def test_production_refuses_a_plaintext_primary(tmp_path: Path) -> None:
    err = refusal(tmp_path, "environment = 'production'\n")
    assert err.field == "kafka.primary.security_protocol"
    assert "environment=production needs SASL_SSL" in err.message


def test_production_refuses_the_default_plaintext_rollout(tmp_path: Path) -> None:
    err = refusal(
        tmp_path,
        f"environment = 'production'\n[kafka.primary]\nbootstrap_servers = 'b:1'\n{SASL_TOML}",
    )
    assert err.field == "kafka.rollout.security_protocol"
    assert "EVENTGW_KAFKA__ROLLOUT=null" in err.message


def test_production_refuses_a_plaintext_fallback(tmp_path: Path) -> None:
    err = refusal(
        tmp_path,
        "environment = 'production'\n"
        f"[kafka.primary]\nbootstrap_servers = 'b:1'\n{SASL_TOML}"
        f"[kafka.rollout]\nbootstrap_servers = 'b:2'\n{SASL_TOML}"
        "[kafka.fallback]\nbootstrap_servers = 'b:3'\n",
    )
    assert err.field == "kafka.fallback.security_protocol"


def test_production_accepts_sasl_ssl_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTGW_KAFKA__ROLLOUT", "null")
    s = load(
        tmp_path,
        "environment = 'production'\n[ingest]\napi_keys = ['k']\n"  # production: ingest keys
        f"[kafka.primary]\nbootstrap_servers = 'b:1'\n{SASL_TOML}"
        f"[kafka.fallback]\nbootstrap_servers = 'b:3'\n{SASL_TOML}",
    )
    assert s.kafka.rollout is None
    assert set(s.kafka.configured()) == {"primary", "fallback"}


def test_development_may_stay_plaintext(tmp_path: Path) -> None:
    s = load(tmp_path, "environment = 'development'\n")
    assert s.kafka.primary.security_protocol == "PLAINTEXT"
