"""requirements.lock pins every dependency pyproject.toml declares, within its range.

scripts/bootstrap installs with the lock as pip constraints: a dependency missing from it
would float on a fresh machine, and a pin outside a range would make the install fail
there. After changing dependencies, run scripts/lock.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: {line!r} is not name==version"
            out[canonicalize_name(name)] = version
    return out


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]["dev"]
    bench = (ROOT / "bench" / "extras.txt").read_text().split()
    return [Requirement(r) for r in [*project["dependencies"], *extras, *bench]]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    locked = pins()
    assert len(locked) > 50  # the whole tree, not only the direct dependencies
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock: run scripts/lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={locked[name]}, outside {req.specifier}: "
            "run scripts/lock"
        )
