"""S3 (any S3-compatible endpoint) as the backup store; uploads carry Content-MD5."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from eventgw.backup.store import (
    DEFAULT_BATCH_BYTES,
    READ_CHUNK_BYTES,
    SUFFIX,
    BackupNotFound,
    BackupUnavailable,
    OpenCloseContext,
    StoreState,
    TimeKeys,
    is_object_file,
    require_open,
    verified_batches,
)
from eventgw.core.backup_codec import NO_AUTH, encode_batch

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterator, Sequence

    from eventgw.backup.store import ChunkReader
    from eventgw.core.backup_codec import BackupAuth

logger = logging.getLogger(__name__)

_RANGE_BYTES = 1 << 20  # the second pass over a large object: one ranged GET per MiB


def _encode_with_md5(records: Sequence[bytes], key: bytes | None) -> tuple[bytes, str]:
    body = encode_batch(records, key)
    digest = hashlib.md5(body, usedforsecurity=False).digest()
    return body, base64.b64encode(digest).decode("ascii")


class S3Store(OpenCloseContext):
    """Backup store in an S3 bucket (or any S3-compatible endpoint), one object per batch.

    Object keys are ``<prefix><timekey>.egwbak``; only keys of that shape under ``prefix`` are
    listed, read or deleted, so stores with different prefixes share a bucket safely. ``put``
    sends ``Content-MD5`` so the server rejects a body damaged in transit, and returns only
    after S3 acknowledged the PUT (S3 writes are durable on acknowledgement).

    States: NEW --open()--> OPEN --close()--> CLOSED. ``open()`` creates the aiobotocore client
    and ``close()`` closes it and its connection pool.

    Deadlines: each call makes at most 2 attempts, each bounded by a 2 s connect and a 5 s read
    timeout. Callers still put their own ``asyncio.timeout`` around calls.

    Authentication: with ``auth.key`` every object is signed (HMAC-SHA256) and ``read`` hands
    out only objects signed with a configured key: whoever can write the bucket could
    otherwise put events into the lanes. ``read`` pins the object's ETag (``If-Match``) on
    every request, so what it verified is what it hands out; the second pass over a large
    object is ranged GETs, so a slow consumer never holds a connection open.
    """

    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        time_ns: Callable[[], int] = time.time_ns,
        auth: BackupAuth = NO_AUTH,
    ) -> None:
        """Configure the store; nothing connects until :meth:`open`.

        Args:
            bucket: Existing bucket name.
            prefix: Key prefix, usually ending in ``/``; may be empty.
            endpoint_url: Endpoint of an S3-compatible server; ``None`` for AWS S3.
            region: Signing region.
            access_key_id: Static credentials, or ``None`` (with ``secret_access_key``) for
                botocore's default credential chain.
            secret_access_key: See ``access_key_id``.
            time_ns: Wall clock in nanoseconds for the keys (injectable for tests).
            auth: the key objects are signed with, and which objects are trusted.

        Raises:
            ValueError: Empty bucket, or only one of the two credential fields given.
        """
        if not bucket:
            raise ValueError("bucket must not be empty")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        self._bucket = bucket
        self._prefix = prefix
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._keys = TimeKeys(time_ns)
        self._auth = auth
        self._state = StoreState.NEW
        self._exit_stack = contextlib.AsyncExitStack()
        self._client: Any = None  # aiobotocore clients are untyped; used only in this class

    async def open(self) -> None:
        """Create the S3 client. Makes no request, so an unreachable endpoint shows up later.

        Raises:
            BackupUnavailable: botocore rejected the configuration.
            RuntimeError: The store was already opened.
        """
        if self._state is not StoreState.NEW:
            raise RuntimeError(f"backup s3 store is {self._state.value}, cannot open")
        config = AioConfig(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=2,
            read_timeout=5,
            # Custom endpoints (MinIO, Ceph, moto) rarely resolve `<bucket>.<host>`.
            s3={"addressing_style": "path"} if self._endpoint_url else None,
            # We send Content-MD5 ourselves; the newer default checksum headers are not
            # understood by every S3-compatible server.
            request_checksum_calculation="when_required",
        )
        with self._translated("open", None):
            self._client = await self._exit_stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    config=config,
                )
            )
        self._state = StoreState.OPEN
        logger.info(
            "backup.opened store=s3 endpoint=%s bucket=%s prefix=%s",
            self._endpoint_url or "aws",
            self._bucket,
            self._prefix,
        )

    async def close(self) -> None:
        """Close the client and its connections. Idempotent."""
        self._state = StoreState.CLOSED
        self._client = None
        await self._exit_stack.aclose()

    async def put(self, records: Sequence[bytes]) -> str:
        """Upload ``records`` as one object; return its key after S3 acknowledged the PUT.

        Raises:
            ValueError: ``records`` is empty.
            BackupUnavailable: The PUT failed (after botocore's retry).
        """
        require_open(self._state, self.name)
        if not records:
            raise ValueError("a backup batch needs at least one record")
        body, content_md5 = await asyncio.to_thread(_encode_with_md5, records, self._auth.key)
        key = f"{self._prefix}{self._keys.next_key()}{SUFFIX}"
        with self._translated("put", key):
            await self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentMD5=content_md5,
                ContentType="application/octet-stream",
            )
        logger.debug("backup.put store=s3 key=%s records=%d bytes=%d", key, len(records), len(body))
        return key

    async def list_keys(self) -> list[str]:
        """Return the keys under ``prefix``, oldest first (all pages of ``list_objects_v2``).

        Raises:
            BackupUnavailable: A list request failed.
        """
        require_open(self._state, self.name)
        keys: list[str] = []
        with self._translated("list", None):
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                keys.extend(o["Key"] for o in page.get("Contents", ()) if self._owns(o["Key"]))
        keys.sort()
        return keys

    async def read(
        self, key: str, *, batch_bytes: int = DEFAULT_BATCH_BYTES
    ) -> AsyncGenerator[list[bytes], None]:
        """Verify one object, then hand out its records in batches (`verified_batches`).

        Raises:
            ValueError: ``key`` is not a key of this store.
            BackupNotFound: No such object.
            CorruptBackup: The object is damaged, unsigned or forged (before any record).
            BackupUnavailable: A request failed, or the object changed while it was read.
        """
        require_open(self._state, self.name)
        self._check_key(key)
        client, bucket = self._client, self._bucket
        with self._translated("get", key):
            head = await client.head_object(Bucket=bucket, Key=key)
            size, etag = int(head["ContentLength"]), str(head["ETag"])
            passes = 0

            async def open_pass() -> ChunkReader:
                nonlocal passes
                passes += 1
                if passes > 1:
                    return _S3Ranges(client, bucket, key, etag, size)
                response = await client.get_object(Bucket=bucket, Key=key, IfMatch=etag)
                return _S3Body(response["Body"])

            async for batch in verified_batches(size, open_pass, self._auth, batch_bytes):
                yield batch

    async def get(self, key: str) -> list[bytes]:
        """Every record of one object (verified, as `read`); holds them all in memory.

        Raises what `read` raises.
        """
        return [record async for batch in self.read(key) for record in batch]

    async def delete(self, key: str) -> None:
        """Delete one object; S3 treats a missing key as success.

        Raises:
            ValueError: ``key`` is not a key of this store.
            BackupUnavailable: The request failed.
        """
        require_open(self._state, self.name)
        self._check_key(key)
        with self._translated("delete", key):
            await self._client.delete_object(Bucket=self._bucket, Key=key)
        logger.debug("backup.deleted store=s3 key=%s", key)

    def _owns(self, key: str) -> bool:
        rest = key.removeprefix(self._prefix)
        return key.startswith(self._prefix) and is_object_file(rest)

    def _check_key(self, key: str) -> None:
        if not self._owns(key):
            raise ValueError(f"not a backup key under prefix {self._prefix!r}: {key!r}")

    @contextlib.contextmanager
    def _translated(self, operation: str, key: str | None) -> Iterator[None]:
        """Turn botocore exceptions into BackupNotFound / BackupUnavailable, once, here."""
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if operation == "get" and key is not None and code in ("NoSuchKey", "404"):
                raise BackupNotFound(store=self.name, key=key) from exc
            raise BackupUnavailable(
                store=self.name, operation=operation, key=key, reason=f"{code}: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise BackupUnavailable(
                store=self.name, operation=operation, key=key, reason=repr(exc)
            ) from exc


class _S3Body:
    """One pass over a GET's streaming body."""

    def __init__(self, body: Any) -> None:
        self._body = body  # aiobotocore StreamingBody (untyped)

    async def read_chunk(self) -> bytes:
        data: bytes = await self._body.read(READ_CHUNK_BYTES)
        return data

    async def close(self) -> None:
        self._body.close()


class _S3Ranges:
    """One pass as ranged GETs of `_RANGE_BYTES`, each pinned to the ETag first read."""

    def __init__(self, client: Any, bucket: str, key: str, etag: str, size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._etag = etag
        self._size = size
        self._next = 0

    async def read_chunk(self) -> bytes:
        if self._next >= self._size:
            return b""
        last = min(self._size, self._next + _RANGE_BYTES) - 1
        response = await self._client.get_object(
            Bucket=self._bucket,
            Key=self._key,
            IfMatch=self._etag,
            Range=f"bytes={self._next}-{last}",
        )
        async with response["Body"] as body:
            data: bytes = await body.read()
        self._next = last + 1
        return data

    async def close(self) -> None:
        """Nothing: each range's connection is released when its body is read."""
