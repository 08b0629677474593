"""Forget what the orchestrator still holds of partitions that are assigned to it anew.

Each assignment reads a partition from the group's commit, so whatever the dispatcher still
holds of it from an earlier ownership is stale. It can only be there if that ownership's
revoke never reached the dispatcher (the rebalance hook failed or timed out on a stalled
loop); kept, the `AckTracker` would refuse the re-read offsets, which are below those it
tracked ("offsets must be tracked in increasing order"), and the orchestrator would crash.
Dropping it is what the revoke would have done, minus the commit: those tasks are served
again from the commit (at-least-once, docs/delivery-semantics.md).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventgw.orchestrator.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

__all__ = ["forget_stale_partitions"]


def forget_stale_partitions(
    dispatcher: Dispatcher, partitions: Sequence[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Drop the dispatcher's state of those ``partitions`` it still tracks; return them.

    Call it from the assign hook, before the assignment's commits are applied (dropping a
    partition also forgets the finished runs read from its commit). Logged at WARNING when
    anything is dropped: a revoke went missing.
    """
    tracker = dispatcher.tracker
    stale = [tp for tp in partitions if tracker.position(*tp) is not None]
    if stale:
        unfinished = sum(tracker.outstanding(*tp) for tp in stale)
        dispatcher.revoke_partitions(stale)
        logger.warning(
            "orchestrator.stale_partitions_dropped partitions=%s unfinished=%d",
            ",".join(f"{t}[{p}]" for t, p in stale),
            unfinished,
        )
    return stale
