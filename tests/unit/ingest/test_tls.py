"""Ingest's TLS files are checked at start-up: a configuration error names the bad one."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest

from eventgw.config.ingest_security import IngestTlsSettings
from eventgw.core.errors import ConfigError
from eventgw.ingest.tls import load_server_tls
from tests.fixtures.tls import Pki, make_pki

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_good_files_give_a_server_context_and_the_grpc_bytes(pki: Pki) -> None:
    tls = load_server_tls(
        IngestTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca)
    )
    assert tls.cert_chain == pki.server_cert.read_bytes()
    assert tls.private_key == pki.server_key.read_bytes()
    assert tls.client_ca == pki.ca.read_bytes()
    ctx = tls.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED  # a client CA: client certificates required
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    plain = load_server_tls(IngestTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key))
    assert plain.client_ca is None
    assert plain.ssl_context().verify_mode == ssl.CERT_NONE


def bad(pki: Pki, tmp: Path, which: str) -> IngestTlsSettings:
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    files = {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca}
    cases = {
        "missing-cert": ("cert_file", tmp / "missing.pem"),
        "garbage-cert": ("cert_file", garbage),
        "missing-key": ("key_file", tmp / "missing.pem"),
        "garbage-key": ("key_file", garbage),
        "key-of-another-certificate": ("key_file", pki.client_key),
        "garbage-ca": ("client_ca_file", garbage),
        "missing-ca": ("client_ca_file", tmp / "missing.pem"),
    }
    field, path = cases[which]
    files[field] = path
    return IngestTlsSettings(**files)


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("missing-cert", "ingest.tls.cert_file"),
        ("garbage-cert", "ingest.tls.cert_file"),
        ("missing-key", "ingest.tls.key_file"),
        ("garbage-key", "ingest.tls.key_file"),
        ("key-of-another-certificate", "ingest.tls.key_file"),
        ("garbage-ca", "ingest.tls.client_ca_file"),
        ("missing-ca", "ingest.tls.client_ca_file"),
    ],
)
def test_a_bad_file_is_a_configuration_error_naming_it(
    pki: Pki, tmp_path: Path, case: str, field: str
) -> None:
    settings = bad(pki, tmp_path, case)
    with pytest.raises(ConfigError) as info:
        load_server_tls(settings)
    assert info.value.field == field
    assert str(getattr(settings, field.rpartition(".")[2])) in info.value.message
