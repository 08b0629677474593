"""`ClientTls`: how the client library verifies ingest, and proves itself when asked to.

One value for both transports: `EventIngestPublisher` (gRPC, a secure channel) and
`IngestHttpClient` (https). The files are read and checked when the `ClientTls` is built, so
a missing, unreadable or non-PEM file, or a key that does not match its certificate, is a
`ValueError` there, naming the field, and not a failed first call (for gRPC, an UNAVAILABLE
that says nothing about the file).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ClientTls"]


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS to ingest.

    Attributes:
        ca_file: PEM CA bundle to verify ingest's certificate against; None: the system's
            trusted roots. The host name of the target is always verified.
        cert_file: PEM client certificate, for an ingest that requires one
            (``ingest.tls.client_ca_file``); with ``key_file``.
        key_file: the PEM private key of ``cert_file`` (unencrypted).

    Raises:
        ValueError: only one of ``cert_file`` and ``key_file``, a file that cannot be read,
            is not PEM, or a key that is not the certificate's (naming the field).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_pem: bytes | None = field(init=False, repr=False, default=None)
    cert_pem: bytes | None = field(init=False, repr=False, default=None)
    key_pem: bytes | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file: give both (mutual TLS) or neither")
        for name in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, name)
            if path is None:
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"{name}: {path}: {exc.strerror or exc}") from None
            # A frozen dataclass: the PEM bytes are derived once, here.
            object.__setattr__(self, name.replace("_file", "_pem"), data)
        # gRPC gets the bytes as they are and would only fail at the first connection:
        # OpenSSL checks them here, for both transports.
        self.ssl_context()

    def ssl_context(self) -> ssl.SSLContext:
        """A client context for https: verifies the server (and its name), TLS 1.2+.

        Raises:
            ValueError: a file is not the PEM it should be (naming it).
        """
        try:
            ctx = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise ValueError(f"ca_file: {self.ca_file}: not a PEM CA bundle ({exc})") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            # OpenSSL says "PEM lib" for either file: name the one that is not PEM first.
            if b"-----BEGIN CERTIFICATE-----" not in (self.cert_pem or b""):
                raise ValueError(f"cert_file: {self.cert_file}: no PEM certificate in it")
            if not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", self.key_pem or b""):
                raise ValueError(f"key_file: {self.key_file}: no PEM private key in it")
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"key_file: {self.key_file} is not the key of {self.cert_file} ({exc})"
                ) from None
        return ctx
