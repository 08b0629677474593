"""The local broker's spec and configuration files (no JVM started here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from eventgw.kafka.broker_config import (
    BrokerSpec,
    default_spec,
    render_properties,
    server_properties,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_default_specs_keep_their_ports_and_data_under_home(tmp_path: Path) -> None:
    primary = default_spec("primary", tmp_path)
    rollout = default_spec("rollout", tmp_path)
    assert (primary.port, primary.controller_port) == (9092, 9093)
    assert (rollout.port, rollout.controller_port) == (9094, 9095)
    assert primary.data_dir == tmp_path / "clusters" / "primary"
    assert primary.log_dir == tmp_path / "clusters" / "primary" / "logs"


def test_an_unknown_default_cluster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown default cluster 'staging'"):
        default_spec("staging", tmp_path)


def test_server_properties_bind_loopback_and_extra_props_win(tmp_path: Path) -> None:
    spec = BrokerSpec(
        name="t",
        port=19000,
        controller_port=19001,
        data_dir=tmp_path,
        extra_props={"num.partitions": "1", "log.retention.ms": "1000"},
    )
    props = server_properties(spec)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19000,CONTROLLER://127.0.0.1:19001"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19001"
    assert props["log.dirs"] == str(tmp_path / "logs")
    assert props["auto.create.topics.enable"] == "false"
    assert (props["num.partitions"], props["log.retention.ms"]) == ("1", "1000")


def test_rendered_properties_escape_backslashes() -> None:
    text = render_properties({"a": "1", "log.dirs": "C:\\kafka\\logs"})
    lines = text.splitlines()
    assert lines[0].startswith("# Written by eventgw")
    assert lines[1:] == ["a=1", "log.dirs=C:\\\\kafka\\\\logs"]
    assert text.endswith("\n")
