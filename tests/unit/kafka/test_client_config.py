"""Typed security settings become client properties in one place (cluster_config)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr

from eventgw.config.settings import KafkaClusterSettings, LaneTuning
from eventgw.kafka.client_config import (
    cluster_config,
    consumer_config,
    producer_config,
    scanner_config,
)

if TYPE_CHECKING:
    from pathlib import Path


def sasl_ssl(tmp_path: Path, **fields: object) -> KafkaClusterSettings:
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    return KafkaClusterSettings(
        bootstrap_servers="kafka:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="orchestrator",
        sasl_password=SecretStr("s3cret"),
        ssl_ca_location=ca,
        **fields,  # type: ignore[arg-type]  # the typed fields of the model, by name
    )


def test_sasl_ssl_verifies_the_broker_against_the_configured_ca(tmp_path: Path) -> None:
    conf = cluster_config(sasl_ssl(tmp_path))
    assert conf["security.protocol"] == "SASL_SSL"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
        "SCRAM-SHA-512",
        "orchestrator",
        "s3cret",
    )
    assert conf["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert conf["enable.ssl.certificate.verification"] is True
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert "ssl.certificate.location" not in conf


def test_mutual_tls_presents_the_client_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert")
    key.write_text("key")
    conf = cluster_config(
        sasl_ssl(
            tmp_path,
            ssl_certificate_location=cert,
            ssl_key_location=key,
            ssl_key_password=SecretStr("kp"),
        )
    )
    assert conf["ssl.certificate.location"] == str(cert)
    assert conf["ssl.key.location"] == str(key)
    assert conf["ssl.key.password"] == "kp"


def test_plaintext_sets_no_tls_or_sasl_property() -> None:
    conf = cluster_config(KafkaClusterSettings(bootstrap_servers="127.0.0.1:9092"))
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not [k for k in conf if k.startswith(("ssl.", "sasl.", "enable.ssl"))]


def test_every_client_kind_keeps_the_security_and_adds_the_overrides(tmp_path: Path) -> None:
    cluster = sasl_ssl(tmp_path, client_overrides={"socket.keepalive.enable": "true"})
    tuning = LaneTuning(linger_ms=1, batch_size=1 << 16)
    for conf in (
        producer_config(cluster, tuning, "p"),
        consumer_config(cluster, "g", "c"),
        scanner_config(cluster, "s"),
    ):
        assert conf["ssl.ca.location"] == str(tmp_path / "ca.pem")
        assert conf["enable.ssl.certificate.verification"] is True
        assert conf["socket.keepalive.enable"] == "true"
