"""Bad option values of ``eventgw dlq`` and ``eventgw replay``: exit 2, one line naming it.

Every value is checked before a Kafka client is created, so these run without a broker
(the settings point at a closed port to prove nothing connects).
"""

from __future__ import annotations

import pytest

from eventgw.cli.main import main

NO_BROKER = "127.0.0.1:1"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    """No settings from the environment; the logging main() sets up undone afterwards."""
    for name in list(__import__("os").environ):
        if name.startswith("EVENTGW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVENTGW_KAFKA__PRIMARY__BOOTSTRAP_SERVERS", NO_BROKER)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["dlq", "list", "--since", "yesterday"], "--since"),
        (["dlq", "list", "--until", "soon"], "--until"),
        (["dlq", "list", "--since", "1h", "--until", "2h"], "--since/--until"),
        (["dlq", "list", "--class", "P40"], "--class"),
        (["dlq", "list", "--limit", "0"], "--limit"),
        (["dlq", "show", "12"], "PARTITION:OFFSET"),
        (["dlq", "show", "1:2", "--payload-bytes", "lots"], "--payload-bytes"),
        (["dlq", "redrive", "--all", "--rate", "-5"], "--rate"),
        (["dlq", "redrive", "--all", "--rate", "0"], "--rate"),
        (["dlq", "redrive", "--records", "1-2"], "--records"),
        (["dlq", "redrive", "--records", "0:1,x"], "--records"),
        (["dlq", "redrive"], "--all"),
        (["dlq", "redrive", "--parking-lot", "--limit", "5"], "--all"),
        (["replay", "--retry", "90s", "--since", "1h"], "--retry"),
        (["replay", "--retry", "soon", "--since", "1h"], "--retry"),
        (["replay", "--topic", "my-topic", "--since", "1h"], "--topic"),
        (["replay", "--retry", "60s"], "--since/--until/--offsets"),
        (["replay", "--retry", "1m", "--offsets", "0:a-b"], "--offsets"),
        (["replay", "--retry", "2m", "--since", "1h", "--rate", "fast"], "--rate"),
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    command = "eventgw dlq " + argv[1] if argv[0] == "dlq" else "eventgw replay"
    assert lines[0].startswith(f"{command}: {option}: "), lines[0]
