"""The tree drawn in `eventgw.core.errors` is the real class tree, and every error is in it.

The drawing drifted once (classes outside the root, classes nothing raised): these tests
parse it and compare it with ``__subclasses__`` over every module of the package, so a new
error class, a moved one or a removed one fails here until the drawing says the same.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from functools import cache

import eventgw
from eventgw.core import errors
from eventgw.core.errors import EventGwError

# An error class that is not under EventGwError must be here, with the reason.
OUTSIDE_THE_ROOT = {
    # A handler's answer, not a failure of the gateway: the worker turns them into NACK and
    # REJECT results (eventgw.processor, public API).
    "eventgw.processor.handlers.Retry",
    "eventgw.processor.handlers.Reject",
    # Fault injection of the in-memory Kafka stand-in, for unit tests only.
    "eventgw.kafka.testing.SimulatedCrash",
    # Argument validation (a ValueError, as the style guide asks) of `redrive_lane`.
    "eventgw.dlq.lanes.NotRedrivable",
}

_LINE = re.compile(
    r"(?P<indent>(?:│   |    )*)(?:[├└]── )?(?P<name>[A-Z]\w*)(?: \((?P<module>[\w.]+)\))?(?:  .*)?"
)


@cache
def every_module() -> tuple[str, ...]:
    """Import every module of the package (an error class defined anywhere is then known)."""
    names = []
    for info in pkgutil.walk_packages(eventgw.__path__, "eventgw."):
        if info.name.rpartition(".")[2] == "__main__":
            continue  # runs the CLI
        importlib.import_module(info.name)
        names.append(info.name)
    return tuple(names)


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """Class name → (parent name, defining module) as the docstring draws it."""
    doc = errors.__doc__
    assert doc is not None
    lines = doc[doc.index("\nEventGwError\n") + 1 :].split("\n\n", 1)[0].splitlines()
    tree: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []  # parents[d] is the last class drawn at depth d
    for line in lines:
        match = _LINE.fullmatch(line)
        assert match, f"cannot read this line of the drawing: {line!r}"
        depth = 0 if line == "EventGwError" else len(match["indent"]) // 4 + 1
        name = match["name"]
        assert name not in tree, f"{name} is drawn twice"
        del parents[depth:]
        tree[name] = (
            parents[-1] if parents else None,
            f"eventgw.{match['module'] or 'core.errors'}",
        )
        parents.append(name)
    return tree


def real_tree() -> dict[str, tuple[str | None, str]]:
    """Class name → (parent name, defining module) from ``__subclasses__``."""
    every_module()
    tree: dict[str, tuple[str | None, str]] = {"EventGwError": (None, "eventgw.core.errors")}
    pending = [EventGwError]
    while pending:
        parent = pending.pop()
        for cls in parent.__subclasses__():
            if not cls.__module__.startswith("eventgw."):
                continue  # a test's own subclass
            assert cls.__name__ not in tree, f"two error classes named {cls.__name__}"
            tree[cls.__name__] = (parent.__name__, cls.__module__)
            pending.append(cls)
    return tree


def test_the_drawing_is_the_class_tree() -> None:
    drawn, real = drawn_tree(), real_tree()
    missing = sorted(set(real) - set(drawn))
    extra = sorted(set(drawn) - set(real))
    moved = sorted(n for n in set(drawn) & set(real) if drawn[n] != real[n])
    assert not missing, f"error classes not in the drawing of eventgw.core.errors: {missing}"
    assert not extra, f"drawn but not defined (or not under EventGwError): {extra}"
    assert not moved, "drawn elsewhere than defined: " + ", ".join(
        f"{n} drawn under {drawn[n][0]} in {drawn[n][1]}, is under {real[n][0]} in {real[n][1]}"
        for n in moved
    )


def test_every_error_class_of_the_package_is_under_the_root() -> None:
    outside = set()
    for name in every_module():
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if (
                cls.__module__ == name
                and issubclass(cls, BaseException)
                and not issubclass(cls, EventGwError)
                and not cls.__name__.startswith("_")  # control flow private to one module
            ):
                outside.add(f"{name}.{cls.__qualname__}")
    assert outside == OUTSIDE_THE_ROOT


def test_the_parser_reads_depth_and_modules() -> None:
    # The checks above are only as good as the parser: a drawing with a known shape.
    assert _LINE.fullmatch("│   └── BackupFull (backup.store)  spool full")
    assert not _LINE.fullmatch("│  └── BackupFull")  # a broken indent is refused, not guessed
    drawn = drawn_tree()
    assert drawn["EventGwError"] == (None, "eventgw.core.errors")
    assert drawn["PayloadTooLarge"] == ("InvalidEvent", "eventgw.core.errors")
