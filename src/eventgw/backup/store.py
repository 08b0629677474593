"""Backup stores for failed writes: the :class:`BackupStore` protocol, a local spool and S3.

An object is one batch of records in the :mod:`eventgw.core.backup_codec` format. Keys sort in
write order (a zero-padded wall-clock nanosecond stamp, forced strictly increasing within one
store instance, then a random suffix), so ``list_keys()`` returns the oldest batch first.

Errors (what the caller does next):

- :class:`BackupFull`: the spool is at its size bound. Fail the request so the sender retries;
  never wait for space (only the failed-writes processor frees it).
- :class:`BackupUnavailable`: the store could not be reached or refused the operation. The
  outcome of a failed ``put`` is unknown: fail the request (a retry may store a duplicate,
  which replay tolerates because ``event_id`` is the key).
- :class:`BackupNotFound`: ``get`` of a key that does not exist (already deleted).
- :class:`~eventgw.core.backup_codec.CorruptBackup`: ``get`` found a damaged object. Keep it
  and alert; never delete it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from eventgw.core.backup_codec import decode_batch, encode_batch, encoded_size
from eventgw.core.errors import Backpressure, EventGwError, RetriableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path
    from types import TracebackType

__all__ = [
    "BackupFull",
    "BackupNotFound",
    "BackupStore",
    "BackupUnavailable",
    "S3Store",
    "SpoolStatistics",
    "SpoolStore",
]

logger = logging.getLogger(__name__)

_SUFFIX = ".egwbak"
_TMP_PREFIX = ".tmp-"
_TIMEKEY = re.compile(r"[0-9]{20}-[0-9a-f]{12}")
# A `.tmp-` file younger than this may be another process's put in progress (the publisher and
# the failed-writes processor can share one spool directory), so open() leaves it alone.
_LEFTOVER_MIN_AGE_S = 60.0


class BackupFull(Backpressure):
    """The spool directory would exceed its size bound; the batch was not stored.

    Attributes:
        used_bytes: Bytes the store counts as used (stored plus being written).
        batch_bytes: Size of the refused batch.
        max_bytes: The configured bound.
    """

    def __init__(self, *, used_bytes: int, batch_bytes: int, max_bytes: int) -> None:
        super().__init__(
            f"backup spool full: used_bytes={used_bytes} batch_bytes={batch_bytes} "
            f"max_bytes={max_bytes}"
        )
        self.used_bytes = used_bytes
        self.batch_bytes = batch_bytes
        self.max_bytes = max_bytes


class BackupUnavailable(RetriableError):
    """The backup store failed an operation (I/O error, unreachable endpoint, refused request).

    Always raised ``from`` the underlying ``OSError`` or botocore exception.

    Attributes:
        store: ``"spool"`` or ``"s3"``.
        operation: ``"open"``, ``"put"``, ``"list"``, ``"get"`` or ``"delete"``.
        key: The object key involved, if any.
    """

    def __init__(self, *, store: str, operation: str, key: str | None, reason: str) -> None:
        super().__init__(f"backup {store} {operation} failed: key={key} reason={reason}")
        self.store = store
        self.operation = operation
        self.key = key


class BackupNotFound(EventGwError, LookupError):
    """``get`` of a key that is not in the store (for example, already deleted).

    Attributes:
        store: ``"spool"`` or ``"s3"``.
        key: The missing key.
    """

    def __init__(self, *, store: str, key: str) -> None:
        super().__init__(f"backup {store} has no object key={key}")
        self.store = store
        self.key = key


class BackupStore(Protocol):
    """Durable storage for batches of failed writes, as the publisher and the processor need it.

    Objects are immutable once stored. Every method may raise :class:`BackupUnavailable`.
    """

    @property
    def name(self) -> str:
        """``"spool"`` or ``"s3"``, for logs and metrics."""
        ...

    async def put(self, records: Sequence[bytes]) -> str:
        """Store ``records`` as one new object and return its key once the object is durable.

        If the call fails or is cancelled, the object may or may not exist.
        """
        ...

    async def list_keys(self) -> list[str]:
        """Return the keys of all stored objects, oldest first."""
        ...

    async def get(self, key: str) -> list[bytes]:
        """Return the records of one object, in ``put`` order.

        Raises ``BackupNotFound`` or ``CorruptBackup`` as well.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error."""
        ...

    async def close(self) -> None:
        """Release the store's resources; idempotent."""
        ...


