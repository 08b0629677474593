"""ClientTls: both transports' TLS; bad files are refused when the client is built."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest

from eventgw.client import ClientTls, IngestHttpClient
from eventgw.client.ingest_client import permission_denied
from tests.fixtures.tls import make_pki

if TYPE_CHECKING:
    from pathlib import Path


def test_the_files_are_read_once_and_verify_the_server(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = ClientTls(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    assert (tls.ca_pem, tls.cert_pem, tls.key_pem) == (
        pki.ca.read_bytes(),
        pki.client_cert.read_bytes(),
        pki.client_key.read_bytes(),
    )
    ctx = tls.ssl_context()
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert ClientTls().ca_pem is None  # the system's roots


def test_a_file_that_is_not_pem_is_refused_when_built_naming_the_field(tmp_path: Path) -> None:
    """Before: accepted, and a gRPC client failed at its first call with UNAVAILABLE."""
    pki = make_pki(tmp_path)
    text = tmp_path / "text.pem"
    text.write_text("not a certificate\n")
    binary = tmp_path / "binary.pem"
    binary.write_bytes(bytes(range(256)))
    for bad in (text, binary, pki.server_key):
        with pytest.raises(ValueError, match=rf"^ca_file: {bad}: not a PEM CA bundle"):
            ClientTls(ca_file=bad)
    with pytest.raises(ValueError, match=rf"^cert_file: {text}: no PEM certificate"):
        ClientTls(ca_file=pki.ca, cert_file=text, key_file=pki.client_key)
    with pytest.raises(ValueError, match=rf"^key_file: {pki.ca}: no PEM private key"):
        ClientTls(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.ca)


def test_bad_client_tls_is_refused_naming_the_field(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(ValueError, match="cert_file and key_file"):
        ClientTls(cert_file=pki.client_cert)
    with pytest.raises(ValueError, match=r"ca_file: .*missing\.pem"):
        ClientTls(ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=r"key_file: .* is not the key of"):
        ClientTls(cert_file=pki.client_cert, key_file=pki.server_key)
    with pytest.raises(ValueError, match="tls needs an https:// URL"):
        IngestHttpClient("http://127.0.0.1:8080", tls=ClientTls(ca_file=pki.ca))
    with pytest.raises(ValueError, match="not an http"):
        IngestHttpClient("ftp://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("details", "field", "index"),
    [
        ("events[3].company_id: company 'x' is not granted", "events[3].company_id", 3),
        ("events[0].class: class P30 ...", "events[0].class", 0),
        ("events[" + "9" * 5000 + "].x: y", "events[" + "9" * 5000 + "].x", 0),
        ("", "events", 0),
    ],
)
def test_a_permission_refusal_is_read_without_trusting_it(
    details: str, field: str, index: int
) -> None:
    exc = permission_denied(details)
    assert (exc.field, exc.index) == (field, index)
