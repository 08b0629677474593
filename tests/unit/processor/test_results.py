"""The spliced result messages are byte-identical to protobuf's serialization of them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.processor.handlers import ACKED, Outcome
from eventgw.processor.results import Result, results_record, work_request

_outcomes = st.builds(
    Outcome,
    st.sampled_from([pb.ACK, pb.NACK, pb.RELEASE, pb.REJECT]),
    st.integers(0, 2**32 - 1),
    st.text(max_size=300),
)
_results = st.lists(
    st.tuples(st.text(max_size=60), st.integers(0, 2**32 - 1), st.text(max_size=60), _outcomes),
    max_size=20,
)


def _result(r: Result, worker_id: str, index: int, *, with_event_id: bool) -> pb.TaskResult:
    task_id, count, event_id, o = r
    return pb.TaskResult(
        task_id=task_id,
        kind=o.kind,
        delay_ms=o.delay_ms,
        error=o.error,
        worker_id=worker_id,
        event_id=event_id if with_event_id else "",
        orchestrator_index=index,
        delivery_count=count,
    )


@given(_results, st.text(max_size=40), st.integers(0, 2**32 - 1))
def test_results_record_equals_the_serialized_message(
    results: list[Result], worker_id: str, index: int
) -> None:
    expected = pb.TaskResults(
        results=[_result(r, worker_id, index, with_event_id=True) for r in results]
    ).SerializeToString()
    assert results_record(results, worker_id, index) == expected


@given(
    _results,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.text(max_size=40),
)
def test_work_request_equals_the_serialized_message(
    results: list[Result], credit: int, revoke: int, worker_id: str
) -> None:
    expected = pb.WorkRequest(
        worker_id=worker_id,
        credit=credit,
        results=[_result(r, "", 0, with_event_id=False) for r in results],
        revoke=revoke,
    ).SerializeToString()
    assert work_request(results, credit=credit, revoke=revoke, worker_id=worker_id) == expected


def test_a_typical_message_parses_back() -> None:
    results: list[Result] = [
        (f"events.public.p20/0/{i}", 1, f"e{i}", o)
        for i, o in enumerate([Outcome(pb.ACK), Outcome(pb.NACK, 5000, "boom"), Outcome(pb.ACK)])
    ]
    parsed = pb.WorkRequest.FromString(work_request(results, credit=3))
    assert parsed.credit == 3
    assert [(r.task_id, r.kind, r.delay_ms, r.error) for r in parsed.results] == [
        ("events.public.p20/0/0", pb.ACK, 0, ""),
        ("events.public.p20/0/1", pb.NACK, 5000, "boom"),
        ("events.public.p20/0/2", pb.ACK, 0, ""),
    ]
    record = pb.TaskResults.FromString(results_record(results, "w-1", 2))
    assert {(r.worker_id, r.orchestrator_index, r.delivery_count) for r in record.results} == {
        ("w-1", 2, 1)
    }
    assert [r.event_id for r in record.results] == ["e0", "e1", "e2"]


def test_a_plain_ack_travels_as_its_task_id() -> None:
    results: list[Result] = [
        ("t/0/1", 1, "e1", ACKED),
        ("t/0/2", 2, "e2", Outcome(pb.NACK, 10, "x")),
        ("t/0/3", 1, "e3", ACKED),
    ]
    raw = work_request(results, credit=2, revoke=1)
    parsed = pb.WorkRequest.FromString(raw)
    assert list(parsed.acked) == ["t/0/1", "t/0/3"]
    assert [(r.task_id, r.kind, r.delivery_count) for r in parsed.results] == [
        ("t/0/2", pb.NACK, 2)
    ]
    assert (parsed.credit, parsed.revoke) == (2, 1)
    expected = pb.WorkRequest(
        credit=2,
        results=[
            pb.TaskResult(task_id="t/0/2", kind=pb.NACK, delay_ms=10, error="x", delivery_count=2)
        ],
        revoke=1,
        acked=["t/0/1", "t/0/3"],
    )
    assert raw == expected.SerializeToString(), "field-number order, byte for byte"
