"""The internal gRPC tokens' settings: from the environment or a file, checked, named."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from eventgw.config.local_credentials import with_local_credentials
from eventgw.config.settings import EventGwSettings, load_settings
from eventgw.core.errors import ConfigError
from eventgw.ingest.service import IngestService
from eventgw.metrics.backend import Metrics
from eventgw.orchestrator.service import OrchestratorService
from eventgw.processor.service import ProcessorService
from eventgw.publisher.service import PublisherParts, PublisherService

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "0123456789abcdef" * 4  # 64 characters, as openssl rand -hex 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EVENTGW_"):
            monkeypatch.delenv(name)


def test_a_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTGW_INTERNAL_AUTH__PUBLISHER_TOKEN", TOKEN)
    auth = load_settings().internal_auth
    assert auth.token_for("publisher").get_secret_value() == TOKEN
    assert TOKEN not in repr(auth), "never printed"
    assert not auth.has_token("orchestrator")


def test_a_token_comes_from_a_file_as_a_mounted_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "orchestrator-token"
    secret.write_text(TOKEN + "\n")  # Secrets made with echo end with a newline
    monkeypatch.setenv("EVENTGW_INTERNAL_AUTH__ORCHESTRATOR_TOKEN_FILE", str(secret))
    auth = load_settings().internal_auth
    assert auth.token_for("orchestrator").get_secret_value() == TOKEN


@pytest.mark.parametrize(
    ("env", "field", "text"),
    [
        ({"PUBLISHER_TOKEN": "short"}, "internal_auth.publisher_token", "at least 32"),
        ({"PUBLISHER_TOKEN": "a b" * 20}, "internal_auth.publisher_token", "no spaces"),
        ({"ORCHESTRATOR_TOKEN": "é" * 40}, "internal_auth.orchestrator_token", "ASCII"),
        (
            {"PUBLISHER_TOKEN": TOKEN, "PUBLISHER_TOKEN_FILE": "{tmp}/t"},
            "internal_auth.publisher_token_file",
            "not both",
        ),
        (
            {"ORCHESTRATOR_TOKEN_FILE": "{tmp}/missing"},
            "internal_auth.orchestrator_token_file",
            "cannot read",
        ),
        (
            {"ORCHESTRATOR_TOKEN_FILE": "{tmp}/short"},
            "internal_auth.orchestrator_token_file",
            "at least 32",
        ),
        (
            {"ORCHESTRATOR_TOKEN_FILE": "{tmp}/binary"},
            "internal_auth.orchestrator_token_file",
            "not ASCII",
        ),
    ],
)
def test_a_bad_token_is_refused_at_start_up_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    field: str,
    text: str,
) -> None:
    (tmp_path / "t").write_text(TOKEN)
    (tmp_path / "short").write_text("abc\n")
    (tmp_path / "binary").write_bytes(b"\xff" * 40)
    for name, value in env.items():
        monkeypatch.setenv(f"EVENTGW_INTERNAL_AUTH__{name}", value.format(tmp=tmp_path))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert refused.value.field == field
    assert text in refused.value.message
    assert TOKEN not in str(refused.value)


def production(home: Path) -> EventGwSettings:
    """Production settings as the CLI hands them to a component: no token is made."""
    # (production's SASL_SSL rule is beside the point here)
    settings = load_settings().model_copy(update={"environment": "production"})
    filled = with_local_credentials(settings, home)
    assert not (home / "credentials").exists()
    return filled


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (PublisherService, "internal_auth.publisher_token"),
        (OrchestratorService, "internal_auth.orchestrator_token"),
        (ProcessorService, "internal_auth.orchestrator_token"),
    ],
)
def test_in_production_a_component_without_its_token_does_not_start(
    build: type, field: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as refused:
        build(production(tmp_path))
    assert refused.value.field == field
    assert "not set" in refused.value.message


def test_an_ingest_needs_the_publisher_token_unless_the_publisher_is_inside_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"internal_auth\.publisher_token"):
        IngestService(production(tmp_path))
    settings = production(tmp_path)
    ingest = settings.ingest.model_copy(update={"embedded_publisher": True})
    colocated = settings.model_copy(update={"ingest": ingest})
    IngestService(colocated, embedded=PublisherParts(colocated, Metrics()))
