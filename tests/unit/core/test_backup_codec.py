"""Tests for eventgw.core.backup_codec: roundtrip, and every kind of damage is detected."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventgw.core.backup_codec import (
    MAGIC,
    CorruptBackup,
    decode_batch,
    encode_batch,
    encoded_size,
)
from eventgw.core.errors import EventGwError

RECORDS = [b"first", b"", b"\x00\xff" * 7, b"last record"]


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


@given(st.lists(st.binary(max_size=512), max_size=20))
def test_roundtrip_property(records: list[bytes]) -> None:
    encoded = encode_batch(records)
    assert len(encoded) == encoded_size(records)
    assert decode_batch(encoded) == records


def test_layout_matches_the_documented_format() -> None:
    encoded = encode_batch([b"ab"])
    body = MAGIC + struct.pack(">II", 2, zlib.crc32(b"ab")) + b"ab" + struct.pack(">I", 1)
    assert encoded == body + struct.pack(">I", zlib.crc32(body))


def test_empty_batch_roundtrips() -> None:
    assert decode_batch(encode_batch([])) == []


def test_accepts_any_sequence_of_bytes() -> None:
    assert decode_batch(encode_batch((b"a", b"b"))) == [b"a", b"b"]


def test_bad_magic() -> None:
    encoded = encode_batch(RECORDS)
    with pytest.raises(CorruptBackup) as info:
        decode_batch(b"EGWBAK2\n" + encoded[len(MAGIC) :])
    assert info.value.kind == "bad_magic"
    assert info.value.offset == 0
    assert "bad_magic at byte offset 0" in str(info.value)


def test_not_a_backup_at_all() -> None:
    with pytest.raises(CorruptBackup) as info:
        decode_batch(b"PK\x03\x04 this is a zip file")
    assert info.value.kind == "bad_magic"


@pytest.mark.parametrize("cut", range(len(encode_batch(RECORDS))))
def test_every_truncation_is_detected(cut: int) -> None:
    encoded = encode_batch(RECORDS)
    with pytest.raises(CorruptBackup):
        decode_batch(encoded[:cut])


def test_truncation_on_a_record_boundary_is_detected() -> None:
    # Dropping the last record and the trailer leaves a structurally plausible prefix; the
    # trailer check (count and object CRC) must still catch it.
    whole = encode_batch([b"aaaa", b"bbbb"])
    first_record_end = len(MAGIC) + 8 + 4
    with pytest.raises(CorruptBackup):
        decode_batch(whole[: first_record_end + 8])


def test_corrupt_error_is_a_value_error_and_an_eventgw_error() -> None:
    with pytest.raises(ValueError, match="corrupt backup object") as info:
        decode_batch(b"")
    assert isinstance(info.value, EventGwError)
    assert not info.value.retriable


def _regions(records: list[bytes]) -> dict[str, range]:
    """Byte ranges of each structure in ``encode_batch(records)``."""
    regions: dict[str, range] = {"magic": range(len(MAGIC))}
    offset = len(MAGIC)
    for index, record in enumerate(records):
        regions[f"record{index}.length"] = range(offset, offset + 4)
        regions[f"record{index}.crc"] = range(offset + 4, offset + 8)
        regions[f"record{index}.payload"] = range(offset + 8, offset + 8 + len(record))
        offset += 8 + len(record)
    regions["trailer.count"] = range(offset, offset + 4)
    regions["trailer.crc"] = range(offset + 4, offset + 8)
    return regions


EXPECTED_KIND = {
    "magic": {"bad_magic"},
    # A damaged length either overruns the object, misaligns the walk so a later header or
    # CRC fails, or runs into the trailer: any of them is fine, all are loud.
    "length": {"record_overrun", "record_crc", "truncated", "count_mismatch", "object_crc"},
    "crc": {"record_crc"},
    "payload": {"record_crc"},
    "trailer.count": {"count_mismatch"},
    "trailer.crc": {"object_crc"},
}


@pytest.mark.parametrize("region", list(_regions(RECORDS)))
def test_flipping_any_byte_in_each_region_is_detected(region: str) -> None:
    encoded = encode_batch(RECORDS)
    expected = EXPECTED_KIND.get(region, EXPECTED_KIND.get(region.rpartition(".")[2]))
    assert expected is not None
    for offset in _regions(RECORDS)[region]:
        with pytest.raises(CorruptBackup) as info:
            decode_batch(_flip(encoded, offset))
        assert info.value.kind in expected, (region, offset, info.value)


def test_record_crc_mismatch_names_the_record_offset() -> None:
    encoded = encode_batch(RECORDS)
    regions = _regions(RECORDS)
    with pytest.raises(CorruptBackup) as info:
        decode_batch(_flip(encoded, regions["record2.payload"].start + 3))
    assert info.value.kind == "record_crc"
    assert info.value.offset == regions["record2.length"].start
    assert "record 2" in info.value.detail


def test_count_mismatch_with_a_consistent_object_crc() -> None:
    # Built by hand: a trailer whose CRC is right but whose count is not (an encoder bug).
    body = MAGIC + struct.pack(">II", 1, zlib.crc32(b"x")) + b"x" + struct.pack(">I", 2)
    with pytest.raises(CorruptBackup) as info:
        decode_batch(body + struct.pack(">I", zlib.crc32(body)))
    assert info.value.kind == "count_mismatch"
    assert "trailer says 2 records, found 1" in str(info.value)


def test_appended_garbage_is_detected() -> None:
    with pytest.raises(CorruptBackup):
        decode_batch(encode_batch(RECORDS) + b"\x00" * 8)


def test_oversized_record_is_rejected_on_encode() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return 2**32

    with pytest.raises(ValueError, match="too large"):
        encode_batch([Huge(b"")])
