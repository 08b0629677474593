"""The repository stands alone, and what it cites exists.

- No file names the workspace specification that lived outside the repository: the design
  is in docs/design.md and the pages it links.
- A citation of a doc section is written ``docs/<page>.md, "<Section>"`` (one form; a
  docs page citing another in the same folder drops the ``docs/``). The page must exist and
  have that section: a Markdown heading, or a runbook entry (a list item that starts with a
  bold title). The cited text is the whole title or its short form — what comes before
  ": ", " (" or " — " — so ``"Memory thresholds"`` cites "Memory thresholds (bounded
  memory)". Links into a page (``page.md#anchor``) must name an existing heading's anchor.
- Every ``docs/<page>.md`` named anywhere exists, and every module path the docs name
  (``src/eventgw/orchestrator/sessions.py``, ``processor/credit.py``, the bare module names
  listed under a "(`src/eventgw/<package>/`)" heading) is a file of the tree.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
_THIS_FILE = Path(__file__).resolve()

_SKIP_DIRS = {
    ".git",
    ".venv",
    ".eventgw",
    ".hypothesis",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".grimp_cache",
    ".import_linter_cache",
    "__pycache__",
    "build",
    "dist",
    "node_modules",
    "test-artifacts",
}

# The name is assembled so that this file does not match itself.
_OUTSIDE_SPEC = "SYSTEM" + ".md"

# CHANGELOG.md keeps what was written at the time; the maintainer curates it by hand. Its two
# old mentions are reworded there, not here; until then they are the only ones allowed.
_HISTORY = {"CHANGELOG.md": 2}

_CITATION = re.compile(r'(?<![\w/.-])(docs/)?([a-z0-9-]+\.md),\s*(?:#\s*)?"([^"]{1,200})"')
# A page and a quoted title not joined by ", ": `docs/x.md "Title"`, `docs/x.md ("Title")`.
_LOOSE_CITATION = re.compile(r'(?<![\w/.-])docs/[a-z0-9-]+\.md(?:\s+\(?|\s*\(|\)\s*\()"(?=[A-Z])')
_DOC_PATH = re.compile(r"(?<![\w/.-])docs/([A-Za-z0-9_.-]+\.md)")
_ANCHOR_LINK = re.compile(r"\]\(((?:\.\./|\./)?(?:docs/)?[a-z0-9-]+\.md)?#([^)\s]+)\)")
_MODULE_PATH = re.compile(r"(?<![\w/.-])(src/eventgw/[\w/{},]+\.py|[a-z_]+/[\w/{},]*\.py)")
_SECTION_PACKAGE = re.compile(r"^#+ .*\(`src/eventgw/([a-z_]+)/`")
_BARE_MODULE = re.compile(r"^\s*- `([a-z_]+\.py)`")


def _repo_files() -> list[Path]:
    files = []
    stack = [REPO]
    while stack:
        for path in sorted(stack.pop().iterdir()):
            if path.is_dir():
                if path.name not in _SKIP_DIRS and not path.name.endswith(".egg-info"):
                    stack.append(path)
            elif path.is_file():
                files.append(path)
    return files


def _text_files(*roots: str) -> list[Path]:
    suffixes = {".py", ".md", ".html", ".toml", ".yaml", ".yml", ".txt", ".proto", ""}
    out = []
    for path in _repo_files():
        rel = path.relative_to(REPO)
        # This file names example citations and pages in its patterns.
        if (
            (rel.parts[0] in roots or str(rel) in roots)
            and path.suffix in suffixes
            and "_proto" not in rel.parts
            and path != _THIS_FILE
        ):
            out.append(path)
    return out


def _short(title: str) -> str:
    for sep in (": ", " (", " — "):
        title = title.split(sep, 1)[0]
    return title


def _plain(text: str) -> str:
    return re.sub(r"[`*]", "", text).strip()


def _github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", _plain(title).lower()).replace(" ", "-")


@cache
def _sections(page: str) -> tuple[frozenset[str], frozenset[str]]:
    """(section titles, heading anchors) of docs/<page>."""
    titles: set[str] = set()
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in (DOCS / page).read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if m := re.match(r"#+\s+(.*)", line):
            title = _plain(m.group(1))
            titles |= {title, _short(title)}
            anchor = _github_anchor(m.group(1))
            n = seen.get(anchor, 0)
            seen[anchor] = n + 1
            anchors.add(anchor if n == 0 else f"{anchor}-{n}")
        elif m := re.match(r"\s*- \*\*([^*]+)\*\*", line):
            title = _plain(m.group(1))
            titles |= {title, _short(title)}
    return frozenset(titles), frozenset(anchors)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_no_file_names_the_outside_specification() -> None:
    found = {}
    for path in _repo_files():
        count = path.read_bytes().count(_OUTSIDE_SPEC.encode())
        if count and count != _HISTORY.get(_rel(path)):
            found[_rel(path)] = count
    assert not found, (
        f"{_OUTSIDE_SPEC} is outside the repository: cite docs/design.md (or the page it "
        f"links) instead. Files naming it: {found}"
    )


def test_every_cited_doc_section_exists() -> None:
    checked = 0
    problems = []
    for path in _text_files("src", "tests", "bench", "scripts", "docs", "deploy", "README.md"):
        text = path.read_text()
        for m in _CITATION.finditer(text):
            prefix, page, section = m.groups()
            if path.parent == DOCS or prefix:
                section = re.sub(r"\s*\n\s*#?\s*", " ", section).strip()
                line = text.count("\n", 0, m.start()) + 1
                if not (DOCS / page).is_file():
                    problems.append(f"{_rel(path)}:{line}: docs/{page} does not exist")
                elif section not in _sections(page)[0]:
                    problems.append(f'{_rel(path)}:{line}: docs/{page} has no section "{section}"')
                checked += 1
    assert not problems, "\n".join(problems)
    assert checked > 20, "the citation pattern no longer finds the citations in the code"


def test_citations_use_the_one_form() -> None:
    loose = []
    for path in _text_files("src", "tests", "bench", "scripts", "deploy"):
        text = path.read_text()
        for m in _LOOSE_CITATION.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            loose.append(f"{_rel(path)}:{line}: {m.group(0)!r}")
    assert not loose, 'write a section citation as docs/<page>.md, "<Section>":\n' + "\n".join(
        loose
    )


def test_every_named_doc_page_exists() -> None:
    missing = []
    for path in _text_files("src", "tests", "bench", "scripts", "docs", "deploy", "README.md"):
        missing += [
            f"{_rel(path)}: docs/{m.group(1)}"
            for m in _DOC_PATH.finditer(path.read_text())
            if not (DOCS / m.group(1)).is_file()
        ]
    assert not missing, "\n".join(missing)


def test_every_link_anchor_names_a_heading() -> None:
    broken = []
    for path in [*DOCS.glob("*.md"), REPO / "README.md"]:
        for m in _ANCHOR_LINK.finditer(path.read_text()):
            target, anchor = m.groups()
            page = Path(target).name if target else path.name
            if path == REPO / "README.md" and not target:
                continue  # README's own headings are not checked
            if not (DOCS / page).is_file() or anchor not in _sections(page)[1]:
                broken.append(f"{_rel(path)}: {target or ''}#{anchor}")
    assert not broken, "\n".join(broken)


def _expand(path: str) -> list[str]:
    """``a/{b,c}.py`` → ``a/b.py``, ``a/c.py``."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    head, tail = path[: m.start()], path[m.end() :]
    return [p for alt in m.group(1).split(",") for p in _expand(head + alt + tail)]


