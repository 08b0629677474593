"""The local stack's internal tokens: made once under its home, 0600, shared, dev only."""

from __future__ import annotations

import os
import stat
import threading
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from eventgw.config.local_credentials import (
    credentials_dir,
    local_token,
    with_local_credentials,
)
from eventgw.config.settings import EventGwSettings
from eventgw.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EVENTGW_"):
            monkeypatch.delenv(name)


def test_first_use_makes_private_tokens_later_uses_read_them(tmp_path: Path) -> None:
    settings = with_local_credentials(EventGwSettings(), tmp_path)
    auth = settings.internal_auth
    publisher = auth.token_for("publisher").get_secret_value()
    orchestrator = auth.token_for("orchestrator").get_secret_value()
    assert publisher != orchestrator, "one token per server"
    assert len(publisher) >= 32
    directory = credentials_dir(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("publisher.token", "orchestrator.token"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["orchestrator.token", "publisher.token"]
    again = with_local_credentials(EventGwSettings(), tmp_path).internal_auth
    assert again.token_for("publisher").get_secret_value() == publisher


def test_concurrent_first_uses_agree_on_one_token(tmp_path: Path) -> None:
    """``eventgw up`` starts five processes at once: all must get the same token."""
    tokens: list[str] = []
    start = threading.Barrier(8)

    def first_use() -> None:
        start.wait()
        tokens.append(local_token(tmp_path, "publisher").get_secret_value())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tokens) == 8
    assert len(set(tokens)) == 1
    assert [p.name for p in credentials_dir(tmp_path).iterdir()] == ["publisher.token"]


def test_configured_tokens_are_kept(tmp_path: Path) -> None:
    mine = SecretStr("m" * 40)
    settings = EventGwSettings(internal_auth={"publisher_token": mine})  # type: ignore[arg-type]  # validated input
    filled = with_local_credentials(settings, tmp_path).internal_auth
    assert filled.token_for("publisher").get_secret_value() == "m" * 40
    assert filled.has_token("orchestrator")
    assert not (credentials_dir(tmp_path) / "publisher.token").exists()


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_outside_development_nothing_is_made(tmp_path: Path, environment: str) -> None:
    # (staging's topic-name rule is beside the point here)
    settings = EventGwSettings().model_copy(update={"environment": environment})
    assert with_local_credentials(settings, tmp_path) is settings
    assert not credentials_dir(tmp_path).exists()


def test_a_damaged_token_file_is_named(tmp_path: Path) -> None:
    credentials_dir(tmp_path).mkdir()
    (credentials_dir(tmp_path) / "orchestrator.token").write_text("\n")
    with pytest.raises(ConfigError) as refused:
        with_local_credentials(EventGwSettings(), tmp_path)
    assert refused.value.field == "internal_auth.orchestrator_token"
    assert "orchestrator.token" in refused.value.message
