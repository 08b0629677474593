"""`task_batches` parses to the TaskBatch the protobuf API would build, cut by size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.envelope import BufferLane, Priority
from eventgw.orchestrator import wire
from eventgw.orchestrator.task_heaps import BufferedTask

if TYPE_CHECKING:
    import pytest

NOW_WALL = 1_700_000_000.123
NOW_MONO = 5_000.0


def _reference(index: int, backlog: int, tasks: list[BufferedTask]) -> pb.TaskBatch:
    """The field-by-field construction the splicing replaces."""
    batch = pb.TaskBatch(orchestrator_index=index, backlog=backlog)
    for t in tasks:
        task = batch.tasks.add()
        task.task_id = t.task_id
        task.event.MergeFromString(t.value)
        task.event.attempt = t.attempt
        task.delivery_count = t.delivery_count
        task.lease_expires_ms = int((NOW_WALL + t.lease_expires - NOW_MONO) * 1000)
        task.lane = t.lane
        task.rank = t.rank
    return batch


def _task(
    n: int, value: bytes, attempt: int, count: int, lease: float, lane: BufferLane, rank: int
) -> BufferedTask:
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
    task.rank = rank
    return task


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
    _task,
    st.integers(0, 10**12),
    _events,
    st.integers(0, 20_000),
    st.integers(0, 1000),
    st.sampled_from([NOW_MONO + 60.0, NOW_MONO + 0.5, NOW_MONO - 3.0]),
    st.sampled_from(["p30", "p20", "p10", "offload", "retry"]),
    st.sampled_from([0, 1_700_000_005_000, 1_700_001_200_000]),
)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.lists(_tasks, max_size=12))
def test_spliced_batch_equals_the_field_by_field_message(
    index: int, backlog: int, tasks: list[BufferedTask]
) -> None:
    messages = list(wire.task_batches(tasks, index, backlog, NOW_WALL, NOW_MONO))
    assert len(messages) == 1
    assert pb.TaskBatch.FromString(messages[0]) == _reference(index, backlog, tasks)


def test_the_buffer_attempt_wins_over_the_record_attempt() -> None:
    value = pb.EventData(event_id="e", attempt=2).SerializeToString()
    task = _task(1, value, attempt=3, count=1, lease=NOW_MONO + 60, lane="p20", rank=7)
    [raw] = wire.task_batches([task], 0, 0, NOW_WALL, NOW_MONO)
    parsed = pb.TaskBatch.FromString(raw)
    assert parsed.tasks[0].event.attempt == 3
    assert parsed.tasks[0].event.event_id == "e"
    assert parsed.tasks[0].lease_expires_ms == int((NOW_WALL + 60) * 1000)
    assert parsed.tasks[0].rank == 7


def test_a_large_dispatch_is_cut_into_messages_under_the_size_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "MAX_MESSAGE_BYTES", 10_000)
    value = pb.EventData(event_id="e", payload=b"x" * 3000).SerializeToString()
    tasks = [_task(i, value, 0, 1, NOW_MONO + 60, "p10", 5) for i in range(7)]
    tasks.append(_task(99, b"y" * 25_000, 0, 1, NOW_MONO + 60, "p10", 5))  # alone, over the cap
    messages = list(wire.task_batches(tasks, 3, 11, NOW_WALL, NOW_MONO))
    parsed = [pb.TaskBatch.FromString(m) for m in messages]
    assert [len(p.tasks) for p in parsed] == [3, 3, 1, 1]
    assert all(len(m) <= 10_000 for m in messages[:3])
    assert [t.task_id for p in parsed for t in p.tasks] == [t.task_id for t in tasks]
    assert {(p.orchestrator_index, p.backlog) for p in parsed} == {(3, 11)}


def test_a_hint_carries_backlog_and_returned_credit() -> None:
    parsed = pb.TaskBatch.FromString(wire.hint(4, 120, credit_returned=9))
    assert (len(parsed.tasks), parsed.orchestrator_index, parsed.backlog) == (0, 4, 120)
    assert parsed.credit_returned == 9
