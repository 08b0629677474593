"""The local spool directory: append-only, checksummed, fsynced backup objects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventgw.backup.store import (
    DEFAULT_BATCH_BYTES,
    LEFTOVER_MIN_AGE_S,
    READ_CHUNK_BYTES,
    SUFFIX,
    TIMEKEY,
    TMP_PREFIX,
    BackupFull,
    BackupNotFound,
    BackupUnavailable,
    OpenCloseContext,
    StoreState,
    TimeKeys,
    is_object_file,
    require_open,
    verified_batches,
)
from eventgw.core.backup_codec import NO_AUTH, encode_batch, encoded_size

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Sequence
    from pathlib import Path
    from typing import BinaryIO

    from eventgw.core.backup_codec import BackupAuth

logger = logging.getLogger(__name__)

FILE_MODE = 0o600
"""Spool objects (and their ``.tmp-`` forms): read and written by their owner only."""
DIRECTORY_MODE = 0o700
"""Directories the spool creates: listed and entered by their owner only."""


@dataclass(frozen=True, slots=True)
class SpoolStatistics:
    """Point-in-time view of a :class:`SpoolStore`'s size accounting."""

    used_bytes: int  # stored objects, as last counted (see SpoolStore)
    reserved_bytes: int  # batches being written right now
    max_bytes: int  # the configured bound


