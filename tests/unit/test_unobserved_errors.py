"""The autouse fixture of tests/conftest.py fails a test whose background task died unseen."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from tests.conftest import UnobservedErrors

pytest_plugins = ["pytester"]

_CONFTEST = "from tests.conftest import no_unobserved_task_errors  # noqa: F401\n"

_TESTS = """
import asyncio
import uvloop


async def boom():
    raise RuntimeError("boom in the background")


def test_dropped_task():
    async def main():
        asyncio.get_running_loop().create_task(boom())
        await asyncio.sleep(0.01)

    asyncio.run(main())


def test_dropped_task_on_uvloop():
    async def main():
        asyncio.get_running_loop().create_task(boom())
        await asyncio.sleep(0.01)

    uvloop.run(main())


def test_failing_callback():
    async def main():
        asyncio.get_running_loop().call_soon(lambda: 1 / 0)
        await asyncio.sleep(0.01)

    asyncio.run(main())


def test_observed_task():
    async def main():
        task = asyncio.get_running_loop().create_task(boom())
        try:
            await task
        except RuntimeError:
            pass

    asyncio.run(main())
"""


def test_a_task_that_died_unseen_fails_its_test(
    pytester: pytest.Pytester, no_unobserved_task_errors: UnobservedErrors
) -> None:
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    # The inner errors went through this test's own handler too: they are expected here.
    no_unobserved_task_errors.records.clear()

    result.assert_outcomes(passed=4, errors=3)
    for name in ("test_dropped_task", "test_dropped_task_on_uvloop", "test_failing_callback"):
        result.stdout.fnmatch_lines([f"*ERROR at teardown of {name} _*"])
    result.stdout.fnmatch_lines(
        [
            "*asyncio error(s) nobody observed*",
            "*Task exception was never retrieved*",
            "RuntimeError: boom in the background",
        ]
    )
    result.stdout.fnmatch_lines(["*ZeroDivisionError*"])
    assert "teardown of test_observed_task" not in result.stdout.str()
