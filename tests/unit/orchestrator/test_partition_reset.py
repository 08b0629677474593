"""A partition assigned anew while the dispatcher still tracks it (its revoke went missing)."""

from __future__ import annotations

import logging

import pytest

from eventgw.core.envelope import Priority
from eventgw.orchestrator.partition_reset import forget_stale_partitions
from tests.unit.orchestrator.test_dispatcher import TOPICS, Fixture


def test_a_partition_assigned_again_without_a_revoke_is_read_from_its_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Fixture()
    f.add(Priority.P20, Priority.P20, Priority.P20)  # offsets 0..2 of the P20 lane, unfinished
    reread = Fixture().record(Priority.P20)  # offset 0 again: read from the commit
    with pytest.raises(ValueError, match="increasing order"):
        f.d.add_records([reread])  # what crashed the orchestrator
    with caplog.at_level(logging.WARNING):
        assert forget_stale_partitions(f.d, [(TOPICS.p20, 0), (TOPICS.p10, 0)]) == [(TOPICS.p20, 0)]
    assert "orchestrator.stale_partitions_dropped" in caplog.text
    assert "unfinished=3" in caplog.text
    assert f.d.add_records([reread]) == 1
    assert f.d.tracker.position(TOPICS.p20, 0) == 0
    assert f.d.buffer.statistics().tasks == 1, "the stale tasks left the buffer"


def test_nothing_is_dropped_when_the_revoke_came_first() -> None:
    f = Fixture()
    f.add(Priority.P20)
    f.d.revoke_partitions([(TOPICS.p20, 0)])
    assert forget_stale_partitions(f.d, [(TOPICS.p20, 0)]) == []
