"""Binary format of one backup object: a checksummed, optionally signed batch of records.

A backup object holds the events the publisher could write neither to their topic nor to the
failed-writes topic. The failed-writes processor decodes it and republishes every record, so the
format must make any damage loud: a decoder that returned fewer records than were written would
lose events silently. And a backup store (a spool directory, an S3 bucket) is writable by more
than eventgw, so with a key configured every object is signed and nothing unsigned or forged is
ever replayed (docs/failure-handling.md, "Authenticated backup objects").

Layout (all integers are unsigned 32-bit big-endian)::

    magic    8 bytes   b"EGWBAK1\\n" (CRC only) or b"EGWBAK2\\n" (signed)
    record   repeated  length | crc32(payload) | payload
    trailer  8 bytes   count | crc32(every byte before this field, including count)
    hmac     32 bytes  version 2 only: HMAC-SHA256(key, every byte before this field)

The per-record CRC names the damaged record; the trailer CRC covers the whole object, so a
truncated object fails even when the cut falls on a record boundary, and ``count`` confirms that
no whole record went missing. The HMAC makes the object unforgeable without the key: a forger can
recompute every CRC, not the HMAC.

Reading is streamed (`ObjectDecoder`): bytes go in as they arrive, complete records come out,
and the decoder holds at most one record and one chunk, never the whole object. A caller that
must not act on a forged object reads it twice: once to verify (records discarded), then to use.

This module is pure: no I/O, no clock, no third-party imports.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from eventgw.core.errors import EventGwError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "MAGIC",
    "MAGIC_SIGNED",
    "MAX_RECORD_BYTES",
    "BackupAuth",
    "CorruptBackup",
    "CorruptionKind",
    "ObjectDecoder",
    "decode_batch",
    "encode_batch",
    "encoded_size",
]

MAGIC: Final = b"EGWBAK1\n"
"""First eight bytes of an object with CRCs only (format version 1)."""

MAGIC_SIGNED: Final = b"EGWBAK2\n"
"""First eight bytes of a signed object (format version 2: version 1 plus an HMAC)."""

MAX_RECORD_BYTES: Final = 64 << 20
"""A record longer than this (64 MiB, far above any Kafka record eventgw writes) is refused on
encode, and on decode taken as damage: a decoder must never buffer what a length field claims."""

_U32_MAX = 0xFFFF_FFFF
_RECORD_HEADER = struct.Struct(">II")  # length, crc32(payload)
_TRAILER = struct.Struct(">II")  # count, crc32(everything before the crc field)
_HMAC_SIZE = hashlib.sha256().digest_size
_MIN_SIZE = len(MAGIC) + _TRAILER.size

CorruptionKind = Literal[
    "bad_magic",  # the object does not start with a known magic: not a backup, or a newer one
    "truncated",  # the object ends before its structure does
    "record_crc",  # a record's payload does not match its CRC
    "record_overrun",  # a record's length runs into the trailer (damaged length or cut object)
    "record_too_large",  # a record's length is over MAX_RECORD_BYTES (damaged or forged)
    "count_mismatch",  # the trailer's count differs from the number of records found
    "object_crc",  # the trailer's CRC does not match the bytes before it
    "size_mismatch",  # more or fewer bytes arrived than the store said the object holds
    "unsigned",  # a version-1 object where a signature is required (BackupAuth)
    "unverifiable",  # a signed object, but no key is configured to check it
    "bad_signature",  # the HMAC does not match any configured key: forged or tampered
]

AUTHENTICATION_KINDS: Final[frozenset[CorruptionKind]] = frozenset(
    {"unsigned", "unverifiable", "bad_signature"}
)
"""The kinds that say the object is not trusted, rather than damaged."""


class CorruptBackup(EventGwError, ValueError):
    """A backup object failed validation; none of its records can be trusted.

    Raised by :class:`ObjectDecoder` and :func:`decode_batch`. The caller must not republish a
    partial result or delete the object: keep it and alert, because the events in it are at
    risk (or, for the `AUTHENTICATION_KINDS`, someone wrote an object eventgw did not sign).

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


