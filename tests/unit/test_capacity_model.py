"""The capacity table of docs/operations.md follows from its own formula and inputs.

An edit of a measured input (CPU-s per 100k events) that forgets the cores or pods, or a
slip in the arithmetic, fails here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
RATE_PER_S = 170_000


def rows() -> dict[str, list[str]]:
    section = OPERATIONS.read_text().split("### Capacity model", 1)[1].split("\n#", 1)[0]
    table = [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln]
    cells = [[c.strip().strip("*") for c in ln.strip("|").split("|")] for ln in table[1:]]
    return {c[0]: c[1:] for c in cells}


def test_cores_and_pods_follow_from_cpu_per_event() -> None:
    table = rows()
    assert re.search(r"\*\*170k events/s\*\*", OPERATIONS.read_text())
    components = [name for name, cells in table.items() if cells[2]]  # with a target
    assert len(components) == 4
    for name in [*components, "Kafka broker (leader work)"]:
        cpu, cores, target, pods = table[name]
        expected = RATE_PER_S / 100_000 * float(cpu)
        assert math.isclose(float(cores), expected, abs_tol=0.006), name
        if target:
            utilisation = float(target.removesuffix(" %")) / 100
            assert int(pods) == math.ceil(expected / utilisation) + 1, name
    cpu, cores, _, pods = table["total eventgw"]
    assert math.isclose(float(cpu), sum(float(table[n][0]) for n in components))
    assert math.isclose(float(cores), RATE_PER_S / 100_000 * float(cpu), abs_tol=0.006)
    assert int(pods) == sum(int(table[n][3]) for n in components)
