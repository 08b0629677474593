"""`batch_response` parses to the GetBatchResponse the protobuf API would build."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import Priority
from eventgw.orchestrator.batch_api import batch_response
from eventgw.orchestrator.priority_buffer import BufferedTask

NOW_WALL = 1_700_000_000.123
NOW_MONO = 5_000.0


def _reference(batch_id: str, index: int, tasks: list[BufferedTask]) -> pb.GetBatchResponse:
    """The field-by-field construction GetBatch used before splicing."""
    response = pb.GetBatchResponse(batch_id=batch_id, orchestrator_index=index)
    for t in tasks:
        task = response.tasks.add()
        task.task_id = t.task_id
        task.event.MergeFromString(t.value)
        task.event.attempt = t.attempt
        task.delivery_count = t.delivery_count
        task.lease_expires_ms = int((NOW_WALL + t.lease_expires - NOW_MONO) * 1000)
        task.lane = t.lane
    return response


_events = st.builds(
    lambda eid, payload, attempt, prio: pb.EventData(
        event_id=eid, company_id="acme", payload=payload, attempt=attempt, priority=prio
    ).SerializeToString(),
    st.text(max_size=40),
    st.binary(max_size=20_000),  # past 16 KiB: multi-byte lengths
    st.integers(0, 300),
    st.sampled_from([0, 10, 20, 30]),
)
_tasks = st.builds(
    lambda n, value, attempt, count, lease, lane: _task(n, value, attempt, count, lease, lane),
    st.integers(0, 10**12),
    _events,
    st.integers(0, 20_000),
    st.integers(0, 1000),
    st.sampled_from([NOW_MONO + 60.0, NOW_MONO + 0.5, NOW_MONO - 3.0]),
    st.sampled_from(["p30", "p20", "p10", "offload", "retry"]),
)


def _task(n: int, value: bytes, attempt: int, count: int, lease: float, lane: str) -> BufferedTask:
    task = BufferedTask(
        task_id=f"events.public.{lane}/{n % 12}/{n}",
        topic=f"events.public.{lane}",
        partition=n % 12,
        offset=n,
        lane=lane,
        priority=Priority.P20,
        deadline_ms=0,
        ingested_at_ms=0,
        value=value,
        attempt=attempt,
    )
    task.delivery_count = count
    task.lease_expires = lease
    return task


@given(st.text(max_size=40), st.integers(0, 2**32 - 1), st.lists(_tasks, max_size=12))
def test_spliced_batch_equals_the_field_by_field_message(
    batch_id: str, index: int, tasks: list[BufferedTask]
) -> None:
    raw = batch_response(batch_id, index, tasks, NOW_WALL, NOW_MONO)
    assert pb.GetBatchResponse.FromString(raw) == _reference(batch_id, index, tasks)


def test_the_buffer_attempt_wins_over_the_record_attempt() -> None:
    value = pb.EventData(event_id="e", attempt=2).SerializeToString()
    task = _task(1, value, attempt=3, count=1, lease=NOW_MONO + 60, lane="p20")
    parsed = pb.GetBatchResponse.FromString(batch_response("b", 0, [task], NOW_WALL, NOW_MONO))
    assert parsed.tasks[0].event.attempt == 3
    assert parsed.tasks[0].event.event_id == "e"
    assert parsed.tasks[0].lease_expires_ms == int((NOW_WALL + 60) * 1000)
