"""The local secure cluster's CA, certificates and SCRAM passwords (files only, no broker)."""

from __future__ import annotations

import ipaddress
import stat
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from eventgw.kafka.local_security import ADMIN_USER, BROKER_CN, LocalCredentials

if TYPE_CHECKING:
    from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_the_broker_certificate_is_issued_by_the_local_ca_for_loopback(tmp_path: Path) -> None:
    creds = LocalCredentials(tmp_path / "security")
    creds.ensure_tls()
    (ca,) = load(creds.ca_file)
    broker, chain_ca = load(creds.broker_keystore)
    assert b"PRIVATE KEY" in creds.broker_keystore.read_bytes()
    assert chain_ca == ca
    broker.verify_directly_issued_by(ca)
    assert broker.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == BROKER_CN
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_material_is_private_and_made_once(tmp_path: Path) -> None:
    creds = LocalCredentials(tmp_path / "security")
    creds.ensure_tls()
    first = {p.name: p.read_bytes() for p in creds.directory.glob("*.pem")}
    creds.ensure_tls()
    assert {p.name: p.read_bytes() for p in creds.directory.glob("*.pem")} == first
    assert set(first) == {"ca.pem", "ca-key.pem", "broker.pem"}
    assert mode(creds.directory) == 0o700
    assert {mode(creds.directory / name) for name in first} == {0o600}


def test_a_client_certificate_is_issued_once_per_user(tmp_path: Path) -> None:
    creds = LocalCredentials(tmp_path / "security")
    creds.ensure_tls()
    cert, key = creds.client_certificate("eventgw-ingest")
    assert creds.client_certificate("eventgw-ingest") == (cert, key)
    (leaf,) = load(cert)
    leaf.verify_directly_issued_by(load(creds.ca_file)[0])
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "eventgw-ingest"
    assert (mode(cert), mode(key), mode(cert.parent)) == (0o600, 0o600, 0o700)
    with pytest.raises(ValueError, match="letters, digits"):
        creds.client_certificate("../evil")


def test_scram_users_get_random_passwords_and_the_admin_is_one(tmp_path: Path) -> None:
    creds = LocalCredentials(tmp_path / "security")
    with pytest.raises(RuntimeError, match="not formatted as a SASL_SSL cluster"):
        creds.passwords()
    made = creds.create_users(["eventgw-ingest", "eventgw-processor"])
    assert set(made) == {ADMIN_USER, "eventgw-ingest", "eventgw-processor"}
    assert len(set(made.values())) == 3
    assert all(len(p) >= 32 for p in made.values())
    assert creds.passwords() == made
    assert creds.password("eventgw-ingest") == made["eventgw-ingest"]
    assert mode(creds.directory / "scram.json") == 0o600
    with pytest.raises(KeyError, match="no SCRAM user 'eventgw-tools'"):
        creds.password("eventgw-tools")
