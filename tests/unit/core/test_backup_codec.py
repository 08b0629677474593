"""Tests for eventgw.core.backup_codec: roundtrip, and every kind of damage is detected."""

from __future__ import annotations

import hmac
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventgw.core.backup_codec import (
    MAGIC,
    MAGIC_SIGNED,
    MAX_RECORD_BYTES,
    NO_AUTH,
    BackupAuth,
    CorruptBackup,
    ObjectDecoder,
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
        decode_batch(b"EGWBAK9\n" + encoded[len(MAGIC) :])
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


# -- signed objects (format version 2) and streamed decoding -----------------------------------

KEY = b"k" * 32
OLD_KEY = b"o" * 32
SIGNED = BackupAuth(key=KEY)


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(data[at : at + size])
        at += size
    out.append(data[at:])
    return out


def stream(data: bytes, auth: BackupAuth = NO_AUTH, sizes: list[int] | None = None) -> list[bytes]:
    decoder = ObjectDecoder(len(data), auth)
    records: list[bytes] = []
    for chunk in _chunks(data, sizes or []):
        records += decoder.feed(chunk)
    assert decoder.finish() == len(records)
    return records


def forge(records: list[bytes], key: bytes = b"not the key" * 3) -> bytes:
    """What a forger writes: a well-formed signed object, every CRC right, the wrong key."""
    return encode_batch(records, key)


@given(
    st.lists(st.binary(max_size=300), max_size=12),
    st.lists(st.integers(min_value=0, max_value=97), max_size=30),
    st.booleans(),
)
def test_streamed_decoding_in_any_chunks_equals_the_whole(
    records: list[bytes], sizes: list[int], signed: bool
) -> None:
    data = encode_batch(records, KEY if signed else None)
    assert len(data) == encoded_size(records, signed=signed)
    auth = SIGNED if signed else NO_AUTH
    assert stream(data, auth, sizes) == records == decode_batch(data, auth)


def signed_body(records: list[bytes]) -> bytes:
    """Version 2 without its HMAC, every CRC right: what anyone can write without the key."""
    inner = MAGIC_SIGNED
    for r in records:
        inner += struct.pack(">II", len(r), zlib.crc32(r)) + r
    inner += struct.pack(">I", len(records))
    return inner + struct.pack(">I", zlib.crc32(inner))


def test_the_signed_layout_is_the_documented_one() -> None:
    body = signed_body([b"ab"])
    assert encode_batch([b"ab"], KEY) == body + hmac.digest(KEY, body, "sha256")


def test_a_forged_object_is_refused_even_with_every_crc_right() -> None:
    with pytest.raises(CorruptBackup) as info:
        decode_batch(forge([b"evil"]), SIGNED)
    assert info.value.kind == "bad_signature"


def test_a_tampered_payload_with_recomputed_crcs_is_refused() -> None:
    genuine = encode_batch([b"pay 10"], KEY)
    with pytest.raises(CorruptBackup) as info:
        decode_batch(signed_body([b"pay 99"]) + genuine[-32:], SIGNED)
    assert info.value.kind == "bad_signature"


def test_an_unsigned_object_is_refused_where_a_signature_is_required() -> None:
    with pytest.raises(CorruptBackup) as info:
        stream(encode_batch([b"a"]), SIGNED, [3])
    assert info.value.kind == "unsigned"
    assert decode_batch(encode_batch([b"a"]), BackupAuth(KEY, accept_unsigned=True)) == [b"a"]


def test_a_signed_object_without_a_key_is_unverifiable() -> None:
    with pytest.raises(CorruptBackup) as info:
        decode_batch(encode_batch([b"a"], KEY))
    assert info.value.kind == "unverifiable"


def test_a_previous_key_still_verifies_and_never_signs() -> None:
    rotated = BackupAuth(key=KEY, previous_keys=(OLD_KEY,))
    assert decode_batch(encode_batch([b"old"], OLD_KEY), rotated) == [b"old"]
    assert decode_batch(encode_batch([b"new"], KEY), rotated) == [b"new"]
    with pytest.raises(CorruptBackup):
        decode_batch(encode_batch([b"new"], KEY), BackupAuth(key=OLD_KEY))


def test_keys_never_show_in_repr_and_must_be_usable() -> None:
    assert "kkkk" not in repr(SIGNED)
    assert "oooo" not in repr(BackupAuth(KEY, (OLD_KEY,)))
    with pytest.raises(ValueError, match="empty"):
        BackupAuth(key=b"")
    with pytest.raises(ValueError, match="previous_keys need a key"):
        BackupAuth(previous_keys=(OLD_KEY,))


def test_a_record_length_past_the_limit_is_refused_before_it_is_buffered() -> None:
    header = MAGIC + struct.pack(">II", MAX_RECORD_BYTES + 1, 0)
    decoder = ObjectDecoder(1 << 40)  # the store says: a huge object
    with pytest.raises(CorruptBackup) as info:
        decoder.feed(header)
    assert info.value.kind == "record_too_large"


def test_more_bytes_than_announced_is_a_size_mismatch() -> None:
    data = encode_batch([b"a"])
    decoder = ObjectDecoder(len(data) - 1)
    with pytest.raises(CorruptBackup) as info:
        decoder.feed(data)
    assert info.value.kind == "size_mismatch"


def test_memory_holds_one_record_and_one_chunk_whatever_the_object_size() -> None:
    record = bytes(range(256)) * 16  # 4 KiB
    data = encode_batch([record] * 2000, KEY)  # 8 MiB
    decoder = ObjectDecoder(len(data), SIGNED)
    chunk = 64 << 10
    count = 0
    for at in range(0, len(data), chunk):
        count += len(decoder.feed(data[at : at + chunk]))
        assert len(decoder._buffer) <= chunk + len(record) + 8
    assert decoder.finish() == count == 2000


@settings(max_examples=400, deadline=None)
@given(
    records=st.lists(st.binary(max_size=40), max_size=5),
    signed=st.booleans(),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=4)), max_size=4),
    cut=st.integers(min_value=0, max_value=400),
    noise=st.binary(max_size=120),
    sizes=st.lists(st.integers(min_value=0, max_value=50), max_size=8),
)
def test_any_bytes_decode_to_records_or_raise_corrupt_backup(
    records: list[bytes],
    signed: bool,
    edits: list[tuple[int, bytes]],
    cut: int,
    noise: bytes,
    sizes: list[int],
) -> None:
    """Damaged, cut, spliced and random objects: CorruptBackup, never anything else; and a
    signed object that decodes under the key is byte-for-byte one the key signed."""
    data = bytearray(encode_batch(records, KEY if signed else None))
    for offset, replacement in edits:
        at = offset % (len(data) + 1)
        data[at : at + len(replacement)] = replacement
    for candidate in (bytes(data), bytes(data[:cut]), noise, bytes(data[:cut]) + noise):
        for auth in (NO_AUTH, SIGNED, BackupAuth(KEY, accept_unsigned=True)):
            try:
                decoded = stream(candidate, auth, sizes)
            except CorruptBackup:
                continue
            if candidate.startswith(MAGIC_SIGNED):
                assert candidate == encode_batch(decoded, KEY), "only what the key signed"