@dataclass(frozen=True, slots=True)
class BackupAuth:
    """How backup objects are signed, and which objects a reader trusts.

    Attributes:
        key: signs every new object (version 2). None: new objects carry CRCs only
            (version 1), and only version-1 objects can be read.
        previous_keys: also accepted when verifying, never used to sign: a key rotation
            keeps reading what the old key signed.
        accept_unsigned: with a key, still read version-1 objects (a migration: objects
            written before the key was set). Off by default: a forger would write version 1.

    Keys never appear in ``repr``.
    """

    key: bytes | None = field(default=None, repr=False)
    previous_keys: tuple[bytes, ...] = field(default=(), repr=False)
    accept_unsigned: bool = False

    def __post_init__(self) -> None:
        if self.key is None and self.previous_keys:
            raise ValueError("previous_keys need a key: without one nothing is verified")
        if any(not k for k in (self.key, *self.previous_keys) if k is not None):
            raise ValueError("an HMAC key must not be empty")

    @property
    def verify_keys(self) -> tuple[bytes, ...]:
        """Every key a signature may be made with (the current one first)."""
        return () if self.key is None else (self.key, *self.previous_keys)

    @property
    def signature_required(self) -> bool:
        """True when version-1 (unsigned) objects are refused."""
        return self.key is not None and not self.accept_unsigned


NO_AUTH: Final = BackupAuth()
"""No key: version-1 objects are written and read; signed ones cannot be verified."""


def encode_batch(records: Sequence[bytes], key: bytes | None = None) -> bytes:
    """Encode ``records`` into one backup object, signed with ``key`` when given.

    Args:
        records: Opaque payloads (serialized ``EventData``), in the order they must be
            republished. An empty sequence encodes a valid, empty object.
        key: HMAC-SHA256 key: the object is version 2 (signed). None: version 1.

    Returns:
        The object bytes; :func:`decode_batch` returns ``records`` unchanged from them.

    Raises:
        ValueError: A record is longer than `MAX_RECORD_BYTES`, there are more than 2**32 - 1
            records, or ``key`` is empty.
    """
    if len(records) > _U32_MAX:
        raise ValueError(f"too many records for one backup object: {len(records)} > {_U32_MAX}")
    if key is not None and not key:
        raise ValueError("an HMAC key must not be empty")
    parts: list[bytes] = [MAGIC if key is None else MAGIC_SIGNED]
    for index, record in enumerate(records):
        if len(record) > MAX_RECORD_BYTES:
            raise ValueError(
                f"record {index} is too large: {len(record)} bytes > {MAX_RECORD_BYTES}"
            )
        parts.append(_RECORD_HEADER.pack(len(record), zlib.crc32(record)))
        parts.append(record)
    parts.append(struct.pack(">I", len(records)))
    body = b"".join(parts)
    body += struct.pack(">I", zlib.crc32(body))
    if key is None:
        return body
    return body + hmac.digest(key, body, "sha256")


def encoded_size(records: Sequence[bytes], *, signed: bool = False) -> int:
    """Return ``len(encode_batch(records, key))`` without encoding anything.

    Lets a caller check a size bound before paying for the copy.
    """
    size = len(MAGIC) + sum(_RECORD_HEADER.size + len(r) for r in records) + _TRAILER.size
    return size + (_HMAC_SIZE if signed else 0)


