"""Package APIs and the exceptions to the import contracts (docs/architecture.md, "Package
layout and dependency rules"). The contracts themselves run as ``lint-imports`` in
scripts/test.

The ``__all__`` rule: a package whose ``__init__.py`` re-exports names lists exactly those
names, sorted, in ``__all__``; a package whose ``__init__.py`` is only a docstring has no
package-level API (its modules are imported by path). A module that declares ``__all__``
declares only names it has. The packages users import from — ``eventgw.client`` and
``eventgw.processor`` (README, "Python API" and "Writing a processor") — must re-export.
"""

from __future__ import annotations

import ast
import collections.abc
import importlib
import tomllib
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "eventgw"

USER_FACING = ("eventgw.client", "eventgw.processor")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts)


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                assert isinstance(node.value, ast.List | ast.Tuple), "__all__ must be a literal"
                return [ast.literal_eval(e) for e in node.value.elts]
    return None


def _packages() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("__init__.py") if "_proto" not in p.parts)


@pytest.mark.parametrize("init", _packages(), ids=lambda p: _module_name(p))
def test_a_package_exports_exactly_what_it_reexports(init: Path) -> None:
    tree = ast.parse(init.read_text())
    declared = _declared_all(tree)
    reexported = sorted(
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module != "__future__"
        for alias in node.names
        if not (alias.asname or alias.name).startswith("_")
    )
    if declared is None:
        rest = [
            n
            for n in tree.body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            and not (isinstance(n, ast.Assign) and _is_version(n))
        ]
        assert not rest, (
            f"{_module_name(init)}: an __init__.py without __all__ holds only its docstring; "
            "re-export the package's API with a sorted __all__"
        )
        return
    assert sorted(declared) == reexported, (
        f"{_module_name(init)}.__all__ must list exactly the names its __init__ imports"
    )


def _is_version(node: ast.Assign) -> bool:
    return [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]


@pytest.mark.parametrize("name", USER_FACING)
def test_user_facing_packages_reexport_their_api(name: str) -> None:
    module = importlib.import_module(name)
    assert getattr(module, "__all__", None), f"{name} has no __all__"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _module_name(p))
def test_every_name_in_all_exists(path: Path) -> None:
    declared = _declared_all(ast.parse(path.read_text()))
    if declared is None:
        return
    assert len(declared) == len(set(declared)), f"{_module_name(path)}: __all__ repeats a name"
    module = importlib.import_module(_module_name(path))
    missing = [n for n in declared if not hasattr(module, n)]
    assert not missing, f"{_module_name(path)}.__all__ names what it does not have: {missing}"


def test_all_check_sees_the_exports() -> None:
    """The checks above read the real declarations (they could pass on an empty scan)."""
    declared = _declared_all(ast.parse((PACKAGE / "processor" / "__init__.py").read_text()))
    assert declared is not None
    assert "Retry" in declared
    with_all = [p for p in _modules() if _declared_all(ast.parse(p.read_text())) is not None]
    assert len(with_all) > 20


# --- the handler contract ---------------------------------------------------------------


def test_handlers_receive_the_public_event_type() -> None:
    """A handler's event is typed with `eventgw.processor.EventData`, the public name of the
    event message; nothing a user writes needs ``eventgw._proto``."""
    import eventgw.processor as processor
    from eventgw._proto.eventgw.v1 import eventgw_pb2

    params, returns = typing.get_args(processor.Handler)
    assert params == [processor.EventData]
    assert returns == collections.abc.Awaitable[None]
    assert processor.EventData is eventgw_pb2.EventData  # the message itself, not a copy
    assert {"EventData", "Handler", "Reject", "Retry"} <= set(processor.__all__)
    from eventgw.processor import handlers

    for doc in (processor.__doc__, handlers.__doc__):
        assert doc is not None
        assert "_proto" not in doc, "the handler docs must name the public import"
        assert "from eventgw.processor import EventData" in doc
    readme = (REPO / "README.md").read_text()
    assert "from eventgw.processor import EventData" in readme


# --- exceptions to the import contracts -------------------------------------------------


def _ignored_imports() -> list[tuple[str, str, str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [
        (contract["name"], *(side.strip() for side in line.split("->")))
        for contract in config["tool"]["importlinter"]["contracts"]
        for line in contract.get("ignore_imports", [])
    ]


def _type_checking_only(importer: str, imported: str) -> list[int]:
    """Line numbers where ``importer`` imports ``imported`` outside ``if TYPE_CHECKING:``."""
    path = SRC / Path(*importer.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            guarded |= {id(n) for child in node.body for n in ast.walk(child)}
    lines = []
    for node in ast.walk(tree):
        names: list[str]
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        if any(n == imported or imported.startswith(n + ".") for n in names) and (
            id(node) not in guarded
        ):
            lines.append(node.lineno)
    return lines


def test_ignored_imports_are_for_type_checking_only() -> None:
    """Each ``ignore_imports`` of the import-linter contracts is an annotation, not a
    dependency at run time: an exception may never carry code across a boundary."""
    ignored = _ignored_imports()
    assert ignored, "the contracts list their exceptions"
    for contract, importer, imported in ignored:
        assert _type_checking_only(importer, imported) == [], (
            f"{contract}: {importer} -> {imported} is allowed only under `if TYPE_CHECKING:`"
        )


def test_a_run_time_import_is_found() -> None:
    """The check above sees an import outside TYPE_CHECKING (it can fail)."""
    assert _type_checking_only("eventgw.orchestrator.service", "eventgw.kafka.producer") != []
    assert _type_checking_only("eventgw.ingest.service", "eventgw.publisher.service") == []