class SpoolStore(OpenCloseContext):
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

    Permissions: the spool holds other tenants' events, so it is private to the user running
    eventgw: files are created ``0600`` and the directories ``open()`` creates ``0700``
    (whatever the umask grants). A directory that already exists keeps its mode: it is the
    operator's (a Kubernetes emptyDir, a mounted volume), and the failed-writes processor may
    share it.

    Authentication: with ``auth.key`` every object is signed (HMAC-SHA256) and ``read`` hands
    out only objects signed with a configured key. Anyone who can write the directory could
    otherwise put events into the lanes through it; without a key, only CRCs are checked.
    """

    name = "spool"

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        time_ns: Callable[[], int] = time.time_ns,
        auth: BackupAuth = NO_AUTH,
    ) -> None:
        """Create a store over ``directory`` (created on ``open()`` if missing).

        Args:
            directory: The spool directory; this store owns the files matching its patterns.
            max_bytes: Bound on the total size of stored objects; must be positive.
            time_ns: Wall clock in nanoseconds for the keys (injectable for tests).
            auth: the key objects are signed with, and which objects are trusted.

        Raises:
            ValueError: ``max_bytes`` is not positive.
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._directory = directory
        self._max_bytes = max_bytes
        self._auth = auth
        self._keys = TimeKeys(time_ns)
        self._state = StoreState.NEW
        self._used_bytes = 0
        self._reserved_bytes = 0
        self._rescan_lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the directory if needed, remove stale ``.tmp-`` leftovers and count usage.

        Raises:
            BackupUnavailable: The directory could not be created or read.
            RuntimeError: The store was already opened.
        """
        if self._state is not StoreState.NEW:
            raise RuntimeError(f"backup spool store is {self._state.value}, cannot open")
        try:
            self._used_bytes = await asyncio.to_thread(self._open_sync)
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="open", key=None, reason=repr(exc)
            ) from exc
        self._state = StoreState.OPEN
        logger.info(
            "backup.opened store=spool directory=%s used_bytes=%d max_bytes=%d",
            self._directory,
            self._used_bytes,
            self._max_bytes,
        )

    async def close(self) -> None:
        """Mark the store closed; there is nothing to release. Idempotent."""
        self._state = StoreState.CLOSED

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
        require_open(self._state, self.name)
        if not records:
            raise ValueError("a backup batch needs at least one record")
        size = encoded_size(records, signed=self._auth.key is not None)
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
        require_open(self._state, self.name)
        try:
            return await asyncio.to_thread(self._list_sync)
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="list", key=None, reason=repr(exc)
            ) from exc

    async def read(
        self, key: str, *, batch_bytes: int = DEFAULT_BATCH_BYTES
    ) -> AsyncGenerator[list[bytes], None]:
        """Verify one object, then hand out its records in batches (`verified_batches`).

        Both passes read one open file, so a file renamed over the object meanwhile is not
        read. Memory: one batch and one chunk.

        Raises:
            ValueError: ``key`` is not a key this store produces.
            BackupNotFound: No such object.
            CorruptBackup: The file is damaged, unsigned or forged (before any record).
            BackupUnavailable: Any other ``OSError``.
        """
        require_open(self._state, self.name)
        path = self._object_path(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise BackupNotFound(store=self.name, key=key) from exc
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="get", key=key, reason=repr(exc)
            ) from exc
        try:
            size = (await asyncio.to_thread(os.fstat, file.fileno())).st_size

            async def open_pass() -> _FileChunks:
                await asyncio.to_thread(file.seek, 0)
                return _FileChunks(file)

            async for batch in verified_batches(size, open_pass, self._auth, batch_bytes):
                yield batch
        except OSError as exc:
            raise BackupUnavailable(
                store=self.name, operation="get", key=key, reason=repr(exc)
            ) from exc
        finally:
            file.close()  # a read-only file: nothing to flush

    async def get(self, key: str) -> list[bytes]:
        """Every record of one object (verified, as `read`); holds them all in memory.

        Raises what `read` raises.
        """
        return [record async for batch in self.read(key) for record in batch]

    async def delete(self, key: str) -> None:
        """Delete one object; a missing object is not an error.

        The directory is not fsynced: a delete lost in a crash only replays the batch again.

        Raises:
            ValueError: ``key`` is not a key this store produces.
            BackupUnavailable: An ``OSError`` other than "not found".
        """
        require_open(self._state, self.name)
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
        if not TIMEKEY.fullmatch(key):
            raise ValueError(f"not a spool backup key: {key!r}")
        return self._directory / f"{key}{SUFFIX}"

    def _open_sync(self) -> int:
        _make_private_directory(self._directory)
        now = time.time()
        with os.scandir(self._directory) as entries:
            for entry in entries:
                if not entry.name.startswith(TMP_PREFIX):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    age_s = now - entry.stat().st_mtime
                    if age_s >= LEFTOVER_MIN_AGE_S:
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
                if is_object_file(entry.name):
                    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                        total += entry.stat().st_size
        return total

    def _list_sync(self) -> list[str]:
        with os.scandir(self._directory) as entries:
            names = [e.name for e in entries if is_object_file(e.name)]
        return sorted(name.removesuffix(SUFFIX) for name in names)

    def _put_sync(self, key: str, records: Sequence[bytes]) -> None:
        tmp = self._directory / f"{TMP_PREFIX}{key}"
        try:
            # O_EXCL as before ("xb"); mode 0600 from the start, never readable by others.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as file:
                file.write(encode_batch(records, self._auth.key))
                file.flush()
                os.fsync(file.fileno())
            os.rename(tmp, self._directory / f"{key}{SUFFIX}")
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


def _make_private_directory(directory: Path) -> None:
    """Create ``directory`` and its missing parents ``0700``; leave existing ones alone."""
    missing: list[Path] = []
    level = directory
    while not level.is_dir():
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    for level in reversed(missing):
        # Another process (the failed-writes processor) may create it at the same moment.
        with contextlib.suppress(FileExistsError):
            level.mkdir(mode=DIRECTORY_MODE)


def _unlink_returning_size(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


class _FileChunks:
    """One pass over an open file, a chunk per worker-thread read."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    async def read_chunk(self) -> bytes:
        return await asyncio.to_thread(self._file.read, READ_CHUNK_BYTES)

    async def close(self) -> None:
        """Nothing: the store closes the file after the last pass."""
