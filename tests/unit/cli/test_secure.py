"""``--secure`` helpers: the secured twin's spec, and the logins each role runs with."""

from __future__ import annotations

import shlex
import stat
from typing import TYPE_CHECKING

from eventgw.cli.secure import (
    SECURE_USERS,
    cluster_settings,
    login_env,
    role_env,
    secure_spec,
    write_env_file,
)
from eventgw.kafka.broker_config import BrokerSpec
from eventgw.kafka.local_broker import LocalBroker

if TYPE_CHECKING:
    from pathlib import Path


def secured_broker(tmp_path: Path, name: str, port: int) -> LocalBroker:
    """A secured broker's files as its start would leave them (no JVM is started)."""
    spec = secure_spec(BrokerSpec(name, port, port + 1, tmp_path / "clusters" / name))
    broker = LocalBroker(spec, tmp_path / "libs")
    broker.credentials.ensure_tls()
    broker.credentials.create_users(SECURE_USERS)
    return broker


def test_the_secured_twin_keeps_the_ports_and_has_its_own_data(tmp_path: Path) -> None:
    plain = BrokerSpec("primary", 9092, 9093, tmp_path / "clusters" / "primary")
    twin = secure_spec(plain)
    assert (twin.port, twin.controller_port) == (9092, 9093)
    assert twin.data_dir == tmp_path / "clusters" / "primary-secure"
    assert twin.security is not None
    assert "eventgw-processor" in twin.security.users
    assert not twin.security.require_client_certificate


def test_a_role_logs_in_as_itself_on_every_cluster(tmp_path: Path) -> None:
    brokers = {
        "primary": secured_broker(tmp_path, "primary", 29092),
        "rollout": secured_broker(tmp_path, "rollout", 29094),
    }
    env = role_env(brokers, "orchestrator")
    for name, broker in brokers.items():
        prefix = f"EVENTGW_KAFKA__{name.upper()}__"
        assert env[f"{prefix}BOOTSTRAP_SERVERS"] == broker.bootstrap
        assert env[f"{prefix}SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env[f"{prefix}SASL_USERNAME"] == "eventgw-orchestrator"
        assert env[f"{prefix}SASL_PASSWORD"] == broker.credentials.password("eventgw-orchestrator")
        assert env[f"{prefix}SSL_CA_LOCATION"] == str(broker.credentials.ca_file)
    # Each cluster has its own passwords.
    assert (
        env["EVENTGW_KAFKA__PRIMARY__SASL_PASSWORD"] != env["EVENTGW_KAFKA__ROLLOUT__SASL_PASSWORD"]
    )


def test_mutual_tls_adds_a_client_certificate_for_the_user(tmp_path: Path) -> None:
    broker = secured_broker(tmp_path, "primary", 29092)
    plain = cluster_settings(broker, "eventgw-tools")
    assert plain.ssl_certificate_location is None
    mutual = cluster_settings(broker, "eventgw-tools", mutual_tls=True)
    assert mutual.ssl_certificate_location is not None
    assert mutual.ssl_certificate_location.name == "eventgw-tools.pem"


def test_the_env_file_is_private_and_sources_back_to_the_same_values(tmp_path: Path) -> None:
    broker = secured_broker(tmp_path, "primary", 29092)
    env = login_env({"primary": broker}, "eventgw-admin") | {"X": "it's $HOME"}
    path = tmp_path / "admin.env"
    write_env_file(path, env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        back[name] = shlex.split(value)[0]
    assert back == env
