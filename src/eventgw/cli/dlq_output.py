"""How ``eventgw dlq`` prints records: the listing table, the JSON fields, one record in full.

Pure formatting of `eventgw.dlq.record.DlqRecord` and redrive-log entries; no I/O.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from eventgw.core.envelope import Priority
from eventgw.dlq.record import iso_utc

if TYPE_CHECKING:
    from collections.abc import Mapping

    from eventgw.core.envelope import Lane
    from eventgw.dlq.record import DlqRecord
    from eventgw.dlq.redrive_log import LogEntry

_ERROR_WIDTH = 60
_CLASS_NAMES = {p.value: p.name for p in Priority}

TABLE_HEADER = (
    f"{'PART:OFFSET':<12} {'WRITTEN (UTC)':<19} {'CLASS':<5} {'COMPANY':<16} {'EVENT ID':<36} "
    f"{'ATT':>3} {'ORIGIN':<8} {'REDRIVE':<7} LAST ERROR"
)


def table_row(record: DlqRecord, entry: LogEntry | None, lanes: Mapping[str, Lane]) -> str:
    """One line of the listing under `TABLE_HEADER`; ``lanes`` maps lane topics to names."""
    priority = record.priority
    origin = record.origin_topic
    error = (record.last_error or "").replace("\n", " ")
    if len(error) > _ERROR_WIDTH:
        error = error[: _ERROR_WIDTH - 1] + "…"
    attempt = record.attempt
    return (
        f"{record.coordinate:<12} {iso_utc(record.timestamp_ms)[:19].replace('T', ' '):<19} "
        f"{priority.name if priority is not None else '?':<5} "
        f"{clip(record.company or '-', 16):<16} "
        f"{record.event_id if record.decodable else '(undecodable)':<36} "
        f"{'-' if attempt is None else attempt:>3} "
        f"{clip(lanes.get(origin, origin) if origin else '-', 8):<8} "
        f"{entry.state if entry is not None else '':<7} {error}"
    )


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with ``…`` when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def entry_doc(entry: LogEntry | None) -> dict[str, Any] | None:
    """The ``redrive`` field of the JSON output: the record's redrive-log entry, or None."""
    if entry is None:
        return None
    doc: dict[str, Any] = {"state": entry.state, "target": entry.target, "at": iso_utc(entry.at_ms)}
    if entry.state == "done":
        doc["target_partition"] = entry.target_partition
        doc["target_offset"] = entry.target_offset
    return doc


def _event_fields(record: DlqRecord) -> dict[str, Any]:
    event = record.event
    if event is None:
        return {}
    fields: dict[str, Any] = {}
    for field in event.DESCRIPTOR.fields:
        if field.name == "payload":
            continue
        value = getattr(event, field.name)
        if field.name == "priority":
            value = _CLASS_NAMES.get(value, value)
        fields[field.name] = value
    return fields


def payload_preview(raw: bytes, limit: int) -> tuple[str, str]:
    """``(kind, text)``: pretty JSON, plain text or hex, cut at ``limit`` bytes."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        shown = raw[:limit].hex(" ")
        more = f" … ({len(raw) - limit} more bytes)" if len(raw) > limit else ""
        return "binary", shown + more
    kind = "text"
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        kind = "JSON"
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to pretty-print
        pass
    if len(text) > limit:
        return kind, text[:limit] + f"\n… ({len(text) - limit} more characters)"
    return kind, text


def show_doc(record: DlqRecord, entry: LogEntry | None, limit: int) -> dict[str, Any]:
    """``eventgw dlq show --json``: the listing fields, key, headers, event, payload preview."""
    raw = record.event.payload if record.event is not None else record.value
    kind, preview = payload_preview(raw, limit)
    return {
        "record": record.summary(),
        "key": (record.key or b"").decode(errors="replace"),
        "headers": [[name, value.decode(errors="replace")] for name, value in record.headers],
        "event": _event_fields(record) or None,
        "payload": {"bytes": len(raw), "kind": kind, "preview": preview},
        "redrive": entry_doc(entry),
    }


def show_text(record: DlqRecord, entry: LogEntry | None, limit: int) -> str:
    """``eventgw dlq show``: the record in full, for humans."""
    lines = [
        f"record     {record.topic} {record.coordinate}",
        f"written    {iso_utc(record.timestamp_ms)}",
        f"key        {(record.key or b'').decode(errors='replace')}",
        f"redrive    {_entry_text(entry)}",
        "headers",
    ]
    width = max((len(name) for name, _ in record.headers), default=0)
    continued = "\n" + " " * (width + 4)  # a multi-line value (an error's traceback) stays aligned
    lines += [
        f"  {name:<{width}}  {value.decode(errors='replace').replace(chr(10), continued)}"
        for name, value in record.headers
    ]
    if record.event is None:
        lines.append("event      (undecodable: the value is not an eventgw EventData)")
        raw = record.value
        label = "value"
    else:
        lines.append("event")
        for name, value in _event_fields(record).items():
            shown = f"{value}  ({iso_utc(value)})" if name.endswith("_ms") and value else value
            lines.append(f"  {name:<16} {shown}")
        raw = record.event.payload
        label = "payload"
    kind, preview = payload_preview(raw, limit)
    lines.append(f"{label:<10} {len(raw)} bytes, {kind}")
    lines += [f"  {line}" for line in preview.splitlines()]
    return "\n".join(lines)


def _entry_text(entry: LogEntry | None) -> str:
    if entry is None:
        return "not redriven"
    if entry.state == "done":
        return (
            f"redriven to {entry.target} {entry.target_partition}:{entry.target_offset} "
            f"at {iso_utc(entry.at_ms)}"
        )
    return (
        f"unfinished redrive to {entry.target} at {iso_utc(entry.at_ms)} "
        "(the next redrive looks for it in the lane)"
    )
