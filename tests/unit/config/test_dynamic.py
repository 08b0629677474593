"""Tests for eventgw.config.dynamic: parsing, refusal naming the field, bucket rounding."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw.config.dynamic import (
    MAX_DYNAMIC_CONFIG_BYTES,
    DynamicConfig,
    DynamicConfigWatcher,
    GateRule,
    parse_dynamic_config,
)
from eventgw.core.errors import ConfigError
from eventgw.metrics.backend import Metrics

if TYPE_CHECKING:
    from pathlib import Path


def test_happy_path() -> None:
    cfg = parse_dynamic_config(
        json.dumps(
            {
                "event_gateway_cluster_rollout": 12.5,
                "gating": [
                    {"action": "allow", "source_name": "spam", "company_id": "vip"},
                    {"action": "block", "source_name": "spam*", "reason": "INC-42"},
                    {"action": "block"},
                ],
            }
        )
    )
    assert cfg.event_gateway_cluster_rollout == 12.5
    assert cfg.rollout_buckets == 1250
    assert cfg.gating == (
        GateRule(action="allow", source_name="spam", company_id="vip"),
        GateRule(action="block", source_name="spam*", reason="INC-42"),
        GateRule(action="block", reason="blocked by gating rule"),
    )


@pytest.mark.parametrize("text", ["{}", " {}\n"])
def test_an_empty_object_is_the_defaults(text: str) -> None:
    assert parse_dynamic_config(text) == DynamicConfig()
    assert DynamicConfig().rollout_buckets == 0
    assert DynamicConfig().gating == ()


@pytest.mark.parametrize("text", ["", "   \n", "\t"])
def test_an_empty_file_is_refused_not_taken_as_the_defaults(text: str) -> None:
    """Found in a fault run: an editor mid-save leaves an empty file for a moment, and
    reading it as the defaults dropped every gating rule."""
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config(text)
    assert info.value.field == "dynamic_config"
    assert "empty" in info.value.message


@pytest.mark.parametrize("text", ["{", "{'a': 1}", '{"gating": [}', "nope", '{"a": 1,}'])
def test_invalid_json_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config(text)
    assert info.value.field == "dynamic_config"
    assert "not valid JSON" in info.value.message


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"event_gateway_cluster_rollout": 250}, "event_gateway_cluster_rollout"),
        ({"event_gateway_cluster_rollout": 100.01}, "event_gateway_cluster_rollout"),
        ({"event_gateway_cluster_rollout": -0.5}, "event_gateway_cluster_rollout"),
        ({"event_gateway_cluster_rollout": "half"}, "event_gateway_cluster_rollout"),
        ({"event_gateway_cluster_rollout": None}, "event_gateway_cluster_rollout"),
        ({"gating": {"action": "block"}}, "gating"),
        ({"gating": [{"action": "deny"}]}, "gating.0.action"),
        ({"gating": [{"action": "allow"}, {"source_name": "x"}]}, "gating.1.action"),
        ({"gating": [{"action": "block", "reason": "r" * 201}]}, "gating.0.reason"),
        ({"gating": [{"action": "block", "colour": "red"}]}, "gating.0.colour"),
        ({"unknown_knob": 1}, "unknown_knob"),
        ([], "dynamic_config"),
        (None, "dynamic_config"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(doc: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config(json.dumps(doc))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_rollout_is_refused(literal: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config('{"event_gateway_cluster_rollout": ' + literal + "}")
    assert info.value.field == "event_gateway_cluster_rollout"


@pytest.mark.parametrize(
    ("share", "buckets"),
    [
        (0, 0),
        (0.01, 1),
        (0.004, 0),
        (0.006, 1),
        (0.29, 29),  # 0.29 * 100 == 28.999999999999996: rounded, not truncated
        (33.33, 3333),  # 3332.9999999999995
        (12.344, 1234),
        (12.346, 1235),
        (40, 4000),
        (99.99, 9999),
        (100, 10_000),
    ],
)
def test_rollout_buckets_rounds_the_percentage_to_the_nearest_bucket(
    share: float, buckets: int
) -> None:
    cfg = parse_dynamic_config(json.dumps({"event_gateway_cluster_rollout": share}))
    assert cfg.rollout_buckets == buckets
    assert isinstance(cfg.rollout_buckets, int)


def test_config_is_frozen() -> None:
    cfg = DynamicConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.event_gateway_cluster_rollout = 5


# --- the watcher's synchronous parts (no file watching) -------------------------------------


def test_watcher_without_a_path_or_file_uses_the_defaults(tmp_path: Path) -> None:
    assert DynamicConfigWatcher(None).current == DynamicConfig()
    watcher = DynamicConfigWatcher(tmp_path / "absent.json")
    assert watcher.current == DynamicConfig()
    assert watcher.version == 0


def test_watcher_loads_the_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.json"
    path.write_text('{"event_gateway_cluster_rollout": 5}')
    watcher = DynamicConfigWatcher(path)
    assert watcher.current.rollout_buckets == 500
    assert watcher.version == 1


def test_watcher_refuses_to_start_on_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.json"
    path.write_text('{"event_gateway_cluster_rollout": 500}')
    with pytest.raises(ConfigError) as info:
        DynamicConfigWatcher(path)
    assert info.value.field == "event_gateway_cluster_rollout"


async def test_watcher_reload_keeps_the_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.json"
    path.write_text('{"event_gateway_cluster_rollout": 5}')
    watcher = DynamicConfigWatcher(path)
    path.write_text('{"event_gateway_cluster_rollout": 500}')
    await watcher._reload(path)
    assert watcher.refused == 1
    assert watcher.current.rollout_buckets == 500  # still the 5 % of the last good file
    assert watcher.version == 1
    path.write_text('{"event_gateway_cluster_rollout": 7}')
    await watcher._reload(path)
    assert watcher.current.rollout_buckets == 700
    assert watcher.version == 2
    path.unlink()
    await watcher._reload(path)
    assert watcher.refused == 2
    assert watcher.current.rollout_buckets == 700


# --- hostile files: refused with the field named, the last good config kept -----------------

GATED = b'{"gating": [{"action": "block", "source_name": "spam", "reason": "INC-7"}]}'
ROLLOUT = "event_gateway_cluster_rollout"
DEEP = b'{"gating": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"

HOSTILE = [
    pytest.param(b"", "dynamic_config", id="empty"),
    pytest.param(b"\n\n", "dynamic_config", id="blank-lines"),
    pytest.param(b'{"gating": []}' + b" " * MAX_DYNAMIC_CONFIG_BYTES, "dynamic_config",
                 id="over-the-size-cap"),
    pytest.param(b'{"gating": [{"action": "block", "reason": "\xff\xfe"}]}', "dynamic_config",
                 id="not-utf8"),
    pytest.param(b"\xef\xbb\xbf{}", "dynamic_config", id="utf8-bom"),
    pytest.param(DEEP, "dynamic_config", id="nested-50000-deep"),
    pytest.param(b'{"gating": ' + b"[" * 40 + b"]" * 40 + b"}", "dynamic_config",
                 id="nested-40-deep"),
    pytest.param(b'{"event_gateway_cluster_rollout": 1e400}', ROLLOUT, id="1e400"),
    pytest.param(b'{"event_gateway_cluster_rollout": -1e400}', ROLLOUT, id="-1e400"),
    pytest.param(b'{"hot_tenants": {"max_tracked": 1e400}}', "hot_tenants.max_tracked",
                 id="1e400-for-an-int"),
    pytest.param(b'{"hot_tenants": {"max_tracked": ' + b"9" * 5000 + b"}}", "dynamic_config",
                 id="5000-digit-int"),
    pytest.param(b'{"event_gateway_cluster_rollout": NaN}', ROLLOUT, id="NaN"),
    pytest.param(b'{"gating": [], "gating": [{"action": "block"}]}', "dynamic_config",
                 id="duplicate-key"),
    pytest.param(b'{"event_gateway_cluster_rollout": "5"}', ROLLOUT, id="number-as-string"),
    pytest.param(b'{"event_gateway_cluster_rollout": true}', ROLLOUT, id="number-as-bool"),
    pytest.param(b'{"aimd": {"enabled": 1}}', "aimd.enabled", id="bool-as-number"),
    pytest.param(b'{"hot_tenants": {"max_tracked": 5.5}}', "hot_tenants.max_tracked",
                 id="int-as-float"),
    pytest.param(b'{"hot_tenants": {"exempt_companies": "acme"}}',
                 "hot_tenants.exempt_companies", id="list-as-string"),
    pytest.param(b'{"gating": [{"action": "block", "company_id": 7}]}', "gating.0.company_id",
                 id="string-as-number"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "field"), HOSTILE)
def test_hostile_documents_are_refused_naming_the_field(data: bytes, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config(data)
    assert info.value.field == field
    assert info.value.message


@pytest.mark.parametrize(("data", "field"), HOSTILE)
async def test_a_hostile_reload_keeps_the_last_good_config(
    tmp_path: Path, data: bytes, field: str
) -> None:
    metrics = Metrics()
    path = tmp_path / "dynamic.json"
    path.write_bytes(GATED)
    watcher = DynamicConfigWatcher(path, metrics)
    good = watcher.current
    assert [r.source_name for r in good.gating] == ["spam"]
    path.write_bytes(data)
    await watcher._reload(path)
    assert watcher.current is good, "every gating rule still in force"
    assert watcher.version == 1
    assert watcher.refused == 1
    assert 'eventgw_dynamic_config_reloads_total{result="refused"} 1.0' in metrics.render().decode()


@pytest.mark.parametrize(("data", "field"), HOSTILE)
def test_a_hostile_file_at_start_is_a_config_error(tmp_path: Path, data: bytes, field: str) -> None:
    path = tmp_path / "dynamic.json"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        DynamicConfigWatcher(path)
    assert info.value.field == field


def test_an_unreadable_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.json"
    path.mkdir()  # exists, but reading it fails (IsADirectoryError)
    with pytest.raises(ConfigError) as info:
        DynamicConfigWatcher(path)
    assert info.value.field == "dynamic_config"
    assert str(path) in info.value.message


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_docs = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["gating", "aimd", "hot_tenants", "action", "classes", "P10", "floor", "reason",
             "event_gateway_cluster_rollout", "exempt_companies", "company_id", "x"]
        ),
        children,
        max_size=4,
    ),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(doc=json_docs, noise=st.binary(max_size=40), cut=st.integers(min_value=0, max_value=200))
def test_any_document_parses_or_is_a_config_error(doc: object, noise: bytes, cut: int) -> None:
    text = json.dumps(doc).encode()
    for data in (text, text[:cut], noise, text[:cut] + noise):
        refused: ConfigError | None = None
        try:
            config = parse_dynamic_config(data)
        except ConfigError as exc:
            refused = exc
        if refused is None:
            assert isinstance(config, DynamicConfig)
        else:
            assert refused.field
            assert refused.message


# --- replica-index lists (orchestrator fleets) ----------------------------------------------


def test_the_rollout_fleet_key_lists_replica_indexes() -> None:
    cfg = parse_dynamic_config('{"rollout_orchestrator_indexes": [3, 1], "gating": []}')
    assert cfg.replica_indexes("rollout_orchestrator_indexes") == (1, 3)
    assert cfg == parse_dynamic_config('{"rollout_orchestrator_indexes": [1, 3]}')
    assert cfg != parse_dynamic_config('{"rollout_orchestrator_indexes": [1]}'), "a reload sees it"
    assert parse_dynamic_config("{}").replica_indexes("rollout_orchestrator_indexes") is None
    assert (
        parse_dynamic_config('{"rollout_orchestrator_indexes": []}').replica_indexes(
            "rollout_orchestrator_indexes"
        )
        == ()
    )


def test_a_renamed_key_is_read_and_the_default_name_is_then_unknown() -> None:
    """orchestrator.rollout_orchestrator_config_key renames the key for every reader."""
    doc = '{"fleet_rollout_prod": [0]}'
    cfg = parse_dynamic_config(doc, index_keys=("fleet_rollout_prod",))
    assert cfg.replica_indexes("fleet_rollout_prod") == (0,)
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config(doc)
    assert info.value.field == "fleet_rollout_prod"
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config('{"rollout_orchestrator_indexes": [0]}', index_keys=("other",))
    assert info.value.field == "rollout_orchestrator_indexes"


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("2", "list of replica indexes"),
        ({"0": 1}, "list of replica indexes"),
        ([1, "2"], "'2' is not a replica index"),
        ([True], "True is not a replica index"),
        ([1.0], "1.0 is not a replica index"),
        ([-1], "-1 is not a replica index"),
        ([10_000], "10000 is not a replica index"),
        ([2, 2], "twice"),
        (list(range(10_001)), "more than there can be replicas"),
    ],
)
def test_a_bad_index_list_is_refused_naming_the_key(value: object, detail: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config(json.dumps({"rollout_orchestrator_indexes": value}))
    assert info.value.field == "rollout_orchestrator_indexes"
    assert detail in info.value.message


def test_beside_an_index_list_the_other_fields_are_checked_as_before() -> None:
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config(
            '{"rollout_orchestrator_indexes": [1], "event_gateway_cluster_rollout": 1e400}'
        )
    assert info.value.field == "event_gateway_cluster_rollout"
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config('{"rollout_orchestrator_indexes": [1], "gating": [{"action": 1}]}')
    assert info.value.field == "gating.0.action"
    cfg = parse_dynamic_config(
        '{"rollout_orchestrator_indexes": [1], "event_gateway_cluster_rollout": 50}'
    )
    assert cfg.rollout_buckets == 5000


async def test_the_watcher_reads_its_own_key(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.json"
    path.write_text('{"fleet_b": [2]}')
    assert DynamicConfigWatcher(path, index_keys=("fleet_b",)).current.replica_indexes(
        "fleet_b"
    ) == (2,)
    with pytest.raises(ConfigError):
        DynamicConfigWatcher(path)
