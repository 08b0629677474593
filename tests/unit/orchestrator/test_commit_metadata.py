"""The finished-runs codec of commit metadata: round trip, size bound, hostile input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventgw.orchestrator.commit_metadata import MAX_CHARS, decode, encode


@st.composite
def runs_above(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    committed = draw(st.integers(0, 10**12))
    runs = []
    prev = committed
    for gap, length in draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)))):
        start = prev + gap
        runs.append((start, start + length))
        prev = start + length + 1
    return committed, runs


@given(runs_above())
def test_round_trip_keeps_a_prefix_of_the_runs(case: tuple[int, list[tuple[int, int]]]) -> None:
    committed, runs = case
    text = encode(committed, runs)
    assert len(text) <= MAX_CHARS
    decoded = decode(committed, text)
    assert decoded == runs[: len(decoded)], "what fits is kept exactly, in order"
    if len(text) < MAX_CHARS - 40:
        assert decoded == runs, "everything fits when it is short"


def test_runs_not_above_the_commit_are_never_written() -> None:
    assert encode(100, [(50, 60)]) == ""
    assert decode(100, encode(100, [(101, 105), (103, 110)])) == [(101, 105)]


@given(st.text(max_size=5000), st.integers(0, 10**12))
def test_anything_else_decodes_to_nothing_and_never_raises(text: str, committed: int) -> None:
    decoded = decode(committed, text)
    assert decoded == [] or text.startswith("eg1:")


def test_malformed_metadata_is_ignored_whole() -> None:
    assert decode(0, "eg1:1+2,zz") == []
    assert decode(0, "eg1:" + "1" * 17 + "+0") == []
    assert decode(0, "someone else's metadata") == []
    assert decode(5, "eg1:0+3,2+0") == [(5, 8), (11, 11)]
