"""Generated docs must match the code (run scripts/gen-docs): configuration.md, metrics.md and
the ACL table in operations.md."""

from __future__ import annotations

from pathlib import Path

from eventgw import docs_gen

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_is_up_to_date() -> None:
    assert (DOCS / "configuration.md").read_text() == docs_gen.configuration()


def test_metrics_reference_is_up_to_date() -> None:
    assert (DOCS / "metrics.md").read_text() == docs_gen.metrics()


def test_operations_acl_table_is_up_to_date() -> None:
    text = (DOCS / "operations.md").read_text()
    assert docs_gen.operations(text) == text
    assert docs_gen.acl_table() in text