class _State(enum.Enum):
    NEW = "new"  # constructed; open() not called yet
    OPEN = "open"  # serving calls
    CLOSED = "closed"  # close() called; every call except close() raises RuntimeError


class _TimeKeys:
    """Generates ``<20-digit ns>-<12 hex>`` keys, strictly increasing within one instance."""

    def __init__(self, time_ns: Callable[[], int]) -> None:
        self._time_ns = time_ns
        self._last_ns = 0

    def next_key(self) -> str:
        # max(): two puts in the same nanosecond, or a wall clock stepped back, must still sort
        # in put order, because the processor replays the oldest batch first.
        self._last_ns = max(self._time_ns(), self._last_ns + 1)
        return f"{self._last_ns:020d}-{uuid.uuid4().hex[:12]}"


def _require_open(state: _State, name: str) -> None:
    if state is not _State.OPEN:
        raise RuntimeError(f"backup {name} store is {state.value}, not open")


@dataclass(frozen=True, slots=True)
class SpoolStatistics:
    """Point-in-time view of a :class:`SpoolStore`'s size accounting."""

    used_bytes: int  # stored objects, as last counted (see SpoolStore)
    reserved_bytes: int  # batches being written right now
    max_bytes: int  # the configured bound


class SpoolStore:
    """Backup store in a local directory: one fsynced file ``<key>.egwbak`` per batch.

    ``put`` writes ``.tmp-<key>``, fsyncs it, renames it to ``<key>.egwbak`` and fsyncs the
    directory, so a crash leaves either a complete object or a ``.tmp-`` leftover that was never
    acknowledged. ``list_keys`` ignores leftovers; ``open()`` deletes those older than a minute
    (younger ones may be another process's put in progress). All file I/O runs in worker threads.

    States: NEW --open()--> OPEN --close()--> CLOSED. Calls other than ``close()`` outside OPEN
    raise ``RuntimeError``.

    Size bound: ``put`` raises :class:`BackupFull` rather than let the stored objects plus the
    batches being written exceed ``max_bytes``. The count starts from a directory scan in
    ``open()`` and is kept in memory; another process (the failed-writes processor) may delete
    objects meanwhile, so before refusing a batch the store rescans the directory. The count
    errs high (never low) between scans, so the bound holds for this store's own writes.

    Cancellation: a cancelled ``put`` cannot stop its worker thread; the object may still appear
    and will be replayed, which is safe (replay is idempotent by ``event_id``).
    """

    name = "spool"

    def __init__(
        self, directory: Path, *, max_bytes: int, time_ns: Callable[[], int] = time.time_ns
    ) -> None:
        """Create a store over ``directory`` (created on ``open()`` if missing).

        Args:
            directory: The spool directory; this store owns the files matching its patterns.
            max_bytes: Bound on the total size of stored objects; must be positive.
            time_ns: Wall clock in nanoseconds for the keys (injectable for tests).

        Raises:
            ValueError: ``max_bytes`` is not positive.
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._directory = directory
        self._max_bytes = max_bytes
        self._keys = _TimeKeys(time_ns)
        self._state = _State.NEW
        self._used_bytes = 0
        self._reserved_bytes = 0
        self._rescan_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the directory if needed, remove stale ``.tmp-`` leftovers and count usage.

        Raises:
            BackupUnavailable: The directory could not be created or read.
            RuntimeError: The store was already opened.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"backup spool store is {self._state.value}, cannot open")
        try:
            self._used_bytes = await asyncio.to_thread(self._open_sync)
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="open", key=None, reason=repr(exc)
            ) from exc
        self._state = _State.OPEN
        logger.info(
            "backup.opened store=spool directory=%s used_bytes=%d max_bytes=%d",
            self._directory,
            self._used_bytes,
            self._max_bytes,
        )

    async def close(self) -> None:
        """Mark the store closed; there is nothing to release. Idempotent."""
        self._state = _State.CLOSED

    def statistics(self) -> SpoolStatistics:
        """Return the current size accounting; never blocks."""
        return SpoolStatistics(self._used_bytes, self._reserved_bytes, self._max_bytes)

    async def put(self, records: Sequence[bytes]) -> str:
        """Write ``records`` as one object; return its key after file and rename are fsynced.

        Raises:
            ValueError: ``records`` is empty.
            BackupFull: The batch does not fit under ``max_bytes``.
            BackupUnavailable: An ``OSError`` (disk full, I/O error) while writing.
        """
        _require_open(self._state, self.name)
        if not records:
            raise ValueError("a backup batch needs at least one record")
        size = encoded_size(records)
        await self._reserve(size)
        key = self._keys.next_key()
        stored = True
        try:
            await asyncio.to_thread(self._put_sync, key, records)
        except OSError as exc:
            stored = False
            raise BackupUnavailable(
                store=self.name, operation="put", key=key, reason=repr(exc)
            ) from exc
        finally:
            # On cancellation `stored` stays True: the thread may still land the file, and
            # counting it errs on the safe side until the next rescan.
            self._reserved_bytes -= size
            if stored:
                self._used_bytes += size
        logger.debug("backup.put store=spool key=%s records=%d bytes=%d", key, len(records), size)
        return key

    async def list_keys(self) -> list[str]:
        """Return the keys of complete objects, oldest first; ``.tmp-`` files are ignored.

        Raises:
            BackupUnavailable: The directory could not be read.
        """
        _require_open(self._state, self.name)
        try:
            return await asyncio.to_thread(self._list_sync)
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="list", key=None, reason=repr(exc)
            ) from exc

    async def get(self, key: str) -> list[bytes]:
        """Read and decode one object.

        Raises:
            ValueError: ``key`` is not a key this store produces.
            BackupNotFound: No such object.
            CorruptBackup: The file is damaged.
            BackupUnavailable: Any other ``OSError``.
        """
        _require_open(self._state, self.name)
        path = self._object_path(key)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise BackupNotFound(store=self.name, key=key) from exc
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="get", key=key, reason=repr(exc)
            ) from exc
        # Decoding CRCs the whole object; in a thread so a large batch does not stall the loop.
        return await asyncio.to_thread(decode_batch, data)

    async def delete(self, key: str) -> None:
        """Delete one object; a missing object is not an error.

        The directory is not fsynced: a delete lost in a crash only replays the batch again.

        Raises:
            ValueError: ``key`` is not a key this store produces.
            BackupUnavailable: An ``OSError`` other than "not found".
        """
        _require_open(self._state, self.name)
        path = self._object_path(key)
        try:
            freed = await asyncio.to_thread(_unlink_returning_size, path)
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="delete", key=key, reason=repr(exc)
            ) from exc
        self._used_bytes = max(0, self._used_bytes - freed)
        logger.debug("backup.deleted store=spool key=%s bytes=%d", key, freed)

    async def _reserve(self, size: int) -> None:
        if not self._fits(size):
            # One rescan at a time: a burst of refused puts must not occupy every worker thread.
            async with self._rescan_lock:
                if not self._fits(size):
                    try:
                        self._used_bytes = await asyncio.to_thread(self._scan_used_bytes)
                    except OSError as exc:
                        raise BackupUnavailable(
                            store=self.name, operation="put", key=None, reason=repr(exc)
                        ) from exc
                    # A put that renamed its file during the scan is counted again when it
                    # finishes: the count errs high until the next rescan, never low.
                    if not self._fits(size):
                        raise BackupFull(
                            used_bytes=self._used_bytes + self._reserved_bytes,
                            batch_bytes=size,
                            max_bytes=self._max_bytes,
                        )
        self._reserved_bytes += size

    def _fits(self, size: int) -> bool:
        return self._used_bytes + self._reserved_bytes + size <= self._max_bytes

    def _object_path(self, key: str) -> Path:
        # Validating the key also keeps a caller from reaching outside the directory.
        if not _TIMEKEY.fullmatch(key):
            raise ValueError(f"not a spool backup key: {key!r}")
        return self._directory / f"{key}{_SUFFIX}"

    def _open_sync(self) -> int:
        self._directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        with os.scandir(self._directory) as entries:
            for entry in entries:
                if not entry.name.startswith(_TMP_PREFIX):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    age_s = now - entry.stat().st_mtime
                    if age_s >= _LEFTOVER_MIN_AGE_S:
                        os.unlink(entry.path)
                        logger.warning(
                            "backup.spool.leftover_removed path=%s age_s=%.0f "
                            "reason=unacknowledged_partial_write",
                            entry.path,
                            age_s,
                        )
        return self._scan_used_bytes()

    def _scan_used_bytes(self) -> int:
        total = 0
        with os.scandir(self._directory) as entries:
            for entry in entries:
                if _is_object_file(entry.name):
                    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                        total += entry.stat().st_size
        return total

    def _list_sync(self) -> list[str]:
        with os.scandir(self._directory) as entries:
            names = [e.name for e in entries if _is_object_file(e.name)]
        return sorted(name.removesuffix(_SUFFIX) for name in names)

    def _put_sync(self, key: str, records: Sequence[bytes]) -> None:
        tmp = self._directory / f"{_TMP_PREFIX}{key}"
        try:
            with tmp.open("xb") as file:
                file.write(encode_batch(records))
                file.flush()
                os.fsync(file.fileno())
            os.rename(tmp, self._directory / f"{key}{_SUFFIX}")
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory entry is; without this a crash could
        # lose an object that was already acknowledged.
        dir_fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _is_object_file(name: str) -> bool:
    return name.endswith(_SUFFIX) and _TIMEKEY.fullmatch(name.removesuffix(_SUFFIX)) is not None


def _unlink_returning_size(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


def _encode_with_md5(records: Sequence[bytes]) -> tuple[bytes, str]:
    body = encode_batch(records)
    digest = hashlib.md5(body, usedforsecurity=False).digest()
    return body, base64.b64encode(digest).decode("ascii")


class S3Store:
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
        self._keys = _TimeKeys(time_ns)
        self._state = _State.NEW
        self._exit_stack = contextlib.AsyncExitStack()
        self._client: Any = None  # aiobotocore clients are untyped; used only in this class

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the S3 client. Makes no request, so an unreachable endpoint shows up later.

        Raises:
            BackupUnavailable: botocore rejected the configuration.
            RuntimeError: The store was already opened.
        """
        if self._state is not _State.NEW:
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
        self._state = _State.OPEN
        logger.info(
            "backup.opened store=s3 endpoint=%s bucket=%s prefix=%s",
            self._endpoint_url or "aws",
            self._bucket,
            self._prefix,
        )

    async def close(self) -> None:
        """Close the client and its connections. Idempotent."""
        self._state = _State.CLOSED
        self._client = None
        await self._exit_stack.aclose()

    async def put(self, records: Sequence[bytes]) -> str:
        """Upload ``records`` as one object; return its key after S3 acknowledged the PUT.

        Raises:
            ValueError: ``records`` is empty.
            BackupUnavailable: The PUT failed (after botocore's retry).
        """
        _require_open(self._state, self.name)
        if not records:
            raise ValueError("a backup batch needs at least one record")
        body, content_md5 = await asyncio.to_thread(_encode_with_md5, records)
        key = f"{self._prefix}{self._keys.next_key()}{_SUFFIX}"
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
        _require_open(self._state, self.name)
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
        _require_open(self._state, self.name)
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
        _require_open(self._state, self.name)
        self._check_key(key)
        with self._translated("delete", key):
            await self._client.delete_object(Bucket=self._bucket, Key=key)
        logger.debug("backup.deleted store=s3 key=%s", key)

    def _owns(self, key: str) -> bool:
        rest = key.removeprefix(self._prefix)
        return key.startswith(self._prefix) and _is_object_file(rest)

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
