"""Kubernetes JSON schemas for kubeconform, from the OpenAPI document of the Kubernetes Go module.

kubeconform fetches its schemas from GitHub by default; here only the package registries
are reachable, so scripts/k8s-tools downloads the ``k8s.io/kubernetes`` module from the Go
module proxy and this script turns its ``api/openapi-spec/swagger.json`` into one file per
kind, named as kubeconform looks them up (``{{ .ResourceKind }}{{ .KindSuffix }}.json``,
e.g. ``statefulset-apps-v1.json``). Like kubeconform's own "-strict" schemas (and kubectl's
validation), an object with ``properties`` refuses unknown fields; int-or-string and
quantities accept a string or a number.

    python3 tools/k8s_schemas.py SWAGGER_JSON OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REF = "#/definitions/"
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def strict(node: Any) -> Any:
    """A copy of ``node`` where objects with ``properties`` refuse other keys."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return dict(INT_OR_STRING)
    out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def refs(node: Any) -> set[str]:
    """Definition names ``node`` refers to, directly."""
    if isinstance(node, list):
        return set().union(*map(refs, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    ref = node.get("$ref")
    found = {ref.removeprefix(REF)} if isinstance(ref, str) else set()  # not a property named $ref
    for value in node.values():
        found |= refs(value)
    return found


def closure(name: str, definitions: dict[str, Any]) -> set[str]:
    """``name`` and every definition it reaches."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += refs(definitions[current])
    return seen


def file_name(group: str, version: str, kind: str) -> str:
    """The name kubeconform looks up for ``group/version`` ``kind``."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def main(swagger: Path, out: Path) -> int:
    definitions: dict[str, Any] = json.loads(swagger.read_text())["definitions"]
    converted = {name: strict(d) for name, d in definitions.items()}
    converted["io.k8s.apimachinery.pkg.api.resource.Quantity"] = dict(QUANTITY)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            schema = dict(converted[name])
            schema["definitions"] = {n: converted[n] for n in sorted(closure(name, definitions))}
            path = out / file_name(gvk["group"], gvk["version"], gvk["kind"])
            path.write_text(json.dumps(schema))
            written += 1
    if not written:
        sys.stderr.write(f"k8s_schemas: no kinds in {swagger}\n")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
