"""Settings of the internal gRPC hops' credentials: one bearer token per serving component.

The prep publisher and the orchestrator each have a token; their callers present it (ingest
and the operator tools the publisher's, processors and the tools the orchestrator's). A
token is given as a value (``EVENTGW_INTERNAL_AUTH__PUBLISHER_TOKEN``, e.g. from a Kubernetes
Secret as an environment variable) or as a file (``..._PUBLISHER_TOKEN_FILE``, e.g. a
mounted Secret), read once at start-up. Why tokens and not mTLS: docs/security.md.

In ``environment = development`` an unset token is made on first use under the local stack's
home (`eventgw.config.local_credentials`); elsewhere a component that needs a token and has
none does not start (`InternalAuthSettings.token_for` raises `ConfigError` naming the field).
"""

from __future__ import annotations

import re
from pathlib import Path  # noqa: TC003  (pydantic resolves the annotations at run time)
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from eventgw.core.errors import ConfigError

__all__ = ["AUDIENCES", "MIN_TOKEN_CHARS", "Audience", "InternalAuthSettings"]

Audience = Literal["publisher", "orchestrator"]
"""A component that serves internal gRPC and checks a token."""

AUDIENCES: Final[tuple[Audience, ...]] = ("publisher", "orchestrator")

MIN_TOKEN_CHARS: Final = 32
"""Shortest token accepted (``openssl rand -hex 32`` gives 64 characters)."""

MAX_TOKEN_FILE_BYTES: Final = 4096
"""A token file larger than this is not a token (refused, naming the field)."""

# A gRPC metadata value: visible ASCII, no spaces (it follows "Bearer ").
_TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]+")


def _token_problem(token: str) -> str | None:
    if len(token) < MIN_TOKEN_CHARS:
        return (
            f"needs at least {MIN_TOKEN_CHARS} characters, got {len(token)} (openssl rand -hex 32)"
        )
    if not _TOKEN_CHARS.fullmatch(token):
        return "only visible ASCII characters, no spaces (openssl rand -hex 32)"
    return None


class InternalAuthSettings(BaseModel):
    """Bearer tokens of the internal gRPC servers; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    publisher_token: SecretStr | None = Field(
        default=None,
        description="the prep publisher's gRPC token: the publisher accepts calls that "
        "present it, ingest and the operator tools present it. At least 32 visible ASCII "
        "characters (openssl rand -hex 32). Development: made on first use under the local "
        "stack's home when unset; elsewhere required by the components that use it",
    )
    publisher_token_file: Path | None = Field(
        default=None,
        description="a file holding publisher_token (e.g. a mounted Kubernetes Secret; "
        "surrounding whitespace ignored), read at start-up; instead of publisher_token",
    )
    orchestrator_token: SecretStr | None = Field(
        default=None,
        description="the orchestrator's gRPC token (Work streams, Stats): processors and the "
        "operator tools present it. Same rules as publisher_token",
    )
    orchestrator_token_file: Path | None = Field(
        default=None,
        description="a file holding orchestrator_token, read at start-up; instead of "
        "orchestrator_token",
    )

    _tokens: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> InternalAuthSettings:
        # "<field>: <text>" lets load_settings name the field.
        for audience in AUDIENCES:
            value: SecretStr | None = getattr(self, f"{audience}_token")
            path: Path | None = getattr(self, f"{audience}_token_file")
            if value is not None and path is not None:
                raise ValueError(
                    f"{audience}_token_file: give {audience}_token or {audience}_token_file, "
                    "not both"
                )
            if path is not None:
                value = SecretStr(_read_token_file(path, f"{audience}_token_file"))
                field = f"{audience}_token_file"
            else:
                field = f"{audience}_token"
            if value is None:
                continue
            problem = _token_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(f"{field}: {problem}")
            self._tokens[audience] = value
        return self

    def token_for(self, audience: Audience) -> SecretStr:
        """The token of ``audience``'s gRPC server (to check, or to present).

        Raises:
            ConfigError: no token is configured, naming ``internal_auth.<audience>_token``.
        """
        token = self._tokens.get(audience)
        if token is None:
            raise ConfigError(
                f"internal_auth.{audience}_token",
                f"not set: every call to the {audience} is authenticated (set "
                f"EVENTGW_INTERNAL_AUTH__{audience.upper()}_TOKEN or "
                f"..._{audience.upper()}_TOKEN_FILE; docs/security.md)",
            )
        return token

    def has_token(self, audience: Audience) -> bool:
        """Whether ``audience``'s token is configured (by value or file)."""
        return audience in self._tokens

    def with_tokens(self, tokens: dict[Audience, SecretStr]) -> InternalAuthSettings:
        """A copy with ``tokens`` set as values (validated like configured ones)."""
        data: dict[str, Any] = self.model_dump()
        for audience, token in tokens.items():
            data[f"{audience}_token"] = token
            data[f"{audience}_token_file"] = None
        return InternalAuthSettings.model_validate(data)


def _read_token_file(path: Path, field: str) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise ValueError(f"{field}: {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{field}: {path} holds bytes that are not ASCII") from None
