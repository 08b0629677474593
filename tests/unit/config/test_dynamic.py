"""Tests for eventgw.config.dynamic: parsing, refusal naming the field, bucket rounding."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pydantic
import pytest

from eventgw.config.dynamic import (
    DynamicConfig,
    DynamicConfigWatcher,
    GateRule,
    parse_dynamic_config,
)
from eventgw.core.errors import ConfigError

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


@pytest.mark.parametrize("text", ["", "   \n", "{}"])
def test_empty_document_is_the_defaults(text: str) -> None:
    assert parse_dynamic_config(text) == DynamicConfig()
    assert DynamicConfig().rollout_buckets == 0
    assert DynamicConfig().gating == ()


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
        cfg.event_gateway_cluster_rollout = 5  # type: ignore[misc]


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
