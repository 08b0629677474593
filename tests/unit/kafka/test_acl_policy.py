"""The ACL policy: each role may do only its job; rules resolve against the topic settings."""

from __future__ import annotations

import pytest

from eventgw.config.settings import TopicSettings
from eventgw.kafka.acl_policy import GRANTS, ROLES, AclRule, acl_rules, default_principal
from eventgw.kafka.client_config import FLOW_CONTROL_READER_GROUP, SCANNER_GROUP

TOPICS = TopicSettings()


def writers(key: str) -> set[str]:
    return {role for role, grant in GRANTS.items() if key in grant.writes}


def readers(key: str) -> set[str]:
    return {role for role, grant in GRANTS.items() if key in grant.reads}


def test_every_role_has_a_grant_and_every_key_is_a_topic_setting() -> None:
    assert set(GRANTS) == set(ROLES)
    topic_keys = set(TOPICS.model_dump()) - {"partitions"}
    for grant in GRANTS.values():
        assert set(grant.reads) | set(grant.writes) <= topic_keys
        assert grant.why


def test_who_writes_what() -> None:
    assert writers("response") == {"processor"}
    assert writers("flow_control") == {"orchestrator"}
    assert writers("parking_lot") == {"orchestrator"}
    assert writers("failed_writes") == {"publisher", "gateway", "client"}
    assert writers("p30") == {"publisher", "gateway", "failed-writes", "tools"}
    assert writers("retry_60s") == {"failed-writes", "orchestrator", "tools"}
    assert writers("dlq") == {"failed-writes", "orchestrator"}
    assert writers("dlq_redrive_log") == {"tools"}


def test_who_reads_what() -> None:
    assert readers("flow_control") == {"ingest", "gateway"}
    assert readers("p30") == {"orchestrator", "failed-writes"}  # failed-writes: read-back
    assert readers("response") == {"orchestrator"}
    assert readers("failed_writes") == {"failed-writes"}
    assert readers("dlq") == {"tools", "failed-writes"}


def test_rules_name_the_deployments_topics_and_groups() -> None:
    rules = acl_rules(TOPICS, orchestrator_group="orch", recovery_group="rec")
    orchestrator = default_principal("orchestrator")
    assert orchestrator == "User:eventgw-orchestrator"
    assert AclRule(orchestrator, "READ", "topic", TOPICS.p30) in rules
    assert AclRule(orchestrator, "WRITE", "topic", TOPICS.flow_control) in rules
    assert AclRule(orchestrator, "READ", "group", "orch", prefixed=True) in rules
    assert AclRule("User:eventgw-failed-writes", "READ", "group", "rec") in rules
    assert AclRule("User:eventgw-ingest", "READ", "group", FLOW_CONTROL_READER_GROUP) in rules
    assert AclRule("User:eventgw-tools", "READ", "group", SCANNER_GROUP) in rules
    assert not [
        r for r in rules if r.principal == "User:eventgw-processor" and r.operation == "READ"
    ]


def test_rules_for_chosen_roles_and_principals() -> None:
    rules = acl_rules(
        TOPICS,
        orchestrator_group="o",
        recovery_group="r",
        principal=lambda role: f"User:CN={role}",
        roles=("processor",),
    )
    assert rules == [AclRule("User:CN=processor", "WRITE", "topic", TOPICS.response)]


@pytest.mark.parametrize("role", [r for r in ROLES if r != "failed-writes"])
def test_no_role_writes_a_topic_it_also_reads_except_retries(role: str) -> None:
    grant = GRANTS[role]  # type: ignore[index]  # parametrized over ROLES
    both = set(grant.reads) & set(grant.writes)
    assert both <= {"retry_60s", "retry_120s", "retry_240s", "retry_480s", "dlq_redrive_log"}


def test_the_failed_writes_processor_reads_back_only_what_it_writes() -> None:
    """Its read-back (on taking over a partition) needs READ on its own targets, no more."""
    grant = GRANTS["failed-writes"]
    assert set(grant.reads) == {"failed_writes"} | set(grant.writes)
    assert "scanner" in grant.groups, "the read-back's scanner looks up its group coordinator"
