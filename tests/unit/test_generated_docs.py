"""docs/configuration.md and docs/metrics.md must match the code (run scripts/gen-docs)."""

from __future__ import annotations

from pathlib import Path

from eventgw import docs_gen

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_is_up_to_date():
    assert (DOCS / "configuration.md").read_text() == docs_gen.configuration()


def test_metrics_reference_is_up_to_date():
    assert (DOCS / "metrics.md").read_text() == docs_gen.metrics()
