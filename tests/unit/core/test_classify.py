"""Tests for eventgw.core.classify: ordered rules, globs, default class, bounded cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.envelope import Priority

P10, P20, P30 = Priority.P10, Priority.P20, Priority.P30


def test_no_rules_gives_the_default() -> None:
    assert StaticClassifier([], P20).classify("api", "", "acme") is P20
    assert StaticClassifier([], P10).classify("api", "", "acme") is P10


@pytest.mark.parametrize(
    ("rule", "source", "key", "company", "matches"),
    [
        (ClassRule(P30), "anything", "", "x", True),  # no field set: catch-all
        (ClassRule(P30, source_name="flow"), "flow", "k", "acme", True),
        (ClassRule(P30, source_name="flow"), "flows", "k", "acme", False),
        (ClassRule(P30, source_name="flow"), "Flow", "k", "acme", False),  # case-sensitive
        (ClassRule(P30, statistic_key="opened"), "api", "opened", "acme", True),
        (ClassRule(P30, statistic_key="opened"), "api", "", "acme", False),
        (ClassRule(P30, company_id="acme"), "api", "", "acme", True),
        (ClassRule(P30, company_id="acme"), "api", "", "acme2", False),
        (ClassRule(P10, source_name="backfill*"), "backfill-2024", "", "a", True),
        (ClassRule(P10, source_name="backfill*"), "backfill", "", "a", True),
        (ClassRule(P10, source_name="backfill*"), "my-backfill", "", "a", False),
        (ClassRule(P10, company_id="tenant-?"), "api", "", "tenant-7", True),
        (ClassRule(P10, company_id="tenant-?"), "api", "", "tenant-17", False),
        (ClassRule(P10, company_id="[ab]cme"), "api", "", "bcme", True),
        (ClassRule(P10, company_id="[ab]cme"), "api", "", "ccme", False),
        (ClassRule(P10, company_id="*CME"), "api", "", "acme", False),  # globs are case-sensitive
        # every field that is set must match
        (ClassRule(P30, source_name="flow", company_id="acme"), "flow", "", "acme", True),
        (ClassRule(P30, source_name="flow", company_id="acme"), "flow", "", "globex", False),
        (ClassRule(P30, source_name="flow", company_id="acme"), "api", "", "acme", False),
        (ClassRule(P30, "f*", "k*", "a*"), "flow", "key", "acme", True),
        (ClassRule(P30, "f*", "k*", "a*"), "flow", "other", "acme", False),
        # an empty pattern matches only the empty value
        (ClassRule(P30, statistic_key=""), "api", "", "acme", True),
        (ClassRule(P30, statistic_key=""), "api", "k", "acme", False),
    ],
)
def test_rule_matching(rule: ClassRule, source: str, key: str, company: str, matches: bool) -> None:
    assert rule.matches(source, key, company) is matches
    classifier = StaticClassifier([rule], P20)
    assert classifier.classify(source, key, company) is (rule.priority if matches else P20)


def test_literal_patterns_with_dots_are_not_regexes_or_globs() -> None:
    rule = ClassRule(P30, source_name="svc.flow")
    assert rule.matches("svc.flow", "", "a")
    assert not rule.matches("svcXflow", "", "a")


def test_first_matching_rule_wins() -> None:
    rules = [
        ClassRule(P10, source_name="flow", company_id="noisy"),
        ClassRule(P30, source_name="flow"),
        ClassRule(P10, source_name="f*"),
        ClassRule(P20),
    ]
    c = StaticClassifier(rules, P10)
    assert c.classify("flow", "", "noisy") is P10
    assert c.classify("flow", "", "acme") is P30
    assert c.classify("fan", "", "acme") is P10
    assert c.classify("api", "", "acme") is P20  # catch-all before the default


def test_catch_all_hides_later_rules() -> None:
    c = StaticClassifier([ClassRule(P10), ClassRule(P30, source_name="flow")], P20)
    assert c.classify("flow", "", "a") is P10


def test_cache_returns_the_same_answer_and_stays_bounded() -> None:
    c = StaticClassifier([ClassRule(P30, company_id="vip*")], P20, cache_size=3)
    answers = [c.classify("api", "", f"vip{i % 2}-{i}") for i in range(50)]
    assert answers == [P30] * 50
    assert len(c._cache) <= 3
    for _ in range(3):  # hits and misses give the same result
        assert c.classify("api", "", "vip0-0") is P30
        assert c.classify("api", "", "other") is P20
    assert len(c._cache) <= 3


@pytest.mark.parametrize("size", [0, -1])
def test_cache_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        StaticClassifier([], P20, cache_size=size)


def test_rules_are_copied() -> None:
    rules = [ClassRule(P30, source_name="flow")]
    c = StaticClassifier(rules, P20)
    rules.clear()
    assert c.classify("flow", "", "a") is P30


_names = st.text(alphabet="abf*?-", max_size=6)


@given(
    rules=st.lists(
        st.builds(
            ClassRule,
            st.sampled_from(list(Priority)),
            st.none() | _names,
            st.none() | _names,
            st.none() | _names,
        ),
        max_size=5,
    ),
    queries=st.lists(st.tuples(_names, _names, _names), max_size=20),
)
def test_cached_answers_equal_a_linear_scan(
    rules: list[ClassRule], queries: list[tuple[str, str, str]]
) -> None:
    c = StaticClassifier(rules, P20, cache_size=2)
    for q in queries + queries:
        expected = next((r.priority for r in rules if r.matches(*q)), P20)
        assert c.classify(*q) is expected
