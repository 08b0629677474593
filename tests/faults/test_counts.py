"""How the fault matrix counts (tests/faults/matrix.py): pure, no processes, no Kafka."""

from __future__ import annotations

from collections import Counter

from tests.faults.matrix import ScenarioResult, table


def count(
    *,
    acked: dict[str, str],
    handled: Counter[str],
    completed: Counter[str],
    notes: dict[str, object] | None = None,
    **bounds: float,
) -> ScenarioResult:
    return ScenarioResult.count(
        "s",
        sent=len(acked),
        acked=acked,
        refused=set(),
        handled=handled,
        completed=completed,
        kills=["processor"],
        duration_s=1.0,
        notes=dict(notes or {}),
        **bounds,
    )


def test_started_but_never_completed_is_lost() -> None:
    # A handler cut short by the kill and never run again: it started, it did not finish.
    result = count(
        acked={"a": "PUBLISHED", "b": "PUBLISHED"},
        handled=Counter(["a", "b"]),
        completed=Counter(["a"]),
    )
    assert (result.processed, result.lost, result.lost_sample) == (1, 1, ["b"])
    assert result.outcome == "LOST"


def test_rerun_counts_as_a_duplicate_and_processed_once() -> None:
    result = count(
        acked={"a": "PUBLISHED", "b": "client:FAILED_WRITES"},
        handled=Counter(["a", "a", "b"]),
        completed=Counter(["a", "b"]),
        notes={"in_flight_at_kill": 50},
    )
    assert (result.processed, result.lost, result.duplicates) == (2, 0, 1)
    assert result.dup_pct == 50.0
    assert result.dup_pct_in_flight == 2.0
    assert result.statuses == {"PUBLISHED": 1, "client:FAILED_WRITES": 1}
    assert result.outcome == "ok"


def test_bounds_set_the_outcome() -> None:
    acked = {str(i): "PUBLISHED" for i in range(100)}
    handled = Counter(acked.keys()) + Counter(["0", "1"])
    completed = Counter(acked.keys())
    over_acked = count(acked=acked, handled=handled, completed=completed, max_dup_pct=1.0)
    assert over_acked.outcome == "dups > 1 % of acked"
    over_in_flight = count(
        acked=acked,
        handled=handled,
        completed=completed,
        notes={"in_flight_at_kill": 100},
        max_dup_in_flight_pct=1.0,
    )
    assert over_in_flight.outcome == "dups > 1 % in flight"
    within = count(
        acked=acked,
        handled=handled,
        completed=completed,
        notes={"in_flight_at_kill": 200},
        max_dup_in_flight_pct=1.0,
    )
    assert within.outcome == "ok"


def test_failure_note_wins_and_table_shows_the_row() -> None:
    result = count(
        acked={"a": "PUBLISHED"},
        handled=Counter(),
        completed=Counter(),
        notes={"failure": "AssertionError: components crashed"},
    )
    assert result.outcome == "error"
    assert result.in_flight is None
    assert result.dup_pct_in_flight is None
    lines = table([result]).splitlines()
    assert lines[0].startswith("| scenario | sent | acked |")
    assert lines[2] == "| s | 1 | 1 | 0 | 0 | 1 | 0 | - | - | 0.00 | 1 | error |"
