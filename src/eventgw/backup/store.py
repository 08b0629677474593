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
- :class:`~eventgw.core.backup_codec.CorruptBackup`: ``read`` found a damaged, unsigned or
  forged object (its ``kind`` says which). Keep it and alert; never delete it.

Reading is streamed and verified before use (`verified_batches`): the object is read once to
check its CRCs and, with a key, its HMAC, without keeping any record; only then is it read
again and handed out in batches. Memory is one batch plus one chunk, whatever the size.
"""

from __future__ import annotations

import enum
import logging
import re
import uuid
from typing import TYPE_CHECKING, Final, Protocol, Self

from eventgw.core.backup_codec import ObjectDecoder
from eventgw.core.errors import Backpressure, EventGwError, RetriableError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
    from types import TracebackType

    from eventgw.core.backup_codec import BackupAuth

__all__ = [
    "BackupFull",
    "BackupNotFound",
    "BackupStore",
    "BackupUnavailable",
]

logger = logging.getLogger(__name__)

SUFFIX = ".egwbak"
TMP_PREFIX = ".tmp-"
TIMEKEY = re.compile(r"[0-9]{20}-[0-9a-f]{12}")
# A `.tmp-` file younger than this may be another process's put in progress (the publisher and
# the failed-writes processor can share one spool directory), so open() leaves it alone.
LEFTOVER_MIN_AGE_S = 60.0

READ_CHUNK_BYTES: Final = 256 << 10
"""Bytes read from a store at a time while an object is verified or decoded."""

WHOLE_OBJECT_MAX_BYTES: Final = 1 << 20
"""An object up to this size (nearly all of them) is read once, verified and decoded in
memory; a larger one is streamed twice (verify, then use)."""

DEFAULT_BATCH_BYTES: Final = 4 << 20
"""Records handed out per batch by ``read``, by size (a single larger record goes alone)."""


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

    def read(
        self, key: str, *, batch_bytes: int = DEFAULT_BATCH_BYTES
    ) -> AsyncGenerator[list[bytes], None]:
        """The records of one object, in ``put`` order, in batches of about ``batch_bytes``.

        The whole object is verified (CRCs, and the HMAC when a key is configured) before
        the first batch is handed out: a forged, unsigned or damaged object raises
        ``CorruptBackup`` and hands out nothing. Raises ``BackupNotFound`` as well. Close
        the iterator (``contextlib.aclosing``) when not reading it to the end.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error."""
        ...

    async def close(self) -> None:
        """Release the store's resources; idempotent."""
        ...


class StoreState(enum.Enum):
    NEW = "new"  # constructed; open() not called yet
    OPEN = "open"  # serving calls
    CLOSED = "closed"  # close() called; every call except close() raises RuntimeError


class TimeKeys:
    """Generates ``<20-digit ns>-<12 hex>`` keys, strictly increasing within one instance."""

    def __init__(self, time_ns: Callable[[], int]) -> None:
        self._time_ns = time_ns
        self._last_ns = 0

    def next_key(self) -> str:
        # max(): two puts in the same nanosecond, or a wall clock stepped back, must still sort
        # in put order, because the processor replays the oldest batch first.
        self._last_ns = max(self._time_ns(), self._last_ns + 1)
        return f"{self._last_ns:020d}-{uuid.uuid4().hex[:12]}"


def require_open(state: StoreState, name: str) -> None:
    if state is not StoreState.OPEN:
        raise RuntimeError(f"backup {name} store is {state.value}, not open")


def is_object_file(name: str) -> bool:
    """True for a backup object's file or key name (``<timekey>.egwbak``)."""
    return name.endswith(SUFFIX) and TIMEKEY.fullmatch(name.removesuffix(SUFFIX)) is not None


class OpenCloseContext:
    """``async with store:`` opens the store and closes it, whatever happens inside."""

    async def open(self) -> None:
        """Open the store (each implementation says what that means)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the store."""
        raise NotImplementedError

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


class ChunkReader(Protocol):
    """One pass over an object's bytes, as a store reads them."""

    async def read_chunk(self) -> bytes:
        """The next bytes (at most `READ_CHUNK_BYTES`); ``b""`` at the end."""
        ...

    async def close(self) -> None:
        """Release what the pass holds (a connection); the pass may be unfinished."""
        ...


async def verified_batches(
    size: int,
    open_pass: Callable[[], Awaitable[ChunkReader]],
    auth: BackupAuth,
    batch_bytes: int,
) -> AsyncGenerator[list[bytes], None]:
    """The records of an object of ``size`` bytes, verified before the first is handed out.

    ``open_pass`` starts a read from the object's first byte; the store must make every pass
    read the same object (the spool reads one open file, S3 pins the ETag). An object up to
    `WHOLE_OBJECT_MAX_BYTES` is read once; a larger one twice: the first pass verifies it
    and keeps no record, the second hands out batches and verifies again, so the last batch
    comes only after the second pass's signature check.

    Raises:
        CorruptBackup: from the first pass, before any record is handed out (or, had the
            object changed between the passes, from the second).
    """
    if batch_bytes <= 0:
        raise ValueError(f"batch_bytes must be > 0, got {batch_bytes}")
    if size <= WHOLE_OBJECT_MAX_BYTES:
        records: list[bytes] = []
        await _one_pass(ObjectDecoder(size, auth), open_pass, records.extend)
        for start in range(0, len(records), _BATCH_RECORDS):
            yield records[start : start + _BATCH_RECORDS]
        return
    await _one_pass(ObjectDecoder(size, auth), open_pass, _drop)  # verify only
    decoder = ObjectDecoder(size, auth)
    source = await open_pass()
    try:
        batch: list[bytes] = []
        batch_size = 0
        while chunk := await source.read_chunk():
            for record in decoder.feed(chunk):
                batch.append(record)
                batch_size += len(record)
                if batch_size >= batch_bytes or len(batch) >= _BATCH_RECORDS:
                    yield batch
                    batch, batch_size = [], 0
        decoder.finish()
    finally:
        await source.close()
    if batch:
        yield batch


async def _one_pass(
    decoder: ObjectDecoder,
    open_pass: Callable[[], Awaitable[ChunkReader]],
    take: Callable[[list[bytes]], object],
) -> None:
    source = await open_pass()
    try:
        while chunk := await source.read_chunk():
            take(decoder.feed(chunk))
        decoder.finish()
    finally:
        await source.close()


def _drop(records: list[bytes]) -> None:
    """Records of the verifying pass: not kept."""


_BATCH_RECORDS: Final = 5000  # records per batch at most, however small they are
