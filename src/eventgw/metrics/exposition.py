"""Reading a scrape: Prometheus text back into samples, with prometheus_client's parser.

For the tools that read another process's ``/metrics`` (``eventgw status``): they name
samples as the text format does, ``name{label="value",...}``, and must not parse it by hand.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["sample_values"]


def sample_values(text: str, prefix: str) -> dict[str, float]:
    """Every sample whose name starts with ``prefix``, keyed ``name{label="value",...}``.

    Keys are written as the text format writes them (labels in their order, values escaped),
    ``name`` alone for a sample without labels. A family's samples include its suffixed ones
    (``_total``, ``_created``, ``_bucket``, ...).

    Raises:
        ValueError: ``text`` is not the Prometheus text format.
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix):
                values[_key(sample.name, sample.labels)] = sample.value
    return values


def _key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{pairs}}}"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
