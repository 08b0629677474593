"""The admin client connects like the cluster's other clients (security included)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr

from eventgw.config.settings import KafkaClusterSettings
from eventgw.kafka.admin import admin_config

if TYPE_CHECKING:
    from pathlib import Path


def test_a_configured_cluster_brings_its_security_and_overrides(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    cluster = KafkaClusterSettings(
        bootstrap_servers="kafka:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="eventgw",
        sasl_password=SecretStr("s3cret"),
        ssl_ca_location=ca,
        client_overrides={"socket.keepalive.enable": "true"},
    )
    conf = admin_config(cluster)
    assert conf["bootstrap.servers"] == "kafka:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
        "SCRAM-SHA-512",
        "eventgw",
        "s3cret",
    )
    assert conf["ssl.ca.location"] == str(ca)
    assert conf["socket.keepalive.enable"] == "true"


def test_a_bare_bootstrap_is_plaintext() -> None:
    conf = admin_config("127.0.0.1:9092")
    assert conf["bootstrap.servers"] == "127.0.0.1:9092"
    assert "security.protocol" not in conf
    assert "sasl.password" not in conf
