"""The TLS files and SCRAM passwords of a local SASL_SSL cluster, created on first use.

A local secure broker (`eventgw.kafka.broker_config.BrokerSecurity`) needs a certificate
its clients can verify, and SCRAM-SHA-512 users whose passwords its clients know. Nothing
is shipped with the project and nothing is fetched: `LocalCredentials` makes a private CA,
the broker's certificate, client certificates (mutual TLS) and random passwords the first
time they are asked for, and keeps them in ``<data_dir>/security``::

    ca.pem                 the local CA's certificate: what clients trust (ssl_ca_location)
    ca-key.pem             the CA's private key: issues the broker's and the clients' certificates
    broker.pem             the broker's private key and certificate chain (a PEM keystore)
    clients/<user>.pem     a client certificate for mutual TLS, and <user>-key.pem its key
    scram.json             {"<user>": "<password>"}: the SCRAM users created at format time

The directories are 0700 and every file 0600: the keys and passwords are secrets, and the CA
is this cluster's alone (each data directory has its own). Keys are ECDSA P-256;
certificates are valid for 825 days, the CA for ten years.

Uses ``cryptography``, never the Kafka client.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventgw.kafka.jar_cache import file_lock

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Iterable
    from pathlib import Path

ADMIN_USER: Final = "eventgw-admin"
"""The SCRAM user every local secure cluster has: a super user (topics, ACLs) and the broker's
own identity on its SASL_SSL listener."""

BROKER_CN: Final = "eventgw-broker"
"""Common name of the broker's certificate; ``User:CN=eventgw-broker`` is the principal the
broker has on its own (mutual-TLS) controller listener."""

_CA_DAYS: Final = 3650
_LEAF_DAYS: Final = 825


def _write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically (a reader never sees half)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o600)  # an existing tmp file keeps its mode through O_CREAT
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class LocalCredentials:
    """The security material of one local cluster, in ``directory`` (``<data_dir>/security``).

    Each ``ensure_*``/``client_certificate`` call creates what is missing and returns what is
    there; calls serialise on an ``flock`` of ``<directory>/.lock``, across processes.
    Passwords are created only by ``create_users`` (the broker calls it right before it
    formats the cluster, where they become SCRAM users); afterwards they are only read.
    """

    def __init__(self, directory: Path) -> None:
        """Describe the material in ``directory``; nothing is created until asked for."""
        self.directory = directory

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients verify the broker against (``ssl_ca_location``)."""
        return self.directory / "ca.pem"

    @property
    def broker_keystore(self) -> Path:
        """The broker's key and certificate chain, a PEM keystore."""
        return self.directory / "broker.pem"

    @property
    def _users_file(self) -> Path:
        return self.directory / "scram.json"

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(_private_dir(self.directory) / ".lock")

    def ensure_tls(self) -> None:
        """Create the CA and the broker's certificate if they do not exist yet.

        The broker's certificate names ``127.0.0.1`` and ``localhost`` (clients verify the
        host name) and serves both as server and as client certificate: the broker is a
        client of its own controller listener, which requires mutual TLS.
        """
        with self._lock():
            ca_key, ca_cert = self._ca()
            if self.broker_keystore.is_file():
                return
            key, cert = self._issue(
                ca_key,
                ca_cert,
                BROKER_CN,
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
            )
            chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
                serialization.Encoding.PEM
            )
            _write_secret(self.broker_keystore, _key_pem(key) + chain)

    def client_certificate(self, user: str) -> tuple[Path, Path]:
        """Return (certificate, key) PEM files of a client certificate for ``user``.

        Issued by the local CA on first use, with common name ``user``. A broker that requires
        client certificates (``BrokerSecurity.require_client_certificate``) accepts it.

        Raises:
            ValueError: ``user`` is not a plain name (it becomes a file name).
        """
        if not user or not user.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"client certificate user {user!r}: letters, digits, - and _ only")
        with self._lock():
            clients = _private_dir(self.directory / "clients")
            cert_file, key_file = clients / f"{user}.pem", clients / f"{user}-key.pem"
            if cert_file.is_file() and key_file.is_file():
                return cert_file, key_file
            ca_key, ca_cert = self._ca()
            key, cert = self._issue(
                ca_key, ca_cert, user, [ExtendedKeyUsageOID.CLIENT_AUTH], san=None
            )
            _write_secret(key_file, _key_pem(key))
            _write_secret(cert_file, cert.public_bytes(serialization.Encoding.PEM))
            return cert_file, key_file

    def create_users(self, users: Iterable[str]) -> dict[str, str]:
        """Give ``ADMIN_USER`` and ``users`` new random passwords; return them all.

        Replaces any earlier ``scram.json``: call it only for a cluster about to be formatted.
        """
        passwords = {user: secrets.token_urlsafe(24) for user in (ADMIN_USER, *users)}
        with self._lock():
            _write_secret(self._users_file, json.dumps(passwords, indent=2).encode())
        return passwords

    def passwords(self) -> dict[str, str]:
        """The SCRAM users and their passwords created at format time.

        Raises:
            RuntimeError: There are none: the cluster was not formatted as a secure one.
        """
        try:
            data = json.loads(self._users_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"{self._users_file} is missing or unreadable: this data directory was not "
                "formatted as a SASL_SSL cluster (use another data directory)"
            ) from exc
        return {str(user): str(password) for user, password in data.items()}

    def password(self, user: str) -> str:
        """The password of SCRAM user ``user``.

        Raises:
            KeyError: The cluster has no such user.
            RuntimeError: The cluster was not formatted as a secure one.
        """
        passwords = self.passwords()
        if user not in passwords:
            raise KeyError(f"the local cluster has no SCRAM user {user!r}: {sorted(passwords)}")
        return passwords[user]

    def _ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """Load the CA, creating it first if this directory has none (lock held)."""
        key_file = self.directory / "ca-key.pem"
        if key_file.is_file() and self.ca_file.is_file():
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise RuntimeError(f"{key_file} is not the EC key eventgw made")
            return key, x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"eventgw local CA {secrets.token_hex(4)}")
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        # Key first: a CA certificate without its key could never issue anything.
        _write_secret(key_file, _key_pem(key))
        _write_secret(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    @staticmethod
    def _issue(
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        common_name: str,
        usages: list[x509.ObjectIdentifier],
        san: list[x509.GeneralName] | None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())
