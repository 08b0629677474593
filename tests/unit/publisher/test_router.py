"""Tests for eventgw.publisher.router: lanes and topics, rollout buckets, gating."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.config.dynamic import DynamicConfig, GateRule
from eventgw.config.settings import TopicSettings
from eventgw.core.envelope import Priority
from eventgw.publisher.router import ROLLOUT_BUCKETS, Router, gate_reason, rollout_bucket

TOPICS = TopicSettings(p30="t30", p20="t20", p10="t10", offload="toff")
COMPANIES = [f"company-{i}" for i in range(500)]


# --- lanes and topics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "offloaded", "lane", "topic"),
    [
        (Priority.P30, False, "p30", "t30"),
        (Priority.P20, False, "p20", "t20"),
        (Priority.P10, False, "p10", "t10"),
        (Priority.P30, True, "offload", "toff"),
        (Priority.P10, True, "offload", "toff"),
    ],
)
def test_lane_and_topic(priority: Priority, offloaded: bool, lane: str, topic: str) -> None:
    router = Router(TOPICS, rollout_enabled=False)
    got = router.lane(
        pb.EventData(
            priority=priority.value,  # type: ignore[arg-type]  # pb.Priority values are ints
            offloaded=offloaded,
        )
    )
    assert got == lane
    assert router.topic(got) == topic


def test_unknown_priority_is_an_error_not_a_silent_lane() -> None:
    router = Router(TOPICS, rollout_enabled=False)
    with pytest.raises(ValueError, match="Priority"):
        router.lane(pb.EventData(priority=pb.PRIORITY_UNSPECIFIED))


# --- rollout --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "company_id", ["", "acme", "company-1", "ünïcode", "a" * 128, "0", "tenant:42/x"]
)
def test_rollout_bucket_is_crc32_mod_10000(company_id: str) -> None:
    assert rollout_bucket(company_id) == zlib.crc32(company_id.encode()) % 10_000


@given(st.text(max_size=200))
def test_rollout_bucket_property(company_id: str) -> None:
    bucket = rollout_bucket(company_id)
    assert bucket == zlib.crc32(company_id.encode("utf-8")) % ROLLOUT_BUCKETS
    assert 0 <= bucket < ROLLOUT_BUCKETS


def test_rollout_bucket_known_values() -> None:
    # Stable across processes and releases: these are part of the routing contract.
    assert ROLLOUT_BUCKETS == 10_000
    assert rollout_bucket("acme") == zlib.crc32(b"acme") % 10_000 == 8814


def _config(share: float) -> DynamicConfig:
    return DynamicConfig(event_gateway_cluster_rollout=share)


@pytest.mark.parametrize("share", [0.0, 0.01, 12.5, 40.0, 99.99, 100.0])
def test_cluster_follows_the_share_when_rollout_is_enabled(share: float) -> None:
    router = Router(TOPICS, rollout_enabled=True)
    cfg = _config(share)
    threshold = round(share * 100)
    for c in COMPANIES:
        expected = "rollout" if zlib.crc32(c.encode()) % 10_000 < threshold else "primary"
        assert router.cluster(c, cfg) == expected, c


def test_share_extremes() -> None:
    router = Router(TOPICS, rollout_enabled=True)
    assert {router.cluster(c, _config(0)) for c in COMPANIES} == {"primary"}
    assert {router.cluster(c, _config(100)) for c in COMPANIES} == {"rollout"}
    on = {c for c in COMPANIES if router.cluster(c, _config(40)) == "rollout"}
    assert 0 < len(on) < len(COMPANIES)


def test_growing_the_share_never_moves_a_company_back() -> None:
    router = Router(TOPICS, rollout_enabled=True)
    previous: set[str] = set()
    for share in (0, 1, 5, 10, 25, 50, 75, 100):
        current = {c for c in COMPANIES if router.cluster(c, _config(share)) == "rollout"}
        assert previous <= current
        previous = current


def test_share_is_ignored_when_rollout_producers_are_disabled() -> None:
    router = Router(TOPICS, rollout_enabled=False)
    assert {router.cluster(c, _config(100)) for c in COMPANIES} == {"primary"}


# --- gating ---------------------------------------------------------------------------------


def block(reason: str = "blocked", **match: str) -> GateRule:
    return GateRule(action="block", reason=reason, **match)


def allow(**match: str) -> GateRule:
    return GateRule(action="allow", **match)


def test_no_rules_allow_everything() -> None:
    assert gate_reason((), "api", "acme") is None


def test_block_by_source_and_by_company() -> None:
    rules = (block("spam source", source_name="spam"), block("bad tenant", company_id="evil"))
    assert gate_reason(rules, "spam", "acme") == "spam source"
    assert gate_reason(rules, "api", "evil") == "bad tenant"
    assert gate_reason(rules, "spam", "evil") == "spam source"  # first match
    assert gate_reason(rules, "api", "acme") is None


def test_default_reason() -> None:
    assert gate_reason((GateRule(action="block"),), "api", "a") == "blocked by gating rule"


def test_allow_before_block_carves_out_an_exception() -> None:
    rules = (allow(source_name="spam", company_id="vip"), block("no spam", source_name="spam"))
    assert gate_reason(rules, "spam", "vip") is None
    assert gate_reason(rules, "spam", "acme") == "no spam"
    assert gate_reason(rules, "api", "acme") is None


def test_allow_after_block_is_too_late() -> None:
    rules = (block("no spam", source_name="spam"), allow(source_name="spam", company_id="vip"))
    assert gate_reason(rules, "spam", "vip") == "no spam"


def test_rule_with_both_fields_needs_both_to_match() -> None:
    rules = (block("r", source_name="spam", company_id="acme"),)
    assert gate_reason(rules, "spam", "acme") == "r"
    assert gate_reason(rules, "spam", "globex") is None
    assert gate_reason(rules, "api", "acme") is None


def test_rule_without_fields_matches_everything() -> None:
    rules = (allow(company_id="vip-*"), block("maintenance"))
    assert gate_reason(rules, "api", "vip-1") is None
    assert gate_reason(rules, "anything", "acme") == "maintenance"


@pytest.mark.parametrize(
    ("pattern", "value", "blocked"),
    [
        ("spam*", "spam", True),
        ("spam*", "spam-2024", True),
        ("spam*", "my-spam", False),
        ("*spam", "my-spam", True),
        ("sp?m", "spam", True),
        ("sp?m", "spaam", False),
        ("[st]pam", "tpam", True),
        ("[!s]pam", "spam", False),
        ("SPAM*", "spam", False),  # case-sensitive
        ("spam", "spam", True),
        ("spam", "spamx", False),
    ],
)
def test_glob_patterns(pattern: str, value: str, blocked: bool) -> None:
    rules = (block("g", source_name=pattern),)
    assert (gate_reason(rules, value, "acme") == "g") is blocked
    rules = (block("g", company_id=pattern),)
    assert (gate_reason(rules, "api", value) == "g") is blocked


def test_glob_allow_carve_out_for_a_group_of_companies() -> None:
    rules = (
        allow(source_name="import-*", company_id="beta-?"),
        block("imports paused", source_name="import-*"),
    )
    assert gate_reason(rules, "import-csv", "beta-1") is None
    assert gate_reason(rules, "import-csv", "beta-10") == "imports paused"
    assert gate_reason(rules, "export", "beta-10") is None
