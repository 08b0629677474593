"""Tenant-bound API keys: the key ring (digests, files, duplicates) and the grant check."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from eventgw.config.ingest_security import TenantKey, key_digest, load_tenant_keys_file
from eventgw.config.settings import IngestSettings
from eventgw.core.classify import ClassRule, StaticClassifier
from eventgw.core.envelope import Priority
from eventgw.core.errors import ConfigError, PermissionDenied
from eventgw.ingest.grants import Grant, KeyRing
from eventgw.ingest.validation import ValidEvent
from eventgw.metrics.backend import Metrics

if TYPE_CHECKING:
    from pathlib import Path

CLASSIFIER = StaticClassifier(
    [ClassRule(Priority.P30, source_name="checkout"), ClassRule(Priority.P10, source_name="bulk")],
    default=Priority.P20,
)
ACME_KEY = "acme-key-0123456789abcdef"
GLOBEX_KEY = "globex-key-0123456789abcdef"


def acme(**grant: object) -> TenantKey:
    fields: dict[str, object] = {
        "tenant": "acme",
        "key_sha256": key_digest(ACME_KEY),
        "company_ids": ["acme", "acme-eu"],
        "source_names": ["api", "checkout", "bulk"],
        "classes": ["P20", "P10"],
    }
    fields.update(grant)
    return TenantKey.model_validate(fields)


def ev(company: str = "acme", source: str = "api", key: str = "") -> ValidEvent:
    return ValidEvent(company, source, key, b"{}", None)


def check(grant: Grant, events: list[ValidEvent]) -> None:
    """What the pipeline does: the first event of each distinct identity, in order."""
    firsts: dict[tuple[str, str, str], ValidEvent] = {}
    for e in events:
        firsts.setdefault((e.source_name, e.statistic_key, e.company_id), e)
    grant.check(list(firsts.values()), CLASSIFIER, events)


def refusal(grant: Grant, events: list[ValidEvent]) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as info:
        check(grant, events)
    return info.value


def test_events_inside_the_grant_pass() -> None:
    grant = Grant.of(acme())
    assert grant.restricted
    check(grant, [ev(), ev("acme-eu", "bulk"), ev("acme", "api", "stat")] * 50)


@pytest.mark.parametrize(
    ("events", "field", "words"),
    [
        ([ev(), ev("globex")], "events[1].company_id", "company 'globex' is not granted"),
        ([ev(), ev(source="admin")], "events[1].source_name", "source 'admin' is not granted"),
        ([ev(), ev(), ev(source="checkout")], "events[2].class", "class P30"),
        # The first offending event of the request, whichever rule it breaks.
        ([ev(), ev(source="admin"), ev("globex")], "events[1].source_name", "source 'admin'"),
        ([ev(), ev("globex", "admin")], "events[1].company_id", "company 'globex'"),
        # An identity seen before is refused at its first event, not a later one.
        ([ev("globex"), ev(), ev("globex")], "events[0].company_id", "company 'globex'"),
    ],
)
def test_an_event_outside_the_grant_refuses_the_request_naming_the_field(
    events: list[ValidEvent], field: str, words: str
) -> None:
    exc = refusal(Grant.of(acme()), events)
    assert exc.field == field
    assert exc.index == int(field.split("[")[1].split("]")[0])
    assert words in exc.message
    assert "tenant 'acme'" in exc.message
    assert str(exc).startswith(field + ": ")


def test_the_class_refusal_says_which_classes_are_granted() -> None:
    exc = refusal(Grant.of(acme()), [ev(source="checkout")])
    assert "(P20, P10)" in exc.message


def test_star_grants_everything_of_its_field() -> None:
    anything = Grant.of(acme(company_ids=["*"], source_names=["*"], classes=["P30", "P20", "P10"]))
    assert not anything.restricted
    check(anything, [ev("globex", "checkout"), ev("x", "y")])
    any_company = Grant.of(acme(company_ids=["*"]))
    check(any_company, [ev("globex"), ev("initech", "bulk")])
    assert refusal(any_company, [ev("globex", "checkout")]).field == "events[0].class"


def test_the_check_classifies_once_per_distinct_identity() -> None:
    calls: list[tuple[str, str, str]] = []

    class Counting(StaticClassifier):
        def classify(self, source_name: str, statistic_key: str, company_id: str) -> Priority:
            calls.append((source_name, statistic_key, company_id))
            return super().classify(source_name, statistic_key, company_id)

    events = [ev(), ev("acme-eu")] * 500
    firsts = [events[0], events[1]]
    Grant.of(acme()).check(firsts, Counting([], Priority.P20), events)
    assert calls == [("api", "", "acme"), ("api", "", "acme-eu")]


def test_the_key_ring_finds_a_key_by_its_digest_only() -> None:
    ring = KeyRing.from_settings(
        IngestSettings(tenant_keys=[acme()], api_keys=[SecretStr("an-unbound-key-0123456789")])
    )
    assert ring.required
    grant = ring.grant_of(ACME_KEY.encode())
    assert grant is not None
    assert (grant.tenant, grant.company_ids) == ("acme", frozenset({"acme", "acme-eu"}))
    unbound = ring.grant_of(b"an-unbound-key-0123456789")
    assert unbound is not None
    assert not unbound.restricted
    for wrong in (b"", ACME_KEY.encode() + b"x", ACME_KEY[:-1].encode(), GLOBEX_KEY.encode()):
        assert ring.grant_of(wrong) is None
    assert ACME_KEY not in repr(IngestSettings(tenant_keys=[acme()]))


def test_no_key_configured_means_none_required() -> None:
    ring = KeyRing.from_settings(IngestSettings())
    assert not ring.required
    assert ring.grant_of(b"anything") is None


def test_the_same_key_twice_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing.from_settings(IngestSettings(tenant_keys=[acme(), acme(tenant="other")]))
    assert info.value.field == "ingest.tenant_keys"
    assert "'other'" in info.value.message
    with pytest.raises(ConfigError):
        KeyRing.from_settings(IngestSettings(tenant_keys=[acme()], api_keys=[SecretStr(ACME_KEY)]))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_keys_come_from_the_file_as_well(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [[keys]]
        tenant = "globex"
        key_sha256 = "{key_digest(GLOBEX_KEY)}"
        company_ids = ["globex"]
        """,
    )
    ring = KeyRing.from_settings(IngestSettings(tenant_keys=[acme()], tenant_keys_file=path))
    globex = ring.grant_of(GLOBEX_KEY.encode())
    assert globex is not None
    assert globex.tenant == "globex"
    assert (globex.source_names, globex.classes) == (None, None)  # the defaults: any
    assert ring.grant_of(ACME_KEY.encode()) is not None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "needs at least one [[keys]] table"),
        ("keys = []\n", "needs at least one [[keys]] table"),
        ("[other]\n", "unknown key 'other'"),
        ("[[keys]]\ntenant = 'a'\n", "keys[0].key_sha256: Field required"),
        (
            f"[[keys]]\ntenant = 'a'\nkey_sha256 = '{key_digest('k')}'\ncompany_ids = ['*', 'x']\n",
            "keys[0].company_ids: '*' means every company id",
        ),
        (
            f"[[keys]]\ntenant = 'a'\nkey_sha256 = '{key_digest('k')}'\ncompany_ids = ['a']\n"
            "classes = ['P40']\n",
            "keys[0].classes.0",
        ),
        (
            "[[keys]]\ntenant = 'a'\nkey_sha256 = 'secret'\ncompany_ids = ['a']\n",
            "64 lowercase hex",
        ),
        ("[[keys]\n", "Expected"),
    ],
)
def test_a_bad_keys_file_is_refused_naming_the_entry(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_tenant_keys_file(path)
    assert info.value.field == "ingest.tenant_keys_file"
    assert str(path) in info.value.message
    assert words in info.value.message


def test_an_unreadable_keys_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing.from_settings(IngestSettings(tenant_keys_file=tmp_path / "missing.toml"))
    assert info.value.field == "ingest.tenant_keys_file"
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_tenant_keys_file(tmp_path / "binary.toml")


def test_refusals_are_counted_by_field() -> None:
    metrics = Metrics()
    ring = KeyRing.from_settings(IngestSettings(tenant_keys=[acme()]), metrics)
    grant = ring.grant_of(ACME_KEY.encode())
    assert grant is not None
    for events in ([ev("globex")], [ev("globex")], [ev(source="checkout")]):
        ring.count_denied(grant, refusal(grant, events))
    text = metrics.render().decode()
    assert 'eventgw_ingest_permission_denied_total{field="company_id"} 2.0' in text
    assert 'eventgw_ingest_permission_denied_total{field="class"} 1.0' in text
