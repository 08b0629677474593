"""The spliced results record is byte-identical to protobuf's serialization of it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.processor.handlers import Outcome
from eventgw.processor.results import results_record, task_result

_tasks = st.builds(
    lambda tid, eid, count: pb.Task(
        task_id=tid, event=pb.EventData(event_id=eid), delivery_count=count
    ),
    st.text(max_size=60),
    st.text(max_size=60),
    st.integers(0, 2**32 - 1),
)
_outcomes = st.builds(
    Outcome,
    st.sampled_from([pb.ACK, pb.NACK, pb.RELEASE, pb.REJECT]),
    st.integers(0, 2**32 - 1),
    st.text(max_size=300),
)


@given(
    st.lists(st.tuples(_tasks, _outcomes), max_size=20),
    st.text(max_size=40),
    st.integers(0, 2**32 - 1),
)
def test_results_record_equals_the_serialized_message(
    pairs: list[tuple[pb.Task, Outcome]], worker_id: str, index: int
) -> None:
    tasks = [t for t, _ in pairs]
    outcomes = [o for _, o in pairs]
    expected = pb.TaskResults(
        results=[task_result(t, o, worker_id, index) for t, o in pairs]
    ).SerializeToString()
    assert results_record(tasks, outcomes, worker_id, index) == expected


def test_a_typical_batch_parses_back() -> None:
    tasks = [
        pb.Task(
            task_id=f"events.public.p20/0/{i}",
            event=pb.EventData(event_id=f"e{i}"),
            delivery_count=1,
        )
        for i in range(3)
    ]
    outcomes = [Outcome(pb.ACK), Outcome(pb.NACK, 5000, "boom"), Outcome(pb.ACK)]
    parsed = pb.TaskResults.FromString(results_record(tasks, outcomes, "w-1", 2))
    assert [(r.task_id, r.kind, r.delay_ms, r.error, r.event_id) for r in parsed.results] == [
        ("events.public.p20/0/0", pb.ACK, 0, "", "e0"),
        ("events.public.p20/0/1", pb.NACK, 5000, "boom", "e1"),
        ("events.public.p20/0/2", pb.ACK, 0, "", "e2"),
    ]
    assert {(r.worker_id, r.orchestrator_index, r.delivery_count) for r in parsed.results} == {
        ("w-1", 2, 1)
    }
