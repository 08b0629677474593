"""Decode and validate client input; every error names the offending field.

JSON bodies are decoded by msgspec straight into typed structs; ``payload`` stays raw
bytes (``msgspec.Raw``): it is checked to be well-formed JSON but never turned into Python
objects, so a large payload costs one scan, not an object tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

from eventgw.core.errors import InvalidEvent, PayloadTooLarge

# `\Z`, not `$`: `$` also matches before a trailing newline, which would let "acme\n" in.
_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*\Z"
CompanyId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_ID_PATTERN)]
SourceName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_ID_PATTERN)]
StatisticKey = Annotated[str, msgspec.Meta(max_length=256, pattern=r"^[\x21-\x7e]*\Z")]
EventIdIn = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_ID_PATTERN)]

_NULL = msgspec.Raw(b"null")


class HttpEvent(msgspec.Struct, forbid_unknown_fields=True):
    """One event as posted to ``POST /v1/events``."""

    company_id: CompanyId
    source_name: SourceName
    statistic_key: StatisticKey = ""
    payload: msgspec.Raw = _NULL
    event_id: EventIdIn | None = None


class HttpBody(msgspec.Struct, forbid_unknown_fields=True):
    """A body is either one event or ``{"events": [...]}``; both decode into this shape."""

    events: list[HttpEvent] | None = None
    company_id: CompanyId | None = None
    source_name: SourceName | None = None
    statistic_key: StatisticKey = ""
    payload: msgspec.Raw = _NULL
    event_id: EventIdIn | None = None


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A validated event, ready to classify. ``payload`` is JSON text bytes."""

    company_id: str
    source_name: str
    statistic_key: str
    payload: bytes
    event_id: str | None


_BODY_DECODER = msgspec.json.Decoder(HttpBody)
_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING_RE = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN_RE = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _field_of(message: str) -> tuple[str, str]:
    """Turn a msgspec error message into (field path, human message)."""
    m = _PATH_RE.search(message)
    path = m.group("path").lstrip(".") if m else ""
    text = message[: m.start()] if m else message
    for rx, what in ((_MISSING_RE, "is required"), (_UNKNOWN_RE, "is not a known field")):
        fm = rx.search(text)
        if fm:
            name = fm.group("field")
            return (f"{path}.{name}" if path else name), what
    return (path or "body"), text


def decode_http_body(body: bytes, *, max_events: int, max_payload_bytes: int) -> list[ValidEvent]:
    """Decode and validate a request body.

    Raises:
        InvalidEvent: malformed JSON, non-UTF-8, wrong types, missing/unknown fields, too
            deep nesting, too many events; ``field`` names the JSON path.
        PayloadTooLarge: a payload is over ``max_payload_bytes``.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("body", f"not valid UTF-8 at byte {exc.start}") from None
    try:
        parsed = _BODY_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        field, text = _field_of(str(exc))
        raise InvalidEvent(field, text) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent("body", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("body", "JSON nested too deeply") from None
    if parsed.events is not None:
        if parsed.company_id is not None or parsed.source_name is not None:
            raise InvalidEvent("events", 'send either one event or {"events": [...]}, not both')
        if not parsed.events:
            raise InvalidEvent("events", "must contain at least one event")
        if len(parsed.events) > max_events:
            raise PayloadTooLarge(
                "events", f"at most {max_events} events per request, got {len(parsed.events)}"
            )
        out = []
        for i, e in enumerate(parsed.events):
            payload = bytes(e.payload)
            if len(payload) > max_payload_bytes:
                raise PayloadTooLarge(
                    f"events[{i}].payload",
                    f"{len(payload)} bytes is over the limit of {max_payload_bytes}",
                    index=i,
                )
            out.append(
                ValidEvent(e.company_id, e.source_name, e.statistic_key, payload, e.event_id)
            )
        return out
    if parsed.company_id is None:
        raise InvalidEvent("company_id", "is required")
    if parsed.source_name is None:
        raise InvalidEvent("source_name", "is required")
    payload = bytes(parsed.payload)
    if len(payload) > max_payload_bytes:
        raise PayloadTooLarge(
            "payload", f"{len(payload)} bytes is over the limit of {max_payload_bytes}"
        )
    return [
        ValidEvent(
            parsed.company_id, parsed.source_name, parsed.statistic_key, payload, parsed.event_id
        )
    ]


_ID_RX = re.compile(_ID_PATTERN)
_STAT_RX = re.compile(r"^[\x21-\x7e]*\Z")


def validate_grpc_event(
    index: int,
    company_id: str,
    source_name: str,
    statistic_key: str,
    payload_json: bytes,
    event_id: str,
    *,
    max_payload_bytes: int,
) -> ValidEvent:
    """Validate one gRPC ``IngestEvent`` with the same rules as HTTP; raises InvalidEvent."""
    prefix = f"events[{index}]"
    for name, value, required in (
        ("company_id", company_id, True),
        ("source_name", source_name, True),
        ("event_id", event_id, False),
    ):
        if not value:
            if required:
                raise InvalidEvent(f"{prefix}.{name}", "is required", index=index)
            continue
        if len(value) > 128 or not _ID_RX.match(value):
            raise InvalidEvent(
                f"{prefix}.{name}",
                f"must match {_ID_PATTERN} and be at most 128 characters",
                index=index,
            )
    if len(statistic_key) > 256 or not _STAT_RX.match(statistic_key):
        raise InvalidEvent(f"{prefix}.statistic_key", "printable ASCII, at most 256", index=index)
    if len(payload_json) > max_payload_bytes:
        raise PayloadTooLarge(
            f"{prefix}.payload_json",
            f"{len(payload_json)} bytes is over the limit of {max_payload_bytes}",
            index=index,
        )
    if not payload_json:
        payload_json = b"null"
    else:
        try:
            payload_json.decode("utf-8")
            msgspec.json.decode(payload_json, type=msgspec.Raw)
        except UnicodeDecodeError as exc:
            raise InvalidEvent(
                f"{prefix}.payload_json", f"not valid UTF-8 at byte {exc.start}", index=index
            ) from None
        except msgspec.DecodeError as exc:
            raise InvalidEvent(
                f"{prefix}.payload_json", f"malformed JSON: {exc}", index=index
            ) from None
        except RecursionError:
            raise InvalidEvent(
                f"{prefix}.payload_json", "JSON nested too deeply", index=index
            ) from None
    return ValidEvent(company_id, source_name, statistic_key, payload_json, event_id or None)
