"""Tests for eventgw.ingest.validation: every rejection is an InvalidEvent naming its field."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw._proto.eventgw.v1 import eventgw_pb2 as pb
from eventgw.core.errors import InvalidEvent, PayloadTooLarge
from eventgw.ingest.validation import (
    ValidEvent,
    decode_http_body,
    validate_grpc_event,
    validate_grpc_events,
)

MAX_EVENTS = 10
MAX_PAYLOAD = 1024


def decode(body: bytes | str) -> list[ValidEvent]:
    raw = body.encode() if isinstance(body, str) else body
    return decode_http_body(raw, max_events=MAX_EVENTS, max_payload_bytes=MAX_PAYLOAD)


def grpc(
    company_id: str = "acme",
    source_name: str = "api",
    statistic_key: str = "",
    payload_json: bytes = b"",
    event_id: str = "",
    *,
    index: int = 0,
) -> ValidEvent:
    return validate_grpc_event(
        index,
        company_id,
        source_name,
        statistic_key,
        payload_json,
        event_id,
        max_payload_bytes=MAX_PAYLOAD,
    )


def ev(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"company_id": "acme", "source_name": "api"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def js(obj: object) -> bytes:
    return json.dumps(obj).encode()


# --- decode_http_body: accepted input -------------------------------------------------------


def test_single_event_with_every_field() -> None:
    body = js(
        ev(statistic_key="opened", payload={"n": 1, "tags": ["a"]}, event_id="my-id:1"),
    )
    assert decode(body) == [
        ValidEvent("acme", "api", "opened", b'{"n": 1, "tags": ["a"]}', "my-id:1"),
    ]


def test_defaults_payload_null_statistic_key_empty_event_id_none() -> None:
    assert decode(js(ev())) == [ValidEvent("acme", "api", "", b"null", None)]


def test_payload_is_kept_verbatim_not_reencoded() -> None:
    payload = '{ "b" : 1.50,  "a" : "\\u00e9" }'
    body = '{"company_id":"acme","source_name":"api","payload":' + payload + "}"
    assert decode(body)[0].payload == payload.encode()


def test_batch_keeps_order() -> None:
    events = [ev(company_id=f"c{i}", payload=i) for i in range(MAX_EVENTS)]
    out = decode(js({"events": events}))
    assert [e.company_id for e in out] == [f"c{i}" for i in range(MAX_EVENTS)]
    assert [e.payload for e in out] == [str(i).encode() for i in range(MAX_EVENTS)]


def test_payload_exactly_at_the_limit_is_accepted() -> None:
    payload = "x" * (MAX_PAYLOAD - 2)  # plus the two quotes
    out = decode(js(ev(payload=payload)))
    assert len(out[0].payload) == MAX_PAYLOAD


def test_ids_may_use_the_documented_punctuation_and_128_chars() -> None:
    cid = "a" + "._:@/+=-" + "z" * 119
    assert len(cid) == 128
    assert decode(js(ev(company_id=cid)))[0].company_id == cid


# --- decode_http_body: rejected input -------------------------------------------------------

BAD_BODIES: list[tuple[str, bytes, type[InvalidEvent], str]] = [
    ("malformed json", b'{"company_id": acme}', InvalidEvent, "body"),
    ("truncated json", b'{"company_id":"acme","source_name":"ap', InvalidEvent, "body"),
    ("empty body", b"", InvalidEvent, "body"),
    ("trailing garbage", js(ev()) + b" x", InvalidEvent, "body"),
    ("json array", js([ev()]), InvalidEvent, "body"),
    ("json null", b"null", InvalidEvent, "body"),
    ("json string", b'"acme"', InvalidEvent, "body"),
    ("utf-8 bom", b"\xef\xbb\xbf" + js(ev()), InvalidEvent, "body"),
    ("non-utf8 body", b'{"company_id":"acme","source_name":"api"}\xff', InvalidEvent, "body"),
    ("non-utf8 in string", b'{"company_id":"ac\xc3\x28me","source_name":"api"}', InvalidEvent,
     "body"),
    ("lone surrogate escape", b'{"company_id":"a\\ud800","source_name":"api"}', InvalidEvent,
     "body"),
    ("deeply nested payload", b'{"company_id":"a","source_name":"s","payload":'
     + b"[" * 10_000 + b"]" * 10_000 + b"}", InvalidEvent, "body"),
    ("missing company_id", js(ev(company_id=...)), InvalidEvent, "company_id"),
    ("empty object", b"{}", InvalidEvent, "company_id"),
    ("empty company_id", js(ev(company_id="")), InvalidEvent, "company_id"),
    ("null company_id", js(ev(company_id=None)), InvalidEvent, "company_id"),
    ("company_id 129 chars", js(ev(company_id="a" * 129)), InvalidEvent, "company_id"),
    ("company_id with space", js(ev(company_id="ac me")), InvalidEvent, "company_id"),
    ("company_id leading dot", js(ev(company_id=".acme")), InvalidEvent, "company_id"),
    ("company_id nul", js(ev(company_id="ac\x00me")), InvalidEvent, "company_id"),
    ("company_id tab", js(ev(company_id="ac\tme")), InvalidEvent, "company_id"),
    ("company_id trailing newline", js(ev(company_id="acme\n")), InvalidEvent, "company_id"),
    ("company_id cyrillic a", js(ev(company_id="\u0430cme")), InvalidEvent, "company_id"),
    ("company_id fullwidth", js(ev(company_id="\uff41cme")), InvalidEvent, "company_id"),
    ("company_id zero-width", js(ev(company_id="ac\u200bme")), InvalidEvent, "company_id"),
    ("company_id number", js(ev(company_id=42)), InvalidEvent, "company_id"),
    ("missing source_name", js(ev(source_name=...)), InvalidEvent, "source_name"),
    ("source_name trailing newline", js(ev(source_name="api\n")), InvalidEvent, "source_name"),
    ("statistic_key space", js(ev(statistic_key="a b")), InvalidEvent, "statistic_key"),
    ("statistic_key newline", js(ev(statistic_key="ab\n")), InvalidEvent, "statistic_key"),
    ("statistic_key 257", js(ev(statistic_key="k" * 257)), InvalidEvent, "statistic_key"),
    ("statistic_key null", js(ev(statistic_key=None)), InvalidEvent, "statistic_key"),
    ("event_id empty", js(ev(event_id="")), InvalidEvent, "event_id"),
    ("event_id newline", js(ev(event_id="id\n")), InvalidEvent, "event_id"),
    ("unknown top-level field", js(ev(colour="red")), InvalidEvent, "colour"),
    ("payload over limit", js(ev(payload="x" * MAX_PAYLOAD)), PayloadTooLarge, "payload"),
    ("events not a list", js({"events": "x"}), InvalidEvent, "events"),
    ("events object", js({"events": ev()}), InvalidEvent, "events"),
    ("events empty", js({"events": []}), InvalidEvent, "events"),
    ("events and company_id", js({"events": [ev()], "company_id": "a"}), InvalidEvent, "events"),
    ("events and source_name", js({"events": [ev()], "source_name": "a"}), InvalidEvent, "events"),
    # A top-level event_id (idempotency key) or payload beside "events" must not vanish.
    ("events and event_id", js({"events": [ev()], "event_id": "k1"}), InvalidEvent, "events"),
    ("events and payload", js({"events": [ev()], "payload": {"k": 1}}), InvalidEvent, "events"),
    ("events and null payload", js({"events": [ev()], "payload": None}), InvalidEvent, "events"),
    ("events and statistic_key", js({"events": [ev()], "statistic_key": "k"}), InvalidEvent,
     "events"),
    # Found by the API-document property (tests/unit/ingest/test_openapi.py): null or empty
    # event fields beside "events", and a null "events" beside one event, were accepted.
    ("events and null company_id", js({"events": [ev()], "company_id": None}), InvalidEvent,
     "company_id"),
    ("events and null source_name", js({"events": [ev()], "source_name": None}), InvalidEvent,
     "source_name"),
    ("events and null event_id", js({"events": [ev()], "event_id": None}), InvalidEvent,
     "events"),
    ("events and empty statistic_key", js({"events": [ev()], "statistic_key": ""}),
     InvalidEvent, "events"),
    ("null events beside an event", js(ev(events=None)), InvalidEvent, "events"),
    ("too many events", js({"events": [ev()] * (MAX_EVENTS + 1)}), PayloadTooLarge, "events"),
    ("event not an object", js({"events": [ev(), 3]}), InvalidEvent, "events[1]"),
    ("unknown field in event", js({"events": [ev(), ev(), ev(x=1)]}), InvalidEvent, "events[2].x"),
    ("missing company_id in event", js({"events": [ev(), ev(), ev(company_id=...)]}),
     InvalidEvent, "events[2].company_id"),
    ("bad company_id in event", js({"events": [ev(), ev(), ev(company_id="a b")]}),
     InvalidEvent, "events[2].company_id"),
    ("missing source_name in event", js({"events": [ev(source_name=...)]}),
     InvalidEvent, "events[0].source_name"),
    ("payload over limit in event", js({"events": [ev(), ev(payload="x" * MAX_PAYLOAD)]}),
     PayloadTooLarge, "events[1].payload"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [pytest.param(b, e, f, id=name) for name, b, e, f in BAD_BODIES],
)
def test_bad_body_is_rejected_naming_the_field(
    body: bytes, error: type[InvalidEvent], field: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(body)
    assert type(info.value) is error
    assert info.value.field == field
    assert info.value.message
    assert str(info.value) == f"{field}: {info.value.message}"


def test_errors_carry_their_http_status() -> None:
    with pytest.raises(InvalidEvent) as bad:
        decode(b"{")
    assert bad.value.status == 400
    with pytest.raises(PayloadTooLarge) as big:
        decode(js(ev(payload="x" * MAX_PAYLOAD)))
    assert big.value.status == 413


def test_payload_limit_error_in_batch_carries_the_index() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        decode(js({"events": [ev(), ev(), ev(payload="y" * 2000)]}))
    assert info.value.index == 2


def test_first_bad_event_is_reported() -> None:
    events = [ev(), ev(company_id=""), ev(source_name="")]
    with pytest.raises(InvalidEvent) as info:
        decode(js({"events": events}))
    assert info.value.field == "events[1].company_id"


def test_non_utf8_message_gives_the_byte_offset() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(b'{"company_id":"\xff"}')
    assert info.value.message == "not valid UTF-8 at byte 15"


# --- validate_grpc_event --------------------------------------------------------------------


def test_grpc_event_accepted() -> None:
    assert grpc(statistic_key="k", payload_json=b'{"a": 1}', event_id="id-1") == ValidEvent(
        "acme", "api", "k", b'{"a": 1}', "id-1"
    )


def test_grpc_empty_payload_means_null_and_empty_event_id_means_none() -> None:
    assert grpc() == ValidEvent("acme", "api", "", b"null", None)


def test_grpc_payload_at_the_limit_is_accepted() -> None:
    payload = b'"' + b"x" * (MAX_PAYLOAD - 2) + b'"'
    assert grpc(payload_json=payload).payload == payload


BAD_GRPC: list[tuple[str, dict[str, Any], type[InvalidEvent], str]] = [
    ("missing company_id", {"company_id": ""}, InvalidEvent, "company_id"),
    ("company_id 129", {"company_id": "a" * 129}, InvalidEvent, "company_id"),
    ("company_id space", {"company_id": "ac me"}, InvalidEvent, "company_id"),
    ("company_id control", {"company_id": "ac\x01me"}, InvalidEvent, "company_id"),
    ("company_id trailing newline", {"company_id": "acme\n"}, InvalidEvent, "company_id"),
    ("company_id homoglyph", {"company_id": "\u0430cme"}, InvalidEvent, "company_id"),
    ("missing source_name", {"source_name": ""}, InvalidEvent, "source_name"),
    ("source_name trailing newline", {"source_name": "api\n"}, InvalidEvent, "source_name"),
    ("event_id bad", {"event_id": "id with space"}, InvalidEvent, "event_id"),
    ("event_id trailing newline", {"event_id": "id\n"}, InvalidEvent, "event_id"),
    ("statistic_key space", {"statistic_key": "a b"}, InvalidEvent, "statistic_key"),
    ("statistic_key newline", {"statistic_key": "ab\n"}, InvalidEvent, "statistic_key"),
    ("statistic_key 257", {"statistic_key": "k" * 257}, InvalidEvent, "statistic_key"),
    ("payload malformed", {"payload_json": b'{"a":}'}, InvalidEvent, "payload_json"),
    ("payload truncated", {"payload_json": b'{"a": 1'}, InvalidEvent, "payload_json"),
    ("payload whitespace", {"payload_json": b"  "}, InvalidEvent, "payload_json"),
    ("payload two values", {"payload_json": b"1 2"}, InvalidEvent, "payload_json"),
    ("payload non-utf8", {"payload_json": b'"\xff"'}, InvalidEvent, "payload_json"),
    ("payload over limit", {"payload_json": b"1" * (MAX_PAYLOAD + 1)}, PayloadTooLarge,
     "payload_json"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "error", "leaf"),
    [pytest.param(f, e, leaf, id=name) for name, f, e, leaf in BAD_GRPC],
)
def test_bad_grpc_event_is_rejected_naming_the_field(
    fields: dict[str, Any], error: type[InvalidEvent], leaf: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        grpc(**fields, index=3)
    assert type(info.value) is error
    assert info.value.field == f"events[3].{leaf}"
    assert info.value.index == 3
    assert str(info.value).startswith(f"events[3].{leaf}: ")


def test_grpc_deeply_nested_payload_is_rejected_not_crashing() -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    with pytest.raises(InvalidEvent) as info:
        validate_grpc_event(0, "a", "s", "", deep, "", max_payload_bytes=len(deep))
    assert type(info.value) is InvalidEvent
    assert info.value.field == "events[0].payload_json"


# --- properties -----------------------------------------------------------------------------

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)
_id_like = st.text(alphabet="abcXYZ019._:@/+=- \n\t\x00\u0430\u200b", min_size=0, max_size=130)
_field_values = {
    "company_id": _id_like | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,130}", fullmatch=True)
    | st.integers() | st.none(),
    "source_name": _id_like | st.just("api") | st.none(),
    "statistic_key": st.text(max_size=260) | st.just("opened") | st.none(),
    "payload": _json | st.integers(900, 1100).map(lambda n: "x" * n),
    "event_id": _id_like | st.none(),
    "unexpected": st.integers(),
}  # fmt: skip
_event = st.fixed_dictionaries(
    {}, optional={k: v for k, v in _field_values.items() if k != "unexpected"}
) | st.fixed_dictionaries({}, optional=_field_values)


def _check(body: bytes) -> list[ValidEvent] | None:
    try:
        return decode(body)
    except InvalidEvent as exc:
        error = exc
    assert error.field, f"empty field for {body[:200]!r}: {error}"
    assert error.message
    return None


@settings(max_examples=50)
@given(_event)
def test_any_single_event_decodes_or_names_a_field(event: dict[str, Any]) -> None:
    out = _check(js(event))
    if out is not None:
        assert len(out) == 1
        assert out[0].company_id == event["company_id"]
        assert out[0].source_name == event["source_name"]
        assert json.loads(out[0].payload) == event.get("payload")


@settings(max_examples=30)
@given(st.lists(_event, max_size=MAX_EVENTS + 2))
def test_any_batch_decodes_or_names_a_field(events: list[dict[str, Any]]) -> None:
    out = _check(js({"events": events}))
    if out is not None:
        assert [e.company_id for e in out] == [e["company_id"] for e in events]


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_raise_invalid_event(body: bytes) -> None:
    _check(body)


@settings(max_examples=50)
@given(
    st.one_of(
        st.binary(max_size=256).map(lambda b: b'{"company_id":"' + b + b'","source_name":"s"}'),
        st.binary(max_size=256).map(lambda b: b'{"events":[' + b + b"]}"),
        _json.map(lambda v: msgspec.json.encode(v)),
    )
)
def test_near_valid_bytes_only_ever_raise_invalid_event(body: bytes) -> None:
    _check(body)


@settings(max_examples=50)
@given(
    company_id=_id_like,
    source_name=_id_like,
    statistic_key=st.text(max_size=260),
    event_id=_id_like.filter(bool),
    payload=_json,
)
def test_http_and_grpc_accept_exactly_the_same_events(
    company_id: str, source_name: str, statistic_key: str, event_id: str, payload: object
) -> None:
    fields = {
        "company_id": company_id,
        "source_name": source_name,
        "statistic_key": statistic_key,
        "event_id": event_id,
    }
    payload_json = json.dumps(payload).encode()
    via_http: ValidEvent | InvalidEvent
    via_grpc: ValidEvent | InvalidEvent
    try:
        via_http = decode(js({**fields, "payload": payload}))[0]
    except InvalidEvent as exc:
        via_http = exc
    try:
        via_grpc = validate_grpc_event(
            0, company_id, source_name, statistic_key, payload_json, event_id,
            max_payload_bytes=MAX_PAYLOAD,
        )  # fmt: skip
    except InvalidEvent as exc:
        via_grpc = exc
    if isinstance(via_http, InvalidEvent) or isinstance(via_grpc, InvalidEvent):
        assert isinstance(via_http, InvalidEvent), via_grpc
        assert isinstance(via_grpc, InvalidEvent), via_http
        assert type(via_http) is type(via_grpc)
    else:
        assert via_http == via_grpc


_good_id = st.sampled_from(["acme", "globex", "api"])
_grpc_event = st.builds(  # mostly valid identities, so that the inline path is taken often
    pb.IngestEvent,
    company_id=st.one_of(_good_id, _good_id, _id_like),
    source_name=st.one_of(_good_id, _good_id, _id_like),
    statistic_key=st.one_of(st.just("opened"), st.just(""), st.text(max_size=260)),
    payload_json=st.one_of(
        _json.map(lambda v: json.dumps(v).encode()),
        st.just(b""),
        st.binary(max_size=20),
        st.just(b"1" * (MAX_PAYLOAD + 1)),
        st.just(b"[" * 5000 + b"]" * 5000),
    ),
    event_id=st.one_of(st.just(""), st.just("id-1"), _id_like),
)


@settings(max_examples=100)
@given(st.lists(_grpc_event, max_size=6))
def test_grpc_requests_validate_as_their_events_one_by_one(events: list[pb.IngestEvent]) -> None:
    """`validate_grpc_events` (the checks inline for known-good values) answers exactly what
    `validate_grpc_event` answers per event: the same ValidEvents, or the first event's
    error, the same type and field."""
    expected: list[ValidEvent] | InvalidEvent
    try:
        expected = [
            validate_grpc_event(
                i,
                e.company_id,
                e.source_name,
                e.statistic_key,
                e.payload_json,
                e.event_id,
                max_payload_bytes=MAX_PAYLOAD,
            )
            for i, e in enumerate(events)
        ]
    except InvalidEvent as exc:
        expected = exc
    for _ in range(2):  # the second time every valid identity value is known good
        try:
            got: list[ValidEvent] | InvalidEvent = validate_grpc_events(
                events, max_payload_bytes=MAX_PAYLOAD
            )
        except InvalidEvent as exc:
            got = exc
        if isinstance(expected, InvalidEvent):
            assert isinstance(got, InvalidEvent), got
            want = (type(expected), expected.field, expected.message)
            assert (type(got), got.field, got.message) == want
        else:
            assert got == expected