def _resolve(path: str) -> Path:
    if path.startswith("src/"):
        return REPO / path
    if Path(path).name.startswith("test_"):  # tests/unit: `orchestrator/test_fetcher.py`
        return REPO / "tests" / "unit" / path
    return REPO / "src" / "eventgw" / path


# A dated log of past measurements: its older sections name the code as it was then.
_HISTORICAL = {"benchmarks.md"}

_PACKAGES = {p.name for p in (REPO / "src" / "eventgw").iterdir() if p.is_dir()}


@pytest.mark.parametrize(
    "page", sorted(p.name for p in DOCS.glob("*.md") if p.name not in _HISTORICAL)
)
def test_every_module_the_docs_name_exists(page: str) -> None:
    missing = []
    package = None
    for n, line in enumerate((DOCS / page).read_text().splitlines(), 1):
        if line.startswith("#"):
            m = _SECTION_PACKAGE.match(line)
            package = m.group(1) if m else None
        for m in _MODULE_PATH.finditer(line):
            named = m.group(1)
            top = named.split("/", 1)[0]
            if named.startswith("src/") or top in _PACKAGES:
                missing += [f"{page}:{n}: {p}" for p in _expand(named) if not _resolve(p).exists()]
        m = _BARE_MODULE.match(line) if package else None
        if m and not (REPO / "src" / "eventgw" / str(package) / m.group(1)).exists():
            missing.append(f"{page}:{n}: src/eventgw/{package}/{m.group(1)}")
    assert not missing, "modules named in the docs that do not exist:\n" + "\n".join(missing)


def test_the_module_check_can_fail() -> None:
    """The path pattern still sees the modules the architecture page lists."""
    text = (DOCS / "architecture.md").read_text()
    named = {p for m in _MODULE_PATH.finditer(text) for p in _expand(m.group(1))}
    assert {"cli/runner.py", "core/lifecycle.py"} <= named
    assert _resolve("orchestrator/no_such_module.py").exists() is False
