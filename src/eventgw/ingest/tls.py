"""TLS of ingest's HTTP and gRPC ports: the PEM files of ``ingest.tls``, read once at start-up.

`load_server_tls` reads and checks the files (a configuration error names the field of the
first bad one) and keeps their bytes for gRPC; `ServerTls.ssl_context` is the HTTP side.
Both ports use the same certificate and, with ``client_ca_file``, require client
certificates signed by it (docs/security.md). Certificates are read at start-up only: a
renewed certificate takes effect when ingest restarts (a rolling restart in Kubernetes).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from eventgw.config.ingest_security import IngestTlsSettings

__all__ = ["ServerTls", "load_server_tls"]

_FIELD = "ingest.tls."


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate chain, its key and the client CA bundle, as PEM bytes."""

    settings: IngestTlsSettings
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None

    def ssl_context(self) -> ssl.SSLContext:
        """A server context: TLS 1.2 or newer; client certificates required with a CA.

        Raises:
            ConfigError: a file does not hold what its field says (named).
        """
        s = self.settings
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        try:
            ctx.load_cert_chain(s.cert_file, s.key_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                _FIELD + "key_file",
                f"{s.key_file} is not the private key of {s.cert_file} ({exc.reason})",
            ) from None
        if s.client_ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=s.client_ca_file)
            except ssl.SSLError as exc:
                raise ConfigError(
                    _FIELD + "client_ca_file",
                    f"{s.client_ca_file}: not a PEM CA bundle ({exc.reason})",
                ) from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _read(path: Path, field: str, marker: bytes, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(_FIELD + field, f"{path}: {exc.strerror or exc}") from None
    if marker not in data:
        raise ConfigError(_FIELD + field, f"{path}: no PEM {what} in it")
    return data


def load_server_tls(settings: IngestTlsSettings) -> ServerTls:
    """Read and check the files of ``settings``.

    Raises:
        ConfigError: naming ``ingest.tls.cert_file``, ``key_file`` or ``client_ca_file``:
            unreadable, without a PEM block of its kind, or a key that does not match the
            certificate.
    """
    cert = _read(settings.cert_file, "cert_file", b"-----BEGIN CERTIFICATE-----", "certificate")
    key = _read(settings.key_file, "key_file", b"PRIVATE KEY-----", "private key")
    ca = (
        _read(
            settings.client_ca_file,
            "client_ca_file",
            b"-----BEGIN CERTIFICATE-----",
            "CA certificate",
        )
        if settings.client_ca_file is not None
        else None
    )
    tls = ServerTls(settings, cert, key, ca)
    tls.ssl_context()  # the key matches the certificate, the bundle parses: checked now
    return tls
