"""Which eventgw principal may do what in Kafka: the ACL policy, one role per component.

Each component connects as its own principal, so a compromised or buggy component can only
do what its job needs: only processors write the response topic, only publishers (and the
client library's fallback) write the failed-writes topic, only orchestrators write the
flow-control and parking-lot topics, and so on. `GRANTS` is the policy, written against the
names of the topic settings; `acl_rules` resolves it for one deployment's topics and group
ids. Topic creation and ACL changes are for an administrator (a super user), never a role.

READ and WRITE imply DESCRIBE, which is all the metadata requests (the orchestrator's
start-up topic check, a reader listing partitions) need. An idempotent producer needs only
WRITE on a topic (no cluster-level IDEMPOTENT_WRITE). Readers that assign partitions and
never commit (ingest's flow-control reader, the DLQ tools' scanner) still have a group id
whose coordinator librdkafka looks up, so they get READ (hence DESCRIBE) on it too.

Pure: `eventgw.kafka.admin.apply_acls` writes the rules to a cluster. docs/operations.md,
"Kafka security and ACLs", shows the policy as a table generated from `GRANTS`
(`scripts/gen-docs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from eventgw.core.envelope import LANES
from eventgw.kafka.client_config import FLOW_CONTROL_READER_GROUP, SCANNER_GROUP

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventgw.config.settings import TopicSettings

Role = Literal[
    "ingest",
    "publisher",
    "gateway",
    "failed-writes",
    "orchestrator",
    "processor",
    "tools",
    "client",
]
"""A component that connects to Kafka; each runs as its own principal."""

Operation = Literal["READ", "WRITE"]

GroupKey = Literal["orchestrator", "recovery", "flow_control_reader", "scanner"]
"""A consumer group a role uses: ``orchestrator.group_id`` (a prefix: the lane, retry and
results consumers use ``<group_id>``, ``<group_id>-retry``, ``<group_id>-results-<index>``),
``recovery.group_id``, or the fixed ids of the readers that never join."""

ROLES: Final[tuple[Role, ...]] = (
    "ingest",
    "publisher",
    "gateway",
    "failed-writes",
    "orchestrator",
    "processor",
    "tools",
    "client",
)

_RETRIES: Final = ("retry_60s", "retry_120s", "retry_240s", "retry_480s")


@dataclass(frozen=True, slots=True)
class Grant:
    """What one role may do, by topic-setting name (``p30``, ``response``, ...).

    Attributes:
        reads: Topics it consumes.
        writes: Topics it produces to.
        groups: The consumer groups it uses (READ on each).
        why: One line for the documentation.
    """

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[GroupKey, ...] = ()
    why: str = ""


_INGEST: Final = Grant(
    reads=("flow_control",),
    groups=("flow_control_reader",),
    why="reads flow-control signals (AIMD)",
)
_PUBLISHER: Final = Grant(
    writes=(*LANES, "failed_writes"),
    why="writes the lanes; captures failed writes",
)

GRANTS: Final[dict[Role, Grant]] = {
    "ingest": _INGEST,
    "publisher": _PUBLISHER,
    "gateway": Grant(
        reads=_INGEST.reads,
        writes=_PUBLISHER.writes,
        groups=_INGEST.groups,
        why="ingest with the embedded publisher (ingest.embedded_publisher): both",
    ),
    "failed-writes": Grant(
        # It reads back what it wrote (lanes, retries, DLQ) on taking over a partition, to
        # skip what an earlier run replayed and did not commit (eventgw.recovery.read_back).
        reads=("failed_writes", *LANES, *_RETRIES, "dlq"),
        writes=(*LANES, *_RETRIES, "dlq"),
        groups=("recovery", "scanner"),
        why="replays failed writes to their lane or retry topic; parks the rest in the DLQ; "
        "reads its own writes back on restart",
    ),
    "orchestrator": Grant(
        reads=(*LANES, *_RETRIES, "response"),
        writes=(*_RETRIES, "dlq", "parking_lot", "flow_control"),
        groups=("orchestrator",),
        why="serves the lanes and retries; writes retries, dead letters, flow-control",
    ),
    "processor": Grant(
        writes=("response",),
        why="results on the response topic when its orchestrator is unreachable",
    ),
    "tools": Grant(
        reads=("dlq", "parking_lot", *_RETRIES, "dlq_redrive_log"),
        writes=(*LANES, *_RETRIES, "dlq_redrive_log"),
        groups=("scanner",),
        why="eventgw dlq list/show/redrive and eventgw replay (an operator)",
    ),
    "client": Grant(
        writes=("failed_writes",),
        why="the client library's fallback (use_fallbacks=True)",
    ),
}
"""The policy: what each role may do. Anything not granted is refused."""


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ALLOW ACL: ``principal`` may ``operation`` on a topic or group, from any host.

    Attributes:
        principal: e.g. ``User:eventgw-ingest``.
        operation: ``READ`` or ``WRITE``.
        resource: ``topic`` or ``group``.
        name: The topic or group name (a prefix when ``prefixed``).
        prefixed: Whether ``name`` matches every resource starting with it.
    """

    principal: str
    operation: Operation
    resource: Literal["topic", "group"]
    name: str
    prefixed: bool = False


def default_principal(role: Role) -> str:
    """``User:eventgw-<role>``: the principal of ``role`` (its SCRAM user name, prefixed)."""
    return f"User:{username(role)}"


def username(role: Role) -> str:
    """``eventgw-<role>``: the SCRAM user a component of ``role`` logs in as."""
    return f"eventgw-{role}"


def acl_rules(
    topics: TopicSettings,
    *,
    orchestrator_group: str,
    recovery_group: str,
    principal: Callable[[Role], str] = default_principal,
    roles: tuple[Role, ...] = ROLES,
) -> list[AclRule]:
    """The ALLOW rules of ``roles`` for one deployment's topic names and group ids.

    Args:
        topics: The deployment's topic names.
        orchestrator_group: ``orchestrator.group_id`` (granted as a prefix).
        recovery_group: ``recovery.group_id``.
        principal: The principal of each role.
        roles: The roles to grant (every role by default).
    """
    groups: dict[GroupKey, tuple[str, bool]] = {
        "orchestrator": (orchestrator_group, True),
        "recovery": (recovery_group, False),
        "flow_control_reader": (FLOW_CONTROL_READER_GROUP, False),
        "scanner": (SCANNER_GROUP, False),
    }
    rules: list[AclRule] = []
    for role in roles:
        grant = GRANTS[role]
        who = principal(role)
        rules += [AclRule(who, "READ", "topic", _topic(topics, key)) for key in grant.reads]
        rules += [AclRule(who, "WRITE", "topic", _topic(topics, key)) for key in grant.writes]
        for key in grant.groups:
            name, prefixed = groups[key]
            rules.append(AclRule(who, "READ", "group", name, prefixed))
    return rules


def _topic(topics: TopicSettings, key: str) -> str:
    name = getattr(topics, key)
    if not isinstance(name, str):
        raise TypeError(f"topics.{key} is not a topic name")
    return name
