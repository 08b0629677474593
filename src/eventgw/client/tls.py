"""`ClientTls`: how the client library verifies ingest, and proves itself when asked to.

One value for both transports: `EventIngestPublisher` (gRPC, a secure channel) and
`IngestHttpClient` (https). The files are read when the client is built, so a missing or
unreadable file is a `ValueError` there and not a failed first call.
"""

from __future__ import annotations

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
        ValueError: only one of ``cert_file`` and ``key_file``, or a file that cannot be
            read (naming it).
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

    def ssl_context(self) -> ssl.SSLContext:
        """A client context for https: verifies the server (and its name), TLS 1.2+.

        Raises:
            ValueError: a file is not the PEM it should be (naming it).
        """
        try:
            ctx = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except ssl.SSLError as exc:
            raise ValueError(f"ca_file: {self.ca_file}: not a PEM CA bundle ({exc})") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"key_file: {self.key_file} is not the key of {self.cert_file} ({exc})"
                ) from None
        return ctx
