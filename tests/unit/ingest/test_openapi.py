"""The OpenAPI 3.1 document of the HTTP API: valid, complete, and true to the validator.

The last test is the contract in one property: a request body is valid against the
document's schema exactly when ``decode_http_body`` accepts it. The schema is checked with
jsonschema-rs, which reads patterns as ECMA-262 as JSON Schema says (Python's ``re`` would
let ``$`` match before a final newline).
"""

from __future__ import annotations

import json
from typing import Any, get_args

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pydantic import SecretStr

from eventgw.config.settings import IngestSettings
from eventgw.core.errors import InvalidEvent
from eventgw.ingest.http_bodies import EventStatus
from eventgw.ingest.openapi import openapi_document
from eventgw.ingest.pipeline import STATUS_NAMES
from eventgw.ingest.validation import decode_http_body

MAX_EVENTS = 3
SETTINGS = IngestSettings(max_events_per_request=MAX_EVENTS)
DOC = openapi_document(SETTINGS)


def _validator(schema: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    """A validator of ``schema`` whose ``$ref``s resolve into the document's components."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": DOC["components"]})


REQUEST = _validator(
    DOC["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
)


@pytest.mark.parametrize("api_keys", [[], [SecretStr("k-0123456789")]])
def test_the_document_is_valid_openapi_3_1(api_keys: list[SecretStr]) -> None:
    doc = openapi_document(IngestSettings(api_keys=api_keys))
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises OpenAPIValidationError with the offending path
    json.dumps(doc)  # and it is plain JSON


def test_an_invalid_document_is_refused_by_the_validator() -> None:
    """The check above can fail: a broken reference is caught."""
    broken = openapi_document(SETTINGS)
    broken["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] = {"$ref": "#/components/schemas/NoSuchThing"}
    with pytest.raises(Exception, match="NoSuchThing"):
        validate(broken)


def test_every_route_and_answer_is_documented() -> None:
    paths = DOC["paths"]
    assert {(p, m) for p, ops in paths.items() for m in ops} == {
        ("/v1/events", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/status", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/", "get"),
    }
    post = paths["/v1/events"]["post"]["responses"]
    assert set(post) == {"202", "400", "401", "403", "413", "415", "429", "503"}
    for code in ("429", "503"):
        assert post[code]["headers"]["Retry-After"]["required"] is True
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert "text/html" in paths["/"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]


def test_a_deferral_answer_is_documented_with_its_hint() -> None:
    answer = _validator({"$ref": "#/components/schemas/HttpResponse"})
    deferred = {
        "request_id": "r",
        "retry_after_ms": 250,
        "events": [
            {"event_id": "a", "status": "PUBLISHED", "priority": "P30", "lane": "p30",
             "topic": "t", "cluster": "primary"},
            {"event_id": "b", "status": "DEFERRED", "priority": "P10", "lane": "", "topic": ""},
        ],
    }  # fmt: skip
    assert answer.is_valid(deferred)
    assert not answer.is_valid({**deferred, "retry_after_ms": -1})
    assert not answer.is_valid({"request_id": "r", "events": [{"event_id": "a", "status": "OK"}]})


def test_the_statuses_answered_are_the_documented_ones() -> None:
    assert set(STATUS_NAMES.values()) == set(get_args(EventStatus))


def test_limits_and_auth_come_from_the_settings() -> None:
    batch = DOC["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert (batch["minItems"], batch["maxItems"]) == (1, MAX_EVENTS)
    assert "security" not in DOC["paths"]["/v1/events"]["post"]
    keyed = openapi_document(IngestSettings(api_keys=[SecretStr("k-0123456789")]))
    assert keyed["paths"]["/v1/events"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert set(keyed["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_patterns_are_ecma_262() -> None:
    """Python's ``\\Z`` is not an anchor in JSON Schema: the document says ``$`` instead."""
    text = json.dumps(DOC)
    assert "\\\\Z" not in text
    event = _validator({"$ref": "#/components/schemas/HttpEvent"})
    assert event.is_valid({"company_id": "acme", "source_name": "api"})
    assert not event.is_valid({"company_id": "acme\n", "source_name": "api"})


# --- the schema and the validator accept the same bodies --------------------------------------

_ids = st.sampled_from(["acme", "api", "a.b:c@d/e+f=g-h_i", "acme\n", "-x", "", "x" * 129, "ü"])
_values: dict[str, st.SearchStrategy[Any]] = {
    "company_id": _ids | st.none() | st.integers(),
    "source_name": _ids | st.none(),
    "statistic_key": st.sampled_from(["", "opened", "has space", "x" * 257]) | st.none(),
    "payload": st.none() | st.integers() | st.sampled_from([{"x": [1, "y"]}, "s", []]),
    "event_id": _ids | st.none(),
}
_rest = {k: v for k, v in _values.items() if k not in ("company_id", "source_name")}
_event = st.fixed_dictionaries({}, optional=_values) | st.fixed_dictionaries(
    {"company_id": st.just("acme"), "source_name": st.just("api")}, optional=_rest
)
_batch: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"events": st.lists(_event, max_size=MAX_EVENTS + 1) | st.none() | st.just({})},
    optional=_values,  # event fields beside "events"
)


@settings(max_examples=400)
@given(st.one_of(_event, _batch))
def test_a_body_is_valid_exactly_when_ingest_accepts_it(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    try:
        decode_http_body(raw, max_events=MAX_EVENTS, max_payload_bytes=1 << 20)
        accepted, why = True, ""
    except InvalidEvent as exc:  # PayloadTooLarge too (events over MAX_EVENTS)
        accepted, why = False, f"{exc.field}: {exc.message}"
    assert REQUEST.is_valid(body) == accepted, (
        f"ingest {'accepts' if accepted else f'refuses ({why})'} what the document "
        f"{'refuses' if accepted else 'accepts'}: {raw!r}"
    )
