"""The local stack's internal gRPC tokens: made on first use under its home, mode 0600.

``eventgw up`` and every ``eventgw`` command in ``environment = development`` fill the
tokens left unset from ``<home>/credentials/<audience>.token`` (home: ``$EVENTGW_HOME`` or
``~/.cache/eventgw``), so the processes of one local stack, started by ``up`` or by hand,
share them, and the operator tools present them. Nothing here runs in staging or
production: there a missing token stops the component (docs/security.md).

Concurrent first uses (``up`` starts five processes at once) agree on one token: each
writes a complete candidate file and links it into place; the first link wins, the others
read the winner.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import TYPE_CHECKING, Final

from pydantic import SecretStr

from eventgw.config.internal_auth import AUDIENCES, MIN_TOKEN_CHARS
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from eventgw.config.internal_auth import Audience
    from eventgw.config.settings import EventGwSettings

__all__ = ["credentials_dir", "local_token", "with_local_credentials"]

_TOKEN_BYTES: Final = 32  # 256 bits of randomness, 43 URL-safe characters


def credentials_dir(home: Path) -> Path:
    """Where the local stack's tokens live: ``<home>/credentials``."""
    return home / "credentials"


def local_token(home: Path, audience: Audience) -> SecretStr:
    """The local stack's token for ``audience``; made (0600, in a 0700 directory) if absent.

    Raises:
        ConfigError: the file cannot be written or read, or holds no usable token
            (naming ``internal_auth.<audience>_token``).
    """
    field = f"internal_auth.{audience}_token"
    directory = credentials_dir(home)
    path = directory / f"{audience}.token"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            _create(path, secrets.token_urlsafe(_TOKEN_BYTES))
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"local credentials {path}: {exc}") from exc
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(field, f"local credentials {path}: not a token (delete the file)")
    return SecretStr(token)


def with_local_credentials(settings: EventGwSettings, home: Path) -> EventGwSettings:
    """``settings`` with each unset internal token taken from ``home`` (development only).

    Settings of another environment, or with every token set, are returned unchanged.
    """
    auth = settings.internal_auth
    if settings.environment != "development":
        return settings
    missing = [a for a in AUDIENCES if not auth.has_token(a)]
    if not missing:
        return settings
    filled = auth.with_tokens({a: local_token(home, a) for a in missing})
    return settings.model_copy(update={"internal_auth": filled})


def _create(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` unless another process got there first (atomic)."""
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(token + "\n")
        # link() fails if the name exists: the first complete file wins, none is half-read.
        with contextlib.suppress(FileExistsError):
            os.link(candidate, path)
    finally:
        candidate.unlink(missing_ok=True)
