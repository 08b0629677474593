"""``--secure``: the local clusters over SASL_SSL, and each component logged in as its role.

A secured local cluster (`eventgw.kafka.broker_config.BrokerSecurity`) runs on the same ports
as its PLAINTEXT twin, from its own data directory (``clusters/<name>-secure``): a data
directory keeps the security it was formatted with. Its SCRAM users are the admin and one
``eventgw-<role>`` per role of `eventgw.kafka.acl_policy`; its CA and passwords are made on
first use (`eventgw.kafka.local_security`). The helpers here turn a started secured broker
into the settings and ``EVENTGW_*`` environment a component of a role connects with.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import TYPE_CHECKING, Final

from pydantic import SecretStr

from eventgw.config.settings import KafkaClusterSettings
from eventgw.kafka.acl_policy import ROLES, acl_rules, username
from eventgw.kafka.admin import apply_acls
from eventgw.kafka.broker_config import BrokerSecurity
from eventgw.kafka.local_security import ADMIN_USER

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from eventgw.config.settings import EventGwSettings
    from eventgw.kafka.acl_policy import Role
    from eventgw.kafka.broker_config import BrokerSpec
    from eventgw.kafka.local_broker import LocalBroker

SECURE_USERS: Final = tuple(username(role) for role in ROLES)
"""The SCRAM users of a secured local cluster, besides the admin: one per role."""


def secure_spec(spec: BrokerSpec) -> BrokerSpec:
    """The secured twin of a local cluster: same ports, data in ``<data_dir>-secure``."""
    return dataclasses.replace(
        spec,
        data_dir=spec.data_dir.with_name(f"{spec.data_dir.name}-secure"),
        security=BrokerSecurity(users=SECURE_USERS),
    )


def cluster_settings(
    broker: LocalBroker, user: str, *, mutual_tls: bool = False
) -> KafkaClusterSettings:
    """How SCRAM user ``user`` connects to the secured local ``broker``.

    Args:
        broker: A secured local broker (its credentials exist once it has started).
        user: One of its SCRAM users.
        mutual_tls: Present a client certificate for ``user`` from the broker's CA too (for
            a broker that requires one).
    """
    credentials = broker.credentials
    certificate, key = credentials.client_certificate(user) if mutual_tls else (None, None)
    return KafkaClusterSettings(
        bootstrap_servers=broker.bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=user,
        sasl_password=SecretStr(credentials.password(user)),
        ssl_ca_location=credentials.ca_file,
        ssl_certificate_location=certificate,
        ssl_key_location=key,
    )


def admin_settings(
    settings: EventGwSettings, brokers: Mapping[str, LocalBroker]
) -> EventGwSettings:
    """``settings`` with each secured local cluster (by name) reached as the admin."""
    kafka = settings.kafka.model_copy(
        update={name: cluster_settings(b, ADMIN_USER) for name, b in brokers.items()}
    )
    return settings.model_copy(update={"kafka": kafka})


def grant_roles(settings: EventGwSettings, brokers: Mapping[str, LocalBroker]) -> int:
    """Apply every role's ACLs for ``settings``' topics and groups on each secured cluster.

    Idempotent. Blocking, until each broker enforces them. Returns how many were applied.
    """
    rules = acl_rules(
        settings.topics,
        orchestrator_group=settings.orchestrator.group_id,
        recovery_group=settings.recovery.group_id,
    )
    return sum(apply_acls(cluster_settings(b, ADMIN_USER), rules) for b in brokers.values())


def login_env(brokers: Mapping[str, LocalBroker], user: str) -> dict[str, str]:
    """The ``EVENTGW_KAFKA__<CLUSTER>__*`` variables that log ``user`` in to each cluster."""
    env: dict[str, str] = {}
    for name, broker in brokers.items():
        cluster = cluster_settings(broker, user)
        prefix = f"EVENTGW_KAFKA__{name.upper()}__"
        password = cluster.sasl_password.get_secret_value() if cluster.sasl_password else ""
        env |= {
            f"{prefix}BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
            f"{prefix}SECURITY_PROTOCOL": "SASL_SSL",
            f"{prefix}SASL_MECHANISM": "SCRAM-SHA-512",
            f"{prefix}SASL_USERNAME": user,
            f"{prefix}SASL_PASSWORD": password,
            f"{prefix}SSL_CA_LOCATION": str(cluster.ssl_ca_location),
        }
    return env


def role_env(brokers: Mapping[str, LocalBroker], role: Role) -> dict[str, str]:
    """The environment a component of ``role`` runs with: its own principal everywhere."""
    return login_env(brokers, username(role))


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """Write ``export NAME=value`` lines (shell-quoted) to a 0600 file, for ``source``."""
    text = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)
        out.write(text)