class ObjectDecoder:
    """Decodes one backup object as its bytes arrive; records come out as they complete.

    Usage: ``feed`` every chunk in order (each call returns the records it completed, every
    one CRC-checked), then ``finish`` (checks the trailer, the size and the signature, and
    returns the record count). Any failure raises `CorruptBackup`, at the earliest byte that
    shows it: an unknown magic, an unsigned object where a signature is required, or a
    signed one without a key, on the first 8 bytes.

    A record is returned before the signature at the end is checked. A caller that must
    not act on a forged object decodes it twice: first to verify, dropping the records,
    then to use them (`eventgw.backup` does so, and pins the object between the two reads).

    Memory: the bytes of at most one record plus one chunk, whatever the object's size.

    Args:
        size: the object's size in bytes, as the store reports it (the trailer is found
            from the end).
        auth: which objects are trusted and with which keys.
    """

    def __init__(self, size: int, auth: BackupAuth = NO_AUTH) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self._size = size
        self._auth = auth
        self._head = b""  # the first bytes, until the magic says which version this is
        self._buffer = bytearray()  # bytes not yet returned as records (from _position on)
        self._position = 0  # object offset of _buffer[0]
        self._received = 0  # bytes fed so far
        self._signed: bool | None = None  # known once the magic is read
        self._trailer_at = 0
        self._crc = 0
        self._macs: list[hmac.HMAC] = []
        self._records = 0

    @property
    def records(self) -> int:
        """Records returned so far."""
        return self._records

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next bytes of the object; return the records they completed, in order.

        Raises:
            CorruptBackup: the bytes so far already show damage or an untrusted object.
        """
        if self._received + len(chunk) > self._size:
            raise CorruptBackup(
                "size_mismatch", self._size, f"more than the {self._size} bytes announced"
            )
        start = self._received
        self._received += len(chunk)
        if self._signed is None:
            self._head += chunk
            if len(self._head) < len(MAGIC) and self._received < self._size:
                return []
            self._read_magic()
            chunk, start, self._head = self._head, 0, b""
            self._buffer += chunk[len(MAGIC) :]
        else:
            self._buffer += chunk
        self._hash(chunk, start)
        return self._records_ready()

    def finish(self) -> int:
        """Check what only the end can show (trailer, size, signature); return the count.

        Raises:
            CorruptBackup: the object is truncated, damaged or not signed with a trusted key.
        """
        if self._received != self._size:
            raise CorruptBackup(
                "truncated", self._received, f"{self._received} of {self._size} bytes arrived"
            )
        if self._signed is None:
            self._read_magic()  # an object shorter than the magic: raises
        trailer = bytes(self._buffer)
        if self._position != self._trailer_at or len(trailer) != self._size - self._trailer_at:
            raise CorruptBackup(
                "truncated", self._position, "record header runs into the trailer (object was cut)"
            )
        count, expected_crc = _TRAILER.unpack_from(trailer)
        # Records are checked before the object CRC so that damage inside a record is reported
        # at that record's offset, and the count before the CRC so that each trailer field
        # reports its own damage; the object CRC still rejects anything the structural checks
        # let through, and the signature anything a forger could recompute.
        if count != self._records:
            raise CorruptBackup(
                "count_mismatch",
                self._trailer_at,
                f"trailer says {count} records, found {self._records}",
            )
        if self._crc != expected_crc:
            raise CorruptBackup(
                "object_crc",
                self._trailer_at + 4,
                f"crc32 {self._crc:#010x} != stored {expected_crc:#010x}",
            )
        if self._signed:
            stored = trailer[_TRAILER.size :]
            if not any(hmac.compare_digest(m.digest(), stored) for m in self._macs):
                raise CorruptBackup(
                    "bad_signature",
                    self._trailer_at + _TRAILER.size,
                    "the HMAC matches no configured key: forged, tampered, or signed with a "
                    "key this reader does not have",
                )
        return self._records

    def _read_magic(self) -> None:
        head = self._head[: len(MAGIC)]
        if head == MAGIC:
            signed = False
        elif head == MAGIC_SIGNED:
            signed = True
        elif len(head) < len(MAGIC) and (MAGIC.startswith(head) or MAGIC_SIGNED.startswith(head)):
            raise CorruptBackup("truncated", self._size, f"object is {self._size} bytes")
        else:
            raise CorruptBackup(
                "bad_magic", 0, f"expected {MAGIC!r} or {MAGIC_SIGNED!r}, found {head!r}"
            )
        if not signed and self._auth.signature_required:
            raise CorruptBackup(
                "unsigned", 0, "a version-1 object (CRC only) where a signature is required"
            )
        if signed and not self._auth.verify_keys:
            raise CorruptBackup("unverifiable", 0, "a signed object, but no HMAC key is set")
        minimum = _MIN_SIZE + (_HMAC_SIZE if signed else 0)
        if self._size < minimum:
            raise CorruptBackup(
                "truncated", self._size, f"object is {self._size} bytes, minimum is {minimum}"
            )
        self._signed = signed
        self._trailer_at = self._size - _TRAILER.size - (_HMAC_SIZE if signed else 0)
        self._position = len(MAGIC)
        if signed:
            self._macs = [hmac.new(k, digestmod="sha256") for k in self._auth.verify_keys]

    def _hash(self, data: bytes, start: int) -> None:
        """Feed ``data`` (at object offset ``start``) to the CRC and the HMACs.

        The CRC covers ``[0, trailer_at + 4)``, the HMAC ``[0, trailer_at + 8)``.
        """
        crc_end = self._trailer_at + 4
        if start < crc_end:
            self._crc = zlib.crc32(data[: crc_end - start], self._crc)
        mac_end = self._trailer_at + _TRAILER.size
        if self._macs and start < mac_end:
            part = data[: mac_end - start]
            for mac in self._macs:
                mac.update(part)

    def _records_ready(self) -> list[bytes]:
        out: list[bytes] = []
        buffer = self._buffer
        used = 0  # bytes of buffer returned as records; dropped once, at the end
        position = self._position
        try:
            while position < self._trailer_at:
                room = self._trailer_at - position
                have = len(buffer) - used
                if room < _RECORD_HEADER.size:
                    if have >= room:
                        raise CorruptBackup(
                            "truncated",
                            position,
                            "record header runs into the trailer (object was cut)",
                        )
                    break
                if have < _RECORD_HEADER.size:
                    break
                length, expected_crc = _RECORD_HEADER.unpack_from(buffer, used)
                if length > MAX_RECORD_BYTES:
                    raise CorruptBackup(
                        "record_too_large",
                        position,
                        f"record {self._records} claims {length} bytes > {MAX_RECORD_BYTES}",
                    )
                end = position + _RECORD_HEADER.size + length
                if end > self._trailer_at:
                    raise CorruptBackup(
                        "record_overrun",
                        position,
                        f"record of {length} bytes ends at {end}, past the trailer at "
                        f"{self._trailer_at}",
                    )
                if have < _RECORD_HEADER.size + length:
                    break
                first = used + _RECORD_HEADER.size
                payload = bytes(buffer[first : first + length])
                actual_crc = zlib.crc32(payload)
                if actual_crc != expected_crc:
                    raise CorruptBackup(
                        "record_crc",
                        position,
                        f"record {self._records}: crc32 {actual_crc:#010x} != stored "
                        f"{expected_crc:#010x}",
                    )
                used = first + length
                position = end
                self._records += 1
                out.append(payload)
        finally:
            del buffer[:used]
            self._position = position
        return out


def decode_batch(data: bytes, auth: BackupAuth = NO_AUTH) -> list[bytes]:
    """Decode a whole backup object produced by :func:`encode_batch`.

    Validation is all-or-nothing: either every record is returned, in the order it was encoded,
    or :class:`CorruptBackup` is raised and nothing is returned. Holds the whole object: for
    objects of any size, stream them through `ObjectDecoder` instead.

    Raises:
        CorruptBackup: Bad magic, truncation, a record or object CRC mismatch, a record length
            that overruns the object, a record count that differs from the trailer, or (see
            ``auth``) an unsigned, unverifiable or forged object.
    """
    decoder = ObjectDecoder(len(data), auth)
    records = decoder.feed(data)
    decoder.finish()
    return records
