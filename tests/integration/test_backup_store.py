"""Integration tests for eventgw.backup: SpoolStore on a real directory, S3Store on a real server.

The S3 tests talk HTTP to moto's standalone server (the ``s3_server`` session fixture), a
separate process on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import time
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from eventgw.backup import (
    BackupFull,
    BackupNotFound,
    BackupStore,
    BackupUnavailable,
    S3Store,
    SpoolStore,
)
from eventgw.cli.local_procs import free_port
from eventgw.core.backup_codec import (
    MAGIC_SIGNED,
    NO_AUTH,
    BackupAuth,
    CorruptBackup,
    encode_batch,
    encoded_size,
)
from eventgw.core.errors import Backpressure, RetriableError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from tests.fixtures.s3 import S3Server

BATCH = [b"event-1", b"", b"\x00" * 100, b"event-4"]
# Generous: each S3 call makes at most 2 attempts of (2 s connect + 5 s read).
S3_DEADLINE_S = 30.0


def _stepping_clock(*values: int) -> Callable[[], int]:
    """A time_ns() that returns ``values`` in order, then repeats the last one."""
    remaining = list(values)

    def time_ns() -> int:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return time_ns


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _make_leftover(directory: Path, name: str, age_s: float) -> Path:
    path = directory / name
    path.write_bytes(b"partial write")
    mtime = time.time() - age_s
    os.utime(path, (mtime, mtime))
    return path


# --------------------------------------------------------------------------- SpoolStore


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[SpoolStore]:
    async with SpoolStore(tmp_path / "spool", max_bytes=1 << 20) as store:
        yield store


async def test_spool_put_list_get_delete(spool: SpoolStore, tmp_path: Path) -> None:
    key = await spool.put(BATCH)

    assert await spool.list_keys() == [key]
    assert await spool.get(key) == BATCH
    assert (tmp_path / "spool" / f"{key}.egwbak").read_bytes() == encode_batch(BATCH)
    assert spool.statistics().used_bytes == encoded_size(BATCH)

    await spool.delete(key)
    assert await spool.list_keys() == []
    assert spool.statistics().used_bytes == 0


async def test_spool_satisfies_the_protocol(spool: SpoolStore) -> None:
    store: BackupStore = spool
    assert store.name == "spool"


async def test_spool_lists_oldest_first_even_when_the_clock_stalls_or_steps_back(
    tmp_path: Path,
) -> None:
    clock = _stepping_clock(5_000, 5_000, 4_000, 9_000)
    async with SpoolStore(tmp_path, max_bytes=1 << 20, time_ns=clock) as store:
        keys = [await store.put([f"batch-{i}".encode()]) for i in range(4)]
        assert await store.list_keys() == keys
        assert [await store.get(k) for k in keys] == [[f"batch-{i}".encode()] for i in range(4)]


async def test_spool_concurrent_puts_are_all_stored(spool: SpoolStore) -> None:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(spool.put([f"e{i}".encode()])) for i in range(20)]
    keys = sorted(t.result() for t in tasks)
    assert await spool.list_keys() == keys
    assert len(set(keys)) == 20


async def test_spool_put_fsyncs_file_and_directory(
    spool: SpoolStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    key = await spool.put(BATCH)

    directory = str((tmp_path / "spool").resolve())
    assert synced == [f"{directory}/.tmp-{key}", directory]


async def test_spool_open_removes_stale_tmp_leftovers_and_ignores_fresh_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale = _make_leftover(tmp_path, ".tmp-00000000000000000001-aaaaaaaaaaaa", age_s=3600)
    fresh = _make_leftover(tmp_path, ".tmp-00000000000000000002-bbbbbbbbbbbb", age_s=0)
    (tmp_path / "README.txt").write_text("not a backup object")

    with caplog.at_level(logging.WARNING, logger="eventgw.backup.store"):
        async with SpoolStore(tmp_path, max_bytes=1 << 20) as store:
            assert not stale.exists()
            # A young leftover may be another process's put in progress: left alone, not listed.
            assert fresh.exists()
            assert await store.list_keys() == []
            key = await store.put(BATCH)
            assert await store.list_keys() == [key]

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "backup.spool.leftover_removed" in warnings[0].getMessage()
    assert stale.name in warnings[0].getMessage()


async def test_spool_reopen_finds_objects_and_counts_their_size(tmp_path: Path) -> None:
    async with SpoolStore(tmp_path, max_bytes=1 << 20) as store:
        first = await store.put(BATCH)
        second = await store.put([b"x"])
    async with SpoolStore(tmp_path, max_bytes=1 << 20) as store:
        assert await store.list_keys() == [first, second]
        assert store.statistics().used_bytes == encoded_size(BATCH) + encoded_size([b"x"])


async def test_spool_refuses_a_batch_over_the_size_bound(tmp_path: Path) -> None:
    batch = [b"x" * 100]
    size = encoded_size(batch)
    async with SpoolStore(tmp_path, max_bytes=2 * size + size // 2) as store:
        await store.put(batch)
        await store.put(batch)

        with pytest.raises(BackupFull) as info:
            await store.put(batch)
        assert (info.value.used_bytes, info.value.batch_bytes) == (2 * size, size)
        assert info.value.max_bytes == 2 * size + size // 2
        assert isinstance(info.value, Backpressure)  # the sender slows down and retries
        assert len(os.listdir(tmp_path)) == 2  # nothing written, no leftover

        # Space freed by this store is reusable at once.
        await store.delete((await store.list_keys())[0])
        await store.put(batch)


async def test_spool_rescans_before_refusing_when_another_process_freed_space(
    tmp_path: Path,
) -> None:
    batch = [b"x" * 100]
    size = encoded_size(batch)
    async with SpoolStore(tmp_path, max_bytes=size) as store:
        key = await store.put(batch)
        # The failed-writes processor, in another process, deletes the object.
        (tmp_path / f"{key}.egwbak").unlink()
        await store.put(batch)
        assert store.statistics().used_bytes == size


async def test_spool_refuses_a_batch_larger_than_the_whole_bound(tmp_path: Path) -> None:
    async with SpoolStore(tmp_path, max_bytes=64) as store:
        with pytest.raises(BackupFull):
            await store.put([b"x" * 64])
        assert store.statistics().reserved_bytes == 0


async def test_spool_corrupted_file_raises_corrupt_backup(
    spool: SpoolStore, tmp_path: Path
) -> None:
    key = await spool.put(BATCH)
    _flip_byte(tmp_path / "spool" / f"{key}.egwbak", 20)
    with pytest.raises(CorruptBackup):
        await spool.get(key)


async def test_spool_truncated_file_raises_corrupt_backup(
    spool: SpoolStore, tmp_path: Path
) -> None:
    key = await spool.put(BATCH)
    path = tmp_path / "spool" / f"{key}.egwbak"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CorruptBackup):
        await spool.get(key)


async def test_spool_get_missing_raises_not_found_and_delete_missing_is_a_no_op(
    spool: SpoolStore,
) -> None:
    key = await spool.put(BATCH)
    await spool.delete(key)
    await spool.delete(key)
    with pytest.raises(BackupNotFound) as info:
        await spool.get(key)
    assert info.value.key == key


@pytest.mark.parametrize("key", ["../../etc/passwd", "", "00000000000000000001-ABCDEFabcdef"])
async def test_spool_rejects_keys_it_did_not_make(spool: SpoolStore, key: str) -> None:
    with pytest.raises(ValueError, match="not a spool backup key"):
        await spool.get(key)
    with pytest.raises(ValueError, match="not a spool backup key"):
        await spool.delete(key)


async def test_spool_io_error_raises_backup_unavailable(spool: SpoolStore, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "spool")
    with pytest.raises(BackupUnavailable) as info:
        await spool.put(BATCH)
    assert (info.value.store, info.value.operation) == ("spool", "put")
    assert isinstance(info.value.__cause__, OSError)
    assert isinstance(info.value, RetriableError)
    assert spool.statistics().used_bytes == 0
    with pytest.raises(BackupUnavailable):
        await spool.list_keys()


async def test_spool_rejects_an_empty_batch(spool: SpoolStore) -> None:
    with pytest.raises(ValueError, match="at least one record"):
        await spool.put([])


async def test_spool_calls_outside_open_raise(tmp_path: Path) -> None:
    store = SpoolStore(tmp_path, max_bytes=1 << 20)
    with pytest.raises(RuntimeError, match="new, not open"):
        await store.put(BATCH)
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed, not open"):
        await store.list_keys()
    with pytest.raises(RuntimeError, match="cannot open"):
        await store.open()


def test_spool_rejects_a_non_positive_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        SpoolStore(tmp_path, max_bytes=0)


# --------------------------------------------------------------------------- S3Store


def _s3_store(
    server: S3Server,
    bucket: str,
    prefix: str,
    endpoint_url: str | None = None,
    auth: BackupAuth = NO_AUTH,
) -> S3Store:
    return S3Store(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint_url or server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        auth=auth,
    )


@pytest.fixture
async def s3_store(s3_server: S3Server, s3_bucket: str) -> AsyncIterator[S3Store]:
    async with _s3_store(s3_server, s3_bucket, "backup/") as store:
        yield store


@pytest.mark.s3
async def test_s3_put_list_get_delete(
    s3_store: S3Store, s3_server: S3Server, s3_bucket: str
) -> None:
    async with asyncio.timeout(S3_DEADLINE_S):
        first = await s3_store.put(BATCH)
        second = await s3_store.put([b"second batch"])

        assert first.startswith("backup/")
        assert first.endswith(".egwbak")
        assert await s3_store.list_keys() == [first, second]
        assert await s3_store.get(first) == BATCH
        assert await s3_store.get(second) == [b"second batch"]

        await s3_store.delete(first)
        assert await s3_store.list_keys() == [second]

    client = s3_server.client()
    try:
        head = client.head_object(Bucket=s3_bucket, Key=second)
    finally:
        client.close()
    # The server received the Content-MD5 we computed, so a real S3 verifies the body with it.
    expected_md5 = base64.b64encode(hashlib.md5(encode_batch([b"second batch"])).digest())
    assert head["ResponseMetadata"]["HTTPHeaders"]["content-md5"] == expected_md5.decode()


@pytest.mark.s3
async def test_s3_satisfies_the_protocol(s3_store: S3Store) -> None:
    store: BackupStore = s3_store
    assert store.name == "s3"


@pytest.mark.s3
async def test_s3_prefixes_are_isolated(s3_server: S3Server, s3_bucket: str) -> None:
    async with (
        asyncio.timeout(S3_DEADLINE_S),
        _s3_store(s3_server, s3_bucket, "a/") as a,
        _s3_store(s3_server, s3_bucket, "a") as a_bare,
        _s3_store(s3_server, s3_bucket, "b/") as b,
    ):
        key_a = await a.put([b"for a"])
        key_b = await b.put([b"for b"])

        assert await a.list_keys() == [key_a]
        assert await b.list_keys() == [key_b]
        # "a" is a string prefix of "a/...", but "a/<timekey>" is not "<timekey>": not listed.
        assert await a_bare.list_keys() == []
        with pytest.raises(ValueError, match="not a backup key"):
            await a.get(key_b)
        with pytest.raises(ValueError, match="not a backup key"):
            await a.delete(key_b)
        assert await b.get(key_b) == [b"for b"]


@pytest.mark.s3
async def test_s3_ignores_foreign_objects_under_its_prefix(
    s3_store: S3Store, s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    try:
        client.put_object(Bucket=s3_bucket, Key="backup/README.txt", Body=b"hello")
    finally:
        client.close()
    async with asyncio.timeout(S3_DEADLINE_S):
        key = await s3_store.put(BATCH)
        assert await s3_store.list_keys() == [key]


@pytest.mark.s3
async def test_s3_lists_every_page(s3_store: S3Store) -> None:
    count = 1005  # list_objects_v2 returns at most 1000 keys per page
    semaphore = asyncio.Semaphore(16)

    async def put_one(i: int) -> str:
        async with semaphore:
            return await s3_store.put([i.to_bytes(4, "big")])

    async with asyncio.timeout(120):
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(put_one(i)) for i in range(count)]
        keys = await s3_store.list_keys()
    assert keys == sorted(t.result() for t in tasks)
    assert len(keys) == count


@pytest.mark.s3
async def test_s3_corrupted_object_raises_corrupt_backup(
    s3_store: S3Store, s3_server: S3Server, s3_bucket: str
) -> None:
    async with asyncio.timeout(S3_DEADLINE_S):
        key = await s3_store.put(BATCH)
    client = s3_server.client()
    try:
        client.put_object(Bucket=s3_bucket, Key=key, Body=encode_batch(BATCH)[:-1])
    finally:
        client.close()
    async with asyncio.timeout(S3_DEADLINE_S):
        with pytest.raises(CorruptBackup):
            await s3_store.get(key)


@pytest.mark.s3
async def test_s3_get_missing_raises_not_found_and_delete_missing_is_a_no_op(
    s3_store: S3Store,
) -> None:
    async with asyncio.timeout(S3_DEADLINE_S):
        key = await s3_store.put(BATCH)
        await s3_store.delete(key)
        await s3_store.delete(key)
        with pytest.raises(BackupNotFound) as info:
            await s3_store.get(key)
    assert info.value.key == key


@pytest.mark.s3
async def test_s3_missing_bucket_raises_backup_unavailable(s3_server: S3Server) -> None:
    async with (
        asyncio.timeout(S3_DEADLINE_S),
        _s3_store(s3_server, "egw-no-such-bucket", "backup/") as store,
    ):
        with pytest.raises(BackupUnavailable, match="NoSuchBucket") as info:
            await store.put(BATCH)
    assert (info.value.store, info.value.operation) == ("s3", "put")


@pytest.mark.s3
async def test_s3_endpoint_down_raises_backup_unavailable(s3_server: S3Server) -> None:
    # s3_server is requested only for its AWS_* isolation; the endpoint is a closed port.
    closed = f"http://127.0.0.1:{free_port()}"
    async with (
        asyncio.timeout(S3_DEADLINE_S),
        _s3_store(s3_server, "egw-any-bucket", "backup/", endpoint_url=closed) as store,
    ):
        with pytest.raises(BackupUnavailable) as put_info:
            await store.put(BATCH)
        with pytest.raises(BackupUnavailable) as list_info:
            await store.list_keys()
    assert put_info.value.operation == "put"
    assert put_info.value.key is not None
    assert put_info.value.key.startswith("backup/")
    assert list_info.value.operation == "list"
    assert "Could not connect" in str(put_info.value)


@pytest.mark.s3
async def test_s3_calls_outside_open_raise(s3_server: S3Server, s3_bucket: str) -> None:
    store = _s3_store(s3_server, s3_bucket, "backup/")
    with pytest.raises(RuntimeError, match="new, not open"):
        await store.put(BATCH)
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed, not open"):
        await store.list_keys()


def test_s3_rejects_half_given_credentials() -> None:
    with pytest.raises(ValueError, match="access_key_id and secret_access_key"):
        S3Store(
            bucket="b",
            prefix="p/",
            endpoint_url=None,
            region="us-east-1",
            access_key_id="id",
            secret_access_key=None,
        )


# ------------------------------------------------- signed objects, forgeries, streamed reads

KEY = b"0123456789abcdef" * 2
SIGNING = BackupAuth(key=KEY)


def forged(records: list[bytes]) -> bytes:
    """A well-formed signed object with every CRC right, signed with a key we do not hold."""
    return encode_batch(records, b"an attacker's key, 32 chars long")


async def collect(store: BackupStore, key: str, batch_bytes: int = 4 << 20) -> list[list[bytes]]:
    async with contextlib.aclosing(store.read(key, batch_bytes=batch_bytes)) as batches:
        return [batch async for batch in batches]


async def test_spool_signs_objects_and_reads_them_back(tmp_path: Path) -> None:
    async with SpoolStore(tmp_path, max_bytes=1 << 20, auth=SIGNING) as store:
        key = await store.put(BATCH)
        assert (tmp_path / f"{key}.egwbak").read_bytes().startswith(MAGIC_SIGNED)
        assert await collect(store, key) == [BATCH]
        assert store.statistics().used_bytes == encoded_size(BATCH, signed=True)


@pytest.mark.parametrize(
    ("content", "auth", "kind"),
    [
        (forged([b"evil"]), SIGNING, "bad_signature"),
        (encode_batch([b"unsigned"]), SIGNING, "unsigned"),
        (encode_batch([b"signed"], KEY), NO_AUTH, "unverifiable"),
    ],
    ids=["forged", "unsigned-where-required", "signed-without-a-key"],
)
async def test_spool_hands_out_nothing_of_an_untrusted_object(
    tmp_path: Path, content: bytes, auth: BackupAuth, kind: str
) -> None:
    async with SpoolStore(tmp_path, max_bytes=1 << 20, auth=auth) as store:
        key = "00000000000000000001-aaaaaaaaaaaa"
        (tmp_path / f"{key}.egwbak").write_bytes(content)
        batches = store.read(key)
        with pytest.raises(CorruptBackup) as info:
            await anext(batches)  # not even the first batch is handed out
        assert info.value.kind == kind
        await batches.aclose()
        assert await store.list_keys() == [key], "kept"


async def test_spool_streams_a_large_object_in_bounded_memory(tmp_path: Path) -> None:
    """A 24 MiB object is verified, then handed out in 1 MiB batches: memory stays a few MiB."""
    record = os.urandom(256 << 10)
    records = [record] * 96  # 24 MiB
    async with SpoolStore(tmp_path, max_bytes=64 << 20, auth=SIGNING) as store:
        key = await store.put(records)
        del records
        tracemalloc.start()
        try:
            count = 0
            async with contextlib.aclosing(store.read(key, batch_bytes=1 << 20)) as batches:
                async for batch in batches:
                    assert sum(map(len, batch)) <= (1 << 20) + len(record)
                    assert all(r == record for r in batch)
                    count += len(batch)
                    del batch
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 96
    assert peak < 6 << 20, f"peak {peak} bytes while reading a 24 MiB object"


async def test_spool_a_forged_large_object_is_refused_before_any_batch(tmp_path: Path) -> None:
    async with SpoolStore(tmp_path, max_bytes=64 << 20, auth=SIGNING) as store:
        key = "00000000000000000001-aaaaaaaaaaaa"
        (tmp_path / f"{key}.egwbak").write_bytes(forged([b"x" * (1 << 20)] * 3))
        with pytest.raises(CorruptBackup) as info:
            await collect(store, key, batch_bytes=1 << 10)
        assert info.value.kind == "bad_signature"


@pytest.mark.s3
async def test_s3_signs_objects_and_refuses_a_forged_one(
    s3_server: S3Server, s3_bucket: str
) -> None:
    store = _s3_store(s3_server, s3_bucket, "signed/", auth=SIGNING)
    async with store, asyncio.timeout(S3_DEADLINE_S):
        key = await store.put(BATCH)
        assert await collect(store, key) == [BATCH]
        client = s3_server.client()
        try:
            assert (
                client.get_object(Bucket=s3_bucket, Key=key)["Body"].read().startswith(MAGIC_SIGNED)
            )
            client.put_object(Bucket=s3_bucket, Key=key, Body=forged(BATCH))
        finally:
            client.close()
        with pytest.raises(CorruptBackup) as info:
            await collect(store, key)
        assert info.value.kind == "bad_signature"
        assert await store.list_keys() == [key]


@pytest.mark.s3
async def test_s3_streams_a_large_object_and_notices_it_change_between_reads(
    s3_server: S3Server, s3_bucket: str
) -> None:
    store = _s3_store(s3_server, s3_bucket, "large/", auth=SIGNING)
    records = [bytes([i]) * (512 << 10) for i in range(6)]  # 3 MiB: two passes, ranged
    async with store, asyncio.timeout(S3_DEADLINE_S):
        key = await store.put(records)
        assert [r for batch in await collect(store, key, 1) for r in batch] == records
        # Replaced (with a valid, signed object) after the verifying pass: the ranged reads
        # are pinned to the verified ETag, so the rest of the old object is not handed out.
        batches = store.read(key, batch_bytes=1)
        first = await anext(batches)
        assert first == [records[0]]
        client = s3_server.client()
        try:
            client.put_object(Bucket=s3_bucket, Key=key, Body=encode_batch([b"new"] * 9, KEY))
        finally:
            client.close()
        with pytest.raises(BackupUnavailable, match="PreconditionFailed"):
            async for _ in batches:
                pass
        await batches.aclose()


async def test_spool_files_are_0600_and_the_directories_it_makes_0700(tmp_path: Path) -> None:
    """The spool holds tenants' events: private to its user, even under a lax umask."""
    previous = os.umask(0o000)  # the most permissive: nothing the spool relies on
    try:
        directory = tmp_path / "made" / "by" / "spool"
        async with SpoolStore(directory, max_bytes=1 << 20) as store:
            key = await store.put(BATCH)
    finally:
        os.umask(previous)
    for level in (tmp_path / "made", tmp_path / "made" / "by", directory):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
    (obj,) = directory.iterdir()
    assert obj.name == f"{key}.egwbak"
    assert stat.S_IMODE(obj.stat().st_mode) == 0o600


async def test_spool_leaves_an_existing_directory_s_mode_alone(tmp_path: Path) -> None:
    """An emptyDir or a volume shared with the failed-writes processor is the operator's."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o770)
    async with SpoolStore(directory, max_bytes=1 << 20) as store:
        await store.put(BATCH)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o770
    assert [stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()] == [0o600]
