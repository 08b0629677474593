"""``eventgw keys new``: a fresh key, printed once, and an entry that ingest loads for it.

Run through ``main`` as the console script does; ``restore_logging`` undoes the root
handler ``main`` installs on the captured stderr (tests/fixtures/logging_state.py).
"""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING

import pytest

from eventgw.cli.main import main
from eventgw.config.ingest_security import load_tenant_keys_file
from eventgw.config.settings import IngestSettings
from eventgw.ingest.grants import KeyRing

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    """No settings from the environment; main()'s logging set-up undone afterwards."""
    for name in list(__import__("os").environ):
        if name.startswith("EVENTGW_"):
            monkeypatch.delenv(name)


def new_key(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["keys", "new", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_printed_entry_grants_the_printed_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = new_key(
        capsys, "--tenant", "acme", "--company", "acme", "--company", "acme-eu", "--class", "P20"
    )
    assert code == 0
    key = out.splitlines()[1].strip()
    assert key.startswith("egw_")
    assert len(key) >= 40
    entry = out[out.index("[[keys]]") :]
    assert key not in entry, "only the digest goes into the settings"
    path = tmp_path / "keys.toml"
    path.write_text(entry)
    (parsed,) = load_tenant_keys_file(path)
    assert (parsed.company_ids, parsed.source_names, parsed.classes) == (
        ["acme", "acme-eu"],
        ["*"],
        ["P20"],
    )
    grant = KeyRing.from_settings(IngestSettings(tenant_keys_file=path)).grant_of(key.encode())
    assert grant is not None
    assert grant.tenant == "acme"
    assert tomllib.loads(entry)["keys"][0]["tenant"] == "acme"
    code, again, _ = new_key(capsys, "--tenant", "acme", "--company", "acme")
    assert again.splitlines()[1].strip() != key, "a fresh key every time"


def test_a_bad_grant_is_refused_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = new_key(capsys, "--tenant", "acme", "--company", "*", "--company", "x")
    assert (code, out) == (2, "")
    assert err.startswith("--company: '*' means every company id: give it alone")
