"""Shared pytest configuration.

Fixtures for the real local Kafka, the S3-compatible server, the in-process write path,
headless Chromium and the fault matrix's options and report live in tests/fixtures; so
does the check that every test leaves the logging configuration as it found it. The
autouse fixture below fails a test in which an asyncio task or callback died with an
exception that nobody observed.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.faults",
    "tests.fixtures.kafka",
    "tests.fixtures.logging_state",
    "tests.fixtures.s3",
    "tests.fixtures.stack",
]


class UnobservedErrors(logging.Handler):
    """Collects the errors asyncio reports because no code was there to receive them.

    A task that raises and is never awaited, a future whose exception is never read, a
    callback that raises: the loop hands each to its exception handler, and the default one
    (asyncio's and uvloop's alike) logs it at ERROR on the ``asyncio`` logger with the
    exception attached — "Task exception was never retrieved", "Exception in callback ...".
    A task that was still pending when its loop closed carries no exception and is not
    collected here.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or "exception was never retrieved" in record.getMessage():
            self.records.append(record)

    def report(self) -> str:
        """One paragraph per record: the loop's message and the exception it carried."""
        formatter = logging.Formatter("%(message)s")
        return "\n\n".join(formatter.format(r) for r in self.records)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what import and collection made out of the collector's sight (``gc.freeze``).

    The fixture below runs a full collection after every test; with the modules and test
    items frozen it walks only what tests made since, which keeps it at a few milliseconds
    instead of a few hundred. (The CLI does the same after start-up: `eventgw.cli.runner`.)
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def no_unobserved_task_errors() -> Iterator[UnobservedErrors]:
    """Fail the test if a background task or callback died unseen while it ran.

    STYLE.md's "no task dies unseen" as a test rule (as in arroyo's
    ``assert_no_internal_errors``). The garbage collection at the end makes a task that was
    dropped with its exception report now, in the test that dropped it, not in a later one.
    """
    errors = UnobservedErrors()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(errors)
    try:
        yield errors
        gc.collect()
    finally:
        asyncio_logger.removeHandler(errors)
    if errors.records:
        pytest.fail(
            f"{len(errors.records)} asyncio error(s) nobody observed (a background task or "
            f"callback raised and no code received the exception):\n\n{errors.report()}",
            pytrace=False,
        )
