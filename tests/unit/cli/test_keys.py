"""``eventgw keys new``: a fresh key, printed once, and an entry that ingest loads for it.

The command is called as ``main`` would, without ``main``'s logging set-up: that installs a
root handler on the captured stderr, which later tests would write to after it is closed.
"""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING

from eventgw.cli.main import build_parser
from eventgw.cli.tools import cmd_keys
from eventgw.config.ingest_security import load_tenant_keys_file
from eventgw.config.settings import EventGwSettings, IngestSettings
from eventgw.ingest.grants import KeyRing

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def new_key(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cmd_keys(build_parser().parse_args(["keys", "new", *args]), EventGwSettings())
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
