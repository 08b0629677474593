"""The fault matrix's figures: one row per scenario, a table and a JSON document.

Per scenario: ``sent`` (events handed to the client library), ``acked`` (answered durable:
PUBLISHED, FAILED_WRITES or BACKED_UP, by the service or the client's capture),
``refused`` (NotDurable: not owed), ``processed`` (distinct acknowledged ids whose handler
completed), ``lost`` (acknowledged, no handler ever completed: must be 0), ``duplicates``
(handler invocations beyond the first, over every id, completed or cut short by a kill),
``in_flight`` (single kills: events handed to the gateway and not yet completed when the kill
landed), ``dup_pct_in_flight`` (duplicates per event in flight, %) and ``dup_pct``
(duplicates per acknowledged event, %).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fixtures.procs import REPO_ROOT

if TYPE_CHECKING:
    from collections import Counter
    from pathlib import Path


@dataclass(frozen=True)
class ScenarioResult:
    """The figures of one scenario run."""

    scenario: str
    sent: int
    acked: int
    refused: int
    processed: int
    lost: int
    duplicates: int
    in_flight: int | None
    handled_calls: int
    statuses: dict[str, int]
    kills: list[str]
    duration_s: float
    notes: dict[str, Any] = field(default_factory=dict)
    lost_sample: list[str] = field(default_factory=list)
    outcome: str = "ok"
    """``ok``, or why the scenario failed (then ``lost`` may only mean "not yet processed")."""

    @property
    def dup_pct(self) -> float:
        """Duplicates per acknowledged event, in percent."""
        return 100.0 * self.duplicates / self.acked if self.acked else 0.0

    @property
    def dup_pct_in_flight(self) -> float | None:
        """Duplicates per event in flight at the kill, in percent (single kills only)."""
        if self.in_flight is None:
            return None
        return 100.0 * self.duplicates / max(self.in_flight, 1)

    @classmethod
    def count(
        cls,
        scenario: str,
        *,
        sent: int,
        acked: dict[str, str],
        refused: set[str],
        handled: Counter[str],
        completed: Counter[str],
        kills: list[str],
        duration_s: float,
        notes: dict[str, Any],
        max_dup_pct: float | None = None,
        max_dup_in_flight_pct: float | None = None,
    ) -> ScenarioResult:
        """Work the figures out from the load's answers and the handler's records.

        ``handled`` counts handler starts per id, ``completed`` handler returns; the number
        of events in flight at the kill comes from ``notes["in_flight_at_kill"]``.
        """
        statuses: dict[str, int] = {}
        for status in acked.values():
            statuses[status] = statuses.get(status, 0) + 1
        missing = sorted(set(acked) - set(completed))
        duplicates = sum(handled.values()) - len(handled)
        in_flight = notes.get("in_flight_at_kill")
        outcome = "ok"
        if "failure" in notes:
            outcome = "error"
        elif missing:
            outcome = "LOST"
        elif max_dup_pct is not None and acked and 100 * duplicates / len(acked) > max_dup_pct:
            outcome = f"dups > {max_dup_pct:g} % of acked"
        elif (
            max_dup_in_flight_pct is not None
            and in_flight is not None
            and 100 * duplicates / max(in_flight, 1) > max_dup_in_flight_pct
        ):
            outcome = f"dups > {max_dup_in_flight_pct:g} % in flight"
        return cls(
            scenario=scenario,
            sent=sent,
            acked=len(acked),
            refused=len(refused),
            processed=len(set(acked) & set(completed)),
            lost=len(missing),
            duplicates=duplicates,
            in_flight=in_flight,
            handled_calls=sum(handled.values()),
            statuses=dict(sorted(statuses.items())),
            kills=kills,
            duration_s=round(duration_s, 1),
            notes=notes,
            lost_sample=missing[:10],
            outcome=outcome,
        )

    def as_json(self) -> dict[str, Any]:
        """The row as the JSON document stores it (``dup_pct`` included)."""
        in_flight_pct = self.dup_pct_in_flight
        return {
            **asdict(self),
            "dup_pct": round(self.dup_pct, 3),
            "dup_pct_in_flight": None if in_flight_pct is None else round(in_flight_pct, 3),
        }


COLUMNS = (
    "scenario",
    "sent",
    "acked",
    "refused",
    "processed",
    "lost",
    "dups",
    "in flight",
    "dups % in flight",
    "dups % acked",
    "kills",
    "outcome",
)


def table(rows: list[ScenarioResult]) -> str:
    """The matrix as a Markdown table (what the run prints and docs/faults.md quotes)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        kills = len(r.kills)
        in_flight_pct = r.dup_pct_in_flight
        cells = [
            r.scenario,
            f"{r.sent:,}",
            f"{r.acked:,}",
            f"{r.refused:,}",
            f"{r.processed:,}",
            f"{r.lost:,}",
            f"{r.duplicates:,}",
            "-" if r.in_flight is None else f"{r.in_flight:,}",
            "-" if in_flight_pct is None else f"{in_flight_pct:.2f}",
            f"{r.dup_pct:.2f}",
            str(kills),
            r.outcome,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


@dataclass
class Matrix:
    """The rows of this pytest run; ``add`` rewrites ``path`` so an aborted run keeps them."""

    path: Path
    form: str
    seed: int
    copy_to: Path | None = None
    rows: list[ScenarioResult] = field(default_factory=list)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def add(self, row: ScenarioResult) -> None:
        """Record ``row`` and write the whole document again."""
        self.rows.append(row)
        text = json.dumps(self.document(), indent=2) + "\n"
        for path in (self.path, self.copy_to):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)

    def document(self) -> dict[str, Any]:
        """Everything needed to quote the run: when, which commit, how, on what, the rows."""
        return {
            "started": self.started,
            "commit": _commit(),
            "command": " ".join(["python -m pytest", *sys.argv[1:]]),
            "form": self.form,
            "seed": self.seed,
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            "scenarios": [r.as_json() for r in self.rows],
        }
