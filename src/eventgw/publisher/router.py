"""Routing: class → lane → topic, rollout share → cluster, and gating rules."""

from __future__ import annotations

import fnmatch
import zlib
from typing import TYPE_CHECKING, Final, Literal

from eventgw.core.envelope import LANE_OF_PRIORITY, LANES, Lane

if TYPE_CHECKING:
    from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
    from eventgw.config.dynamic import DynamicConfig, GateRule
    from eventgw.config.settings import TopicSettings

ClusterName = Literal["primary", "rollout"]
ROLLOUT_BUCKETS: Final = 10_000
LANE_OF_WIRE_PRIORITY: Final[dict[int, Lane]] = {
    p.value: lane for p, lane in LANE_OF_PRIORITY.items()
}
"""`LANE_OF_PRIORITY` keyed by the wire value: ``Priority(value)`` per event cost 0.5 µs."""


def rollout_bucket(company_id: str) -> int:
    """The company's rollout bucket: ``CRC32(company_id) mod 10000`` (stable across processes)."""
    return zlib.crc32(company_id.encode()) % ROLLOUT_BUCKETS


def _glob(pattern: str | None, value: str) -> bool:
    return pattern is None or fnmatch.fnmatchcase(value, pattern)


def gate_reason(rules: tuple[GateRule, ...], source_name: str, company_id: str) -> str | None:
    """Return the block reason of the first matching rule, or None when publishing is allowed."""
    for rule in rules:
        if _glob(rule.source_name, source_name) and _glob(rule.company_id, company_id):
            return rule.reason if rule.action == "block" else None
    return None


class Router:
    """Decides lane, topic and cluster for an event. Pure; the dynamic config is passed in.

    Rollout: a company goes to the rollout cluster when its bucket is below the share in
    dynamic config *and* rollout producers are enabled; otherwise everything stays on the
    primary cluster (the share is ignored, as the reference system does when the rollout
    producers do not exist).
    """

    def __init__(self, topics: TopicSettings, rollout_enabled: bool) -> None:
        self.topics = topics
        self.rollout_enabled = rollout_enabled
        self._lane_topic: dict[Lane, str] = {lane: topics.lane_topic(lane) for lane in LANES}

    def lane(self, event: pb.EventData) -> Lane:
        """The lane of an event: offload when the scheduler offloaded it, else its class."""
        if event.offloaded:
            return "offload"
        try:
            return LANE_OF_WIRE_PRIORITY[event.priority]
        except KeyError:
            raise ValueError(f"{event.priority} is not a valid Priority") from None

    def topic(self, lane: Lane) -> str:
        """The topic of a lane."""
        return self._lane_topic[lane]

    def cluster(self, company_id: str, config: DynamicConfig) -> ClusterName:
        """Primary or rollout, by the company's CRC32 bucket and the rollout share."""
        if self.rollout_enabled and rollout_bucket(company_id) < config.rollout_buckets:
            return "rollout"
        return "primary"
