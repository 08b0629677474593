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
    SUFFIX,
    BackupNotFound,
    BackupUnavailable,
    OpenCloseContext,
    StoreState,
    TimeKeys,
    is_object_file,
    require_open,
)
from eventgw.core.backup_codec import decode_batch, encode_batch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

logger = logging.getLogger(__name__)


def _encode_with_md5(records: Sequence[bytes]) -> tuple[bytes, str]:
    body = encode_batch(records)
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
        body, content_md5 = await asyncio.to_thread(_encode_with_md5, records)
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

    async def get(self, key: str) -> list[bytes]:
        """Download and decode one object.

        Raises:
            ValueError: ``key`` is not a key of this store.
            BackupNotFound: No such object.
            CorruptBackup: The object is damaged.
            BackupUnavailable: The request failed.
        """
        require_open(self._state, self.name)
        self._check_key(key)
        with self._translated("get", key):
            response = await self._client.get_object(Bucket=self._bucket, Key=key)
            async with response["Body"] as stream:
                data = await stream.read()
        return await asyncio.to_thread(decode_batch, data)

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
