"""The local broker's spec and configuration files (no JVM started here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from eventgw.kafka.broker_config import (
    BrokerSecurity,
    BrokerSpec,
    default_spec,
    render_properties,
    server_properties,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_default_specs_keep_their_ports_and_data_under_home(tmp_path: Path) -> None:
    primary = default_spec("primary", tmp_path)
    rollout = default_spec("rollout", tmp_path)
    assert (primary.port, primary.controller_port) == (9092, 9093)
    assert (rollout.port, rollout.controller_port) == (9094, 9095)
    assert primary.data_dir == tmp_path / "clusters" / "primary"
    assert primary.log_dir == tmp_path / "clusters" / "primary" / "logs"


def test_an_unknown_default_cluster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown default cluster 'staging'"):
        default_spec("staging", tmp_path)


def test_server_properties_bind_loopback_and_extra_props_win(tmp_path: Path) -> None:
    spec = BrokerSpec(
        name="t",
        port=19000,
        controller_port=19001,
        data_dir=tmp_path,
        extra_props={"num.partitions": "1", "log.retention.ms": "1000"},
    )
    props = server_properties(spec)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19000,CONTROLLER://127.0.0.1:19001"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19001"
    assert props["log.dirs"] == str(tmp_path / "logs")
    assert props["auto.create.topics.enable"] == "false"
    assert (props["num.partitions"], props["log.retention.ms"]) == ("1", "1000")


def test_rendered_properties_escape_backslashes() -> None:
    text = render_properties({"a": "1", "log.dirs": "C:\\kafka\\logs"})
    lines = text.splitlines()
    assert lines[0].startswith("# Written by eventgw")
    assert lines[1:] == ["a=1", "log.dirs=C:\\\\kafka\\\\logs"]
    assert text.endswith("\n")


def secured(tmp_path: Path, *, require_client_certificate: bool = False) -> BrokerSpec:
    return BrokerSpec(
        name="s",
        port=19100,
        controller_port=19101,
        data_dir=tmp_path,
        security=BrokerSecurity(
            users=("eventgw-ingest",), require_client_certificate=require_client_certificate
        ),
    )


def test_a_secured_broker_listens_only_over_tls_and_enforces_acls(tmp_path: Path) -> None:
    props = server_properties(secured(tmp_path), admin_password="pw")
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19100,CONTROLLER://127.0.0.1:19101"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19100"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert "PLAINTEXT" not in " ".join(props.values())
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["listener.name.sasl_ssl.ssl.client.auth"] == "none"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:eventgw-admin;User:CN=eventgw-broker"
    assert (
        'username="eventgw-admin" password="pw"'
        in (props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"])
    )
    assert props["ssl.truststore.location"] == str(tmp_path / "security" / "ca.pem")


def test_client_certificates_can_be_required(tmp_path: Path) -> None:
    props = server_properties(secured(tmp_path, require_client_certificate=True), "pw")
    assert props["listener.name.sasl_ssl.ssl.client.auth"] == "required"


def test_a_secured_broker_needs_the_admin_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the admin password"):
        server_properties(secured(tmp_path))
