"""Binary format of one backup object: a checksummed batch of opaque records.

A backup object holds the events the publisher could write neither to their topic nor to the
failed-writes topic. The failed-writes processor decodes it and republishes every record, so the
format must make any damage loud: a decoder that returned fewer records than were written would
lose events silently.

Layout (all integers are unsigned 32-bit big-endian)::

    magic    8 bytes   b"EGWBAK1\\n"
    record   repeated  length | crc32(payload) | payload
    trailer  8 bytes   count | crc32(every byte before this field, including count)

The per-record CRC names the damaged record; the trailer CRC covers the whole object, so a
truncated object fails even when the cut falls on a record boundary, and ``count`` confirms that
no whole record went missing.

This module is pure: no I/O, no clock, no third-party imports.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Literal

from eventgw.core.errors import EventGwError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "MAGIC",
    "CorruptBackup",
    "CorruptionKind",
    "decode_batch",
    "encode_batch",
    "encoded_size",
]

MAGIC = b"EGWBAK1\n"
"""First eight bytes of every backup object; the ``1`` is the format version."""

_U32_MAX = 0xFFFF_FFFF
_RECORD_HEADER = struct.Struct(">II")  # length, crc32(payload)
_TRAILER = struct.Struct(">II")  # count, crc32(everything before the crc field)
_MIN_SIZE = len(MAGIC) + _TRAILER.size

CorruptionKind = Literal[
    "bad_magic",  # the object does not start with MAGIC: not a backup, or another version
    "truncated",  # the object ends before its structure does
    "record_crc",  # a record's payload does not match its CRC
    "record_overrun",  # a record's length runs into the trailer (damaged length or cut object)
    "count_mismatch",  # the trailer's count differs from the number of records found
    "object_crc",  # the trailer's CRC does not match the bytes before it
]


class CorruptBackup(EventGwError, ValueError):
    """A backup object failed validation; none of its records can be trusted.

    Raised by :func:`decode_batch`. The caller must not republish a partial result or delete the
    object: keep it and alert, because the events in it are at risk.

    Attributes:
        kind: What is wrong (see :data:`CorruptionKind`).
        offset: Byte offset in the object where the damage was found (the start of the damaged
            structure, e.g. the record header for ``record_crc``).
        detail: Human-readable specifics (expected against found values).
    """

    def __init__(self, kind: CorruptionKind, offset: int, detail: str) -> None:
        super().__init__(f"corrupt backup object: {kind} at byte offset {offset}: {detail}")
        self.kind: CorruptionKind = kind
        self.offset = offset
        self.detail = detail


def encode_batch(records: Sequence[bytes]) -> bytes:
    """Encode ``records`` into one backup object.

    Args:
        records: Opaque payloads (serialized ``EventData``), in the order they must be
            republished. An empty sequence encodes a valid, empty object.

    Returns:
        The object bytes; :func:`decode_batch` returns ``records`` unchanged from them.

    Raises:
        ValueError: A record is longer than 4 GiB - 1 or there are more than 2**32 - 1 records.
    """
    if len(records) > _U32_MAX:
        raise ValueError(f"too many records for one backup object: {len(records)} > {_U32_MAX}")
    parts: list[bytes] = [MAGIC]
    for index, record in enumerate(records):
        if len(record) > _U32_MAX:
            raise ValueError(f"record {index} is too large: {len(record)} bytes > {_U32_MAX}")
        parts.append(_RECORD_HEADER.pack(len(record), zlib.crc32(record)))
        parts.append(record)
    parts.append(struct.pack(">I", len(records)))
    body = b"".join(parts)
    return body + struct.pack(">I", zlib.crc32(body))


def encoded_size(records: Sequence[bytes]) -> int:
    """Return ``len(encode_batch(records))`` without encoding anything.

    Lets a caller check a size bound before paying for the copy.
    """
    return len(MAGIC) + sum(_RECORD_HEADER.size + len(r) for r in records) + _TRAILER.size


def decode_batch(data: bytes) -> list[bytes]:
    """Decode a backup object produced by :func:`encode_batch`.

    Validation is all-or-nothing: either every record is returned, in the order it was encoded,
    or :class:`CorruptBackup` is raised and nothing is returned.

    Args:
        data: The complete object bytes.

    Returns:
        The records, in encoding order.

    Raises:
        CorruptBackup: Bad magic, truncation, a record or object CRC mismatch, a record length
            that overruns the object, or a record count that differs from the trailer.
    """
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        if MAGIC.startswith(bytes(view)):
            raise CorruptBackup("truncated", len(data), f"object is {len(data)} bytes")
        raise CorruptBackup("bad_magic", 0, f"expected {MAGIC!r}, found {bytes(view[:8])!r}")
    if len(data) < _MIN_SIZE:
        raise CorruptBackup(
            "truncated", len(data), f"object is {len(data)} bytes, minimum is {_MIN_SIZE}"
        )

    trailer_at = len(data) - _TRAILER.size
    records: list[bytes] = []
    offset = len(MAGIC)
    while offset < trailer_at:
        if trailer_at - offset < _RECORD_HEADER.size:
            raise CorruptBackup(
                "truncated", offset, "record header runs into the trailer (object was cut)"
            )
        length, expected_crc = _RECORD_HEADER.unpack_from(view, offset)
        start = offset + _RECORD_HEADER.size
        end = start + length
        if end > trailer_at:
            raise CorruptBackup(
                "record_overrun",
                offset,
                f"record of {length} bytes ends at {end}, past the trailer at {trailer_at}",
            )
        payload = view[start:end]
        actual_crc = zlib.crc32(payload)
        if actual_crc != expected_crc:
            raise CorruptBackup(
                "record_crc",
                offset,
                f"record {len(records)}: crc32 {actual_crc:#010x} != stored {expected_crc:#010x}",
            )
        records.append(bytes(payload))
        offset = end

    count, expected_object_crc = _TRAILER.unpack_from(view, trailer_at)
    # Records are checked before the object CRC so that damage inside a record is reported at
    # that record's offset, and the count before the CRC so that each trailer field reports its
    # own damage; the object CRC still rejects anything the structural checks let through.
    if count != len(records):
        raise CorruptBackup(
            "count_mismatch", trailer_at, f"trailer says {count} records, found {len(records)}"
        )
    actual_object_crc = zlib.crc32(view[: trailer_at + 4])
    if actual_object_crc != expected_object_crc:
        raise CorruptBackup(
            "object_crc",
            trailer_at + 4,
            f"crc32 {actual_object_crc:#010x} != stored {expected_object_crc:#010x}",
        )
    return records
