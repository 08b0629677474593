"""``eventgw.cli.logs.configure`` and the test guard that keeps it from leaking between tests.

``configure`` is the one place that installs handlers. The guard in
tests/fixtures/logging_state.py must see everything it changes (or a test that runs
``main()`` in-process would leave a handler on a closed capture buffer for every later
test) and must put all of it back.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING

import pytest

from eventgw.cli import logs
from tests.fixtures import logging_state

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def before() -> Iterator[dict[str, logging_state.LoggerState]]:
    state = logging_state.capture()
    yield state
    logging_state.restore(state)


def test_the_guard_names_every_logger_configure_changes_and_restores_them(
    before: dict[str, logging_state.LoggerState],
) -> None:
    logs.configure("DEBUG", "json")
    changed = {line.split(":", 1)[0] for line in logging_state.changes(before)}
    assert changed >= {"root", "uvicorn.error", "watchfiles", "aiobotocore", "botocore"}
    root = logging.getLogger()
    assert [type(h) for h in root.handlers] == [logging.StreamHandler]
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)  # as the line above says
    assert handler.stream is sys.stderr
    logging_state.restore(before)
    assert logging_state.changes(before) == []


def test_a_logger_first_made_during_a_test_counts_once_configured(
    before: dict[str, logging_state.LoggerState],
) -> None:
    name = "eventgw.tests.made-during-the-test"
    fresh = logging.getLogger(name)
    fresh.addHandler(logging.NullHandler())  # what a library does on import: not a change
    assert logging_state.changes(before) == []
    fresh.setLevel("ERROR")
    assert [line.split(":", 1)[0] for line in logging_state.changes(before)] == [name]
    logging_state.restore(before)
    assert logging_state.changes(before) == []


def test_json_lines_carry_the_formatted_message(
    before: dict[str, logging_state.LoggerState], capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("eventgw.x").warning("batch.served batch_id=%s size=%d", "b1", 3)
    logging_state.restore(before)
    doc = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (doc["level"], doc["logger"], doc["msg"]) == (
        "WARNING",
        "eventgw.x",
        "batch.served batch_id=b1 size=3",
    )
