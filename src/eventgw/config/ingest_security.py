"""Ingest's public-API security settings: tenant-bound API keys and TLS (docs/security.md).

`TenantKey` binds one API key (stored as its SHA-256 digest, never the key) to a tenant and
the company ids, source names and SLO classes it may write. Keys come from
``ingest.tenant_keys`` (settings file or a JSON environment variable, e.g. from a Kubernetes
Secret) and from ``ingest.tenant_keys_file`` (a TOML file of ``[[keys]]`` tables, e.g. a
mounted Secret), read by `load_tenant_keys_file` when ingest starts. `IngestTlsSettings`
names the PEM files of ingest's HTTP and gRPC TLS; they are read at start-up too.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from pathlib import Path  # noqa: TC003  (pydantic resolves field annotations at run time)
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from eventgw.core.errors import ConfigError

__all__ = [
    "ANY",
    "IngestTlsSettings",
    "TenantKey",
    "is_loopback",
    "key_digest",
    "load_tenant_keys_file",
]

ANY: Final = "*"
"""In a grant list: every value (given alone)."""

ClassName = Literal["P30", "P20", "P10"]
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")


def _all_classes() -> list[ClassName]:
    return ["P30", "P20", "P10"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def key_digest(key: str) -> str:
    """The ``key_sha256`` of an API key: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode()).hexdigest()


def _grant_list(values: list[str], what: str) -> list[str]:
    if ANY in values and len(values) > 1:
        raise ValueError(f"'{ANY}' means every {what}: give it alone, not with {values}")
    for v in values:
        if not v or len(v) > 128:
            raise ValueError(f"each {what} has 1 to 128 characters, got {v!r}")
    return values


class TenantKey(_Frozen):
    """One ingest API key bound to a tenant: what its requests may write.

    A request authenticated by this key is refused whole (403 / PERMISSION_DENIED, nothing
    written) when any of its events has a company id, a source name or a class outside the
    lists below. ``"*"`` alone means any value.
    """

    tenant: str = Field(
        min_length=1, max_length=128, description="who holds the key (logged, never the key)"
    )
    key_sha256: SecretStr = Field(
        description="lowercase hex SHA-256 of the key (`eventgw keys new` prints both); the "
        "key itself is never stored"
    )
    company_ids: list[str] = Field(
        min_length=1, description='company ids the key may write, exactly; ["*"]: any'
    )
    source_names: list[str] = Field(
        default_factory=lambda: [ANY], description='source names it may write; ["*"]: any'
    )
    classes: list[ClassName] = Field(
        default_factory=_all_classes,
        min_length=1,
        description="SLO classes its events may be classified into (by ingest.class_rules)",
    )

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: SecretStr) -> SecretStr:
        if not _SHA256_HEX.match(value.get_secret_value()):
            raise ValueError("must be 64 lowercase hex digits (the SHA-256 of the key)")
        return value

    @field_validator("company_ids")
    @classmethod
    def _companies(cls, values: list[str]) -> list[str]:
        return _grant_list(values, "company id")

    @field_validator("source_names")
    @classmethod
    def _sources(cls, values: list[str]) -> list[str]:
        return _grant_list(values, "source name")


class IngestTlsSettings(_Frozen):
    """TLS on ingest's HTTP and gRPC ports; PEM files, read when ingest starts."""

    cert_file: Path = Field(
        description="PEM certificate chain of the server (leaf first); setting ingest.tls "
        "turns TLS on for both the HTTP and the gRPC port"
    )
    key_file: Path = Field(description="PEM private key of cert_file (unencrypted)")
    client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: when set, every client must present a certificate it "
        "signed (mutual TLS), on both ports",
    )


def is_loopback(host: str) -> bool:
    """True when binding ``host`` is reachable from this machine only.

    ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``) are; everything else,
    including ``0.0.0.0``, ``::`` and other names, counts as beyond loopback.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_tenant_keys_file(path: Path) -> list[TenantKey]:
    """The ``[[keys]]`` tables of a TOML file, validated.

    Raises:
        ConfigError: field ``ingest.tenant_keys_file``: unreadable, not UTF-8 TOML, no
            ``keys`` list, an unknown top-level key, or an invalid entry (named as
            ``keys[<i>].<field>``).
    """
    field = "ingest.tenant_keys_file"
    try:
        doc: dict[str, Any] = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(field, f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{path}: not valid UTF-8 at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(field, f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(field, f"{path}: nested too deeply") from None
    unknown = sorted(set(doc) - {"keys"})
    if unknown:
        raise ConfigError(field, f"{path}: unknown key {unknown[0]!r} (only [[keys]] tables)")
    entries = doc.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(field, f"{path}: needs at least one [[keys]] table")
    keys: list[TenantKey] = []
    for i, entry in enumerate(entries):
        try:
            keys.append(TenantKey.model_validate(entry))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            raise ConfigError(
                field, f"{path}: keys[{i}]{'.' + where if where else ''}: {message}"
            ) from None
    return keys
